//! Messages as an older producer wrote them, for tests and tools (a replay of
//! old traffic, a rolling-deploy rehearsal); never for production traffic.

use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::Value as Json;

use crate::{EncodeError, SINGLE_OBJECT_MARKER, SchemaVersion};

/// The single-object encoding of `value` (a value of a newer schema of the
/// event) as a producer on `version` would have written it: its fingerprint
/// and a datum of its schema. Fields `version` lacks are dropped; fields only
/// it has get their default or, lacking one, a zero value of their type.
pub fn encoded_with(version: &SchemaVersion, value: Value) -> Result<Vec<u8>, EncodeError> {
    let failed = |source| EncodeError { event_type: "(an older schema version)", source };
    let json: Json = serde_json::from_str(version.json)
        .map_err(|e| failed(apache_avro::Error::new(apache_avro::error::Details::ParseSchemaJson(e))))?;
    let schema = Schema::parse(&json).map_err(failed)?;
    let datum = apache_avro::to_avro_datum(&schema, as_written_by(value, &json)).map_err(failed)?;
    let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(&version.fingerprint);
    bytes.extend(datum);
    Ok(bytes)
}

/// `value` in the shape of the older `schema` (see [`encoded_with`]).
fn as_written_by(value: Value, schema: &Json) -> Value {
    match (value, schema.get("type").and_then(Json::as_str)) {
        (Value::Record(mut fields), Some("record")) => {
            let declared = schema["fields"].as_array().cloned().unwrap_or_default();
            let shaped = declared
                .iter()
                .map(|f| {
                    let name = f["name"].as_str().unwrap_or_default().to_string();
                    let v = match fields.iter().position(|(n, _)| *n == name) {
                        Some(i) => as_written_by(fields.swap_remove(i).1, &f["type"]),
                        None => f.get("default").map(|d| default_of(d, &f["type"])).unwrap_or_else(|| zero(&f["type"])),
                    };
                    (name, v)
                })
                .collect();
            Value::Record(shaped)
        }
        (Value::Array(items), Some("array")) => {
            Value::Array(items.into_iter().map(|i| as_written_by(i, &schema["items"])).collect())
        }
        (other, _) => other,
    }
}

/// A field's default as a value: JSON null for a `["null", ...]` union, else its zero.
fn default_of(default: &Json, ty: &Json) -> Value {
    match (default, ty) {
        (Json::Null, Json::Array(_)) => Value::Union(0, Box::new(Value::Null)),
        (Json::String(s), _) if ty == "string" => Value::String(s.clone()),
        _ => zero(ty),
    }
}

/// A zero value of an Avro type.
fn zero(ty: &Json) -> Value {
    match ty {
        Json::String(t) => match t.as_str() {
            "int" => Value::Int(0),
            "long" => Value::Long(0),
            "float" => Value::Float(0.0),
            "double" => Value::Double(0.0),
            "boolean" => Value::Boolean(false),
            "bytes" => Value::Bytes(Vec::new()),
            "null" => Value::Null,
            _ => Value::String(String::new()),
        },
        Json::Array(variants) => Value::Union(0, Box::new(variants.first().map(zero).unwrap_or(Value::Null))),
        Json::Object(o) => match o.get("type").and_then(Json::as_str) {
            Some("array") => Value::Array(Vec::new()),
            Some("record") => as_written_by(Value::Record(Vec::new()), ty),
            Some("enum") => {
                let first = o.get("symbols").and_then(|s| s.get(0)).and_then(Json::as_str).unwrap_or_default();
                Value::Enum(0, first.to_string())
            }
            _ => zero(&o["type"]),
        },
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_producer_drops_newer_fields_and_fills_its_own() {
        let json = r#"{"type":"record","name":"E","fields":[
            {"name":"a","type":"long"},
            {"name":"old","type":"int"},
            {"name":"note","type":"string","default":"n/a"}]}"#;
        let fingerprint = crate::canonical::fingerprint(&serde_json::from_str(json).expect("JSON")).expect("canonical");
        let version = SchemaVersion { version: 1, fingerprint, json };
        let value = Value::Record(vec![("a".into(), Value::Long(5)), ("new".into(), Value::String("x".into()))]);
        let bytes = encoded_with(&version, value).expect("encodes");
        assert_eq!(crate::fingerprint_of(&bytes).ok(), Some(fingerprint));
        let schema = Schema::parse_str(json).expect("parses");
        let back = apache_avro::from_avro_datum(&schema, &mut &bytes[crate::HEADER_LEN..], None).expect("decodes");
        assert_eq!(
            back,
            Value::Record(vec![
                ("a".into(), Value::Long(5)),
                ("old".into(), Value::Int(0)),
                ("note".into(), Value::String("n/a".into())),
            ])
        );
    }
}
