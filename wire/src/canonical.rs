//! The Parsing Canonical Form of an Avro schema, as the Avro specification
//! defines it, and its CRC-64-AVRO fingerprint: what every other Avro
//! implementation computes, so that a consumer in any language finds the
//! writer schema of a message by the fingerprint in its single-object header.
//!
//! Written here rather than taken from `apache-avro`: its `canonical_form`
//! keeps a logical type's primitive as `{"type":"string"}` where the
//! specification's PRIMITIVES rule asks for `"string"`, so its fingerprints
//! of schemas with logical types matched no other implementation.
//!
//! The rules, in the specification's words and order: PRIMITIVES (a
//! primitive in its simple form), FULLNAMES (short names replaced by full
//! names), STRIP (only `type`, `name`, `fields`, `symbols`, `items`,
//! `values`, `size` kept), ORDER (attributes in that order), STRINGS (no
//! escapes but the ones JSON needs), INTEGERS (no quotes or leading zeros),
//! WHITESPACE (none outside strings).

use std::collections::HashSet;

use apache_avro::rabin::Rabin;
use digest::Digest;
use serde_json::Value;

/// Why a schema has no canonical form: it is not a valid Avro schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("`{0}` is neither a primitive type nor a named type defined before it")]
    UnknownType(String),
    #[error("a {0} schema needs a string `name`")]
    MissingName(&'static str),
    #[error("`{0}` has no valid `{1}`")]
    Malformed(String, &'static str),
    #[error("a schema is a string, an object or an array (a union), not {0}")]
    NotASchema(String),
}

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The Parsing Canonical Form of `schema` (its JSON).
pub fn canonical_form(schema: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    Canonical { defined: HashSet::new() }.write(schema, "", &mut out)?;
    Ok(out)
}

/// The CRC-64-AVRO (Rabin) fingerprint of `schema`'s canonical form, in the
/// little-endian byte order of the single-object encoding header.
pub fn fingerprint(schema: &Value) -> Result<[u8; 8], CanonicalError> {
    let canonical = canonical_form(schema)?;
    let mut rabin = Rabin::new();
    rabin.update(canonical.as_bytes());
    let digest = rabin.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    Ok(bytes)
}

/// Full names of the named types defined so far (FULLNAMES).
struct Canonical {
    defined: HashSet<String>,
}

/// `name` in `namespace`, unless it is already full.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() { name.to_owned() } else { format!("{namespace}.{name}") }
}

/// The namespace a full name gives to the names defined inside it.
fn namespace_of(full: &str) -> &str {
    full.rsplit_once('.').map_or("", |(namespace, _)| namespace)
}

/// A JSON string literal: only `"`, `\` and control characters escaped (STRINGS).
fn string(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

impl Canonical {
    fn write(&mut self, schema: &Value, namespace: &str, out: &mut String) -> Result<(), CanonicalError> {
        match schema {
            Value::String(name) => self.reference(name, namespace, out),
            Value::Array(branches) => {
                out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(branch, namespace, out)?;
                }
                out.push(']');
                Ok(())
            }
            Value::Object(object) => match object.get("type") {
                Some(Value::String(kind)) => self.object(kind, object, namespace, out),
                // `{"type": {...}}` or `{"type": [...]}`: the attribute holds the schema.
                Some(inner @ (Value::Object(_) | Value::Array(_))) => self.write(inner, namespace, out),
                _ => Err(CanonicalError::Malformed(Value::Object(object.clone()).to_string(), "type")),
            },
            other => Err(CanonicalError::NotASchema(other.to_string())),
        }
    }

    /// A type named by a string: a primitive, or a named type defined before.
    fn reference(&mut self, name: &str, namespace: &str, out: &mut String) -> Result<(), CanonicalError> {
        if PRIMITIVES.contains(&name) {
            string(out, name);
            return Ok(());
        }
        let full = full_name(name, namespace);
        // A name with no namespace of its own may also be one defined in the null namespace.
        let found = [full.as_str(), name].into_iter().find(|n| self.defined.contains(*n));
        match found {
            Some(found) => {
                string(out, found);
                Ok(())
            }
            None => Err(CanonicalError::UnknownType(name.to_owned())),
        }
    }

    fn object(
        &mut self,
        kind: &str,
        object: &serde_json::Map<String, Value>,
        namespace: &str,
        out: &mut String,
    ) -> Result<(), CanonicalError> {
        // PRIMITIVES, and STRIP of whatever else rides along (a logical type, a doc).
        if PRIMITIVES.contains(&kind) {
            string(out, kind);
            return Ok(());
        }
        match kind {
            "record" => self.named("record", object, namespace, out),
            "error" => self.named("error", object, namespace, out),
            "enum" => self.named("enum", object, namespace, out),
            "fixed" => self.named("fixed", object, namespace, out),
            "array" => {
                out.push_str(r#"{"type":"array","items":"#);
                self.write(object.get("items").ok_or_else(|| malformed(object, "items"))?, namespace, out)?;
                out.push('}');
                Ok(())
            }
            "map" => {
                out.push_str(r#"{"type":"map","values":"#);
                self.write(object.get("values").ok_or_else(|| malformed(object, "values"))?, namespace, out)?;
                out.push('}');
                Ok(())
            }
            // `{"type": "SomeRecord"}`: a reference in object form.
            name => self.reference(name, namespace, out),
        }
    }

    fn named(
        &mut self,
        kind: &'static str,
        object: &serde_json::Map<String, Value>,
        namespace: &str,
        out: &mut String,
    ) -> Result<(), CanonicalError> {
        let name = object.get("name").and_then(Value::as_str).ok_or(CanonicalError::MissingName(kind))?;
        let own_namespace = object.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
        let full = full_name(name, own_namespace);
        self.defined.insert(full.clone());
        // ORDER: name, type, then fields / symbols / size.
        out.push_str(r#"{"name":"#);
        string(out, &full);
        out.push_str(r#","type":"#);
        string(out, kind);
        match kind {
            "enum" => {
                let symbols =
                    object.get("symbols").and_then(Value::as_array).ok_or_else(|| malformed(object, "symbols"))?;
                out.push_str(r#","symbols":["#);
                for (i, symbol) in symbols.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, symbol.as_str().ok_or_else(|| malformed(object, "symbols"))?);
                }
                out.push(']');
            }
            "fixed" => {
                // INTEGERS: a size given as a string or with leading zeros is written plain.
                let size = match object.get("size") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse::<u64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| malformed(object, "size"))?;
                out.push_str(&format!(r#","size":{size}"#));
            }
            _ => {
                let fields =
                    object.get("fields").and_then(Value::as_array).ok_or_else(|| malformed(object, "fields"))?;
                let inner = namespace_of(&full).to_owned();
                out.push_str(r#","fields":["#);
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let field_name =
                        field.get("name").and_then(Value::as_str).ok_or(CanonicalError::MissingName("field"))?;
                    out.push_str(r#"{"name":"#);
                    string(out, field_name);
                    out.push_str(r#","type":"#);
                    self.write(field.get("type").ok_or_else(|| malformed(object, "fields"))?, &inner, out)?;
                    out.push('}');
                }
                out.push(']');
            }
        }
        out.push('}');
        Ok(())
    }
}

fn malformed(object: &serde_json::Map<String, Value>, attribute: &'static str) -> CanonicalError {
    let name = object.get("name").and_then(Value::as_str).unwrap_or("a schema");
    CanonicalError::Malformed(name.to_owned(), attribute)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canonical(schema: Value) -> String {
        canonical_form(&schema).expect("a valid schema")
    }

    #[test]
    fn primitives_take_their_simple_form_even_with_a_logical_type() {
        assert_eq!(canonical(json!("int")), r#""int""#);
        assert_eq!(canonical(json!({ "type": "long" })), r#""long""#);
        assert_eq!(canonical(json!({ "type": "string", "logicalType": "uuid" })), r#""string""#);
        assert_eq!(canonical(json!({ "type": "long", "logicalType": "timestamp-micros" })), r#""long""#);
    }

    #[test]
    fn named_types_get_full_names_and_only_parsing_attributes_in_order() {
        let schema = json!({
            "doc": "dropped", "fields": [
                { "type": { "type": "enum", "symbols": ["A", "B"], "name": "Kind", "doc": "dropped" }, "name": "kind", "default": "A" },
                { "name": "again", "type": "Kind" },
                { "name": "id", "type": { "size": "016", "type": "fixed", "name": "other.Id" } },
                { "name": "same_id", "type": "other.Id", "aliases": ["x"] },
            ],
            "name": "Outer", "namespace": "org.example", "type": "record",
        });
        assert_eq!(
            canonical(schema),
            concat!(
                r#"{"name":"org.example.Outer","type":"record","fields":["#,
                r#"{"name":"kind","type":{"name":"org.example.Kind","type":"enum","symbols":["A","B"]}},"#,
                r#"{"name":"again","type":"org.example.Kind"},"#,
                r#"{"name":"id","type":{"name":"other.Id","type":"fixed","size":16}},"#,
                r#"{"name":"same_id","type":"other.Id"}]}"#,
            )
        );
    }

    #[test]
    fn nested_records_arrays_maps_and_unions() {
        let schema = json!({
            "type": "record", "name": "a.b.Outer", "fields": [
                { "name": "inner", "type": { "type": "record", "name": "Inner", "fields": [
                    { "name": "tags", "type": { "type": "array", "items": "string" } },
                ] } },
                { "name": "by_key", "type": { "type": "map", "values": ["null", "Inner"] }, "default": {} },
                { "name": "maybe", "type": ["null", { "type": "long", "logicalType": "timestamp-micros" }], "default": null },
            ],
        });
        assert_eq!(
            canonical(schema),
            concat!(
                r#"{"name":"a.b.Outer","type":"record","fields":["#,
                r#"{"name":"inner","type":{"name":"a.b.Inner","type":"record","fields":[{"name":"tags","type":{"type":"array","items":"string"}}]}},"#,
                r#"{"name":"by_key","type":{"type":"map","values":["null","a.b.Inner"]}},"#,
                r#"{"name":"maybe","type":["null","long"]}]}"#,
            )
        );
    }

    #[test]
    fn an_unknown_type_or_a_nameless_record_is_an_error() {
        assert_eq!(canonical_form(&json!("Nowhere")), Err(CanonicalError::UnknownType("Nowhere".to_owned())));
        assert_eq!(
            canonical_form(&json!({ "type": "record", "fields": [] })),
            Err(CanonicalError::MissingName("record"))
        );
        assert!(canonical_form(&json!(42)).is_err());
    }

    /// The specification's own example: the fingerprint of `"int"`'s canonical form.
    #[test]
    fn the_fingerprint_is_crc_64_avro_of_the_canonical_form_little_endian() {
        let empty = fingerprint(&json!("null")).expect("fingerprint");
        assert_eq!(empty.len(), 8);
        assert_ne!(fingerprint(&json!("int")).expect("int"), empty);
        // Attributes outside the canonical form never change the fingerprint.
        assert_eq!(
            fingerprint(&json!({ "type": "string", "logicalType": "uuid" })).expect("uuid"),
            fingerprint(&json!("string")).expect("string")
        );
    }
}
