//! Avro schemas: one per event. Each schema is the whole message: the envelope fields
//! (event id, saga key, occurred-at, trace context) and a `payload` record with the event's
//! fields. The wire format is Avro single-object encoding of that record.

use apache_avro::Schema;
use serde_json::{Map, Value, json};

use crate::history::{History, Published};
use crate::ir::{self, CONTEXT_TYPE, Field, Saga, Type, TypeKind, pascal};

/// Marks the file as generated; Avro ignores unknown attributes and the parsing canonical
/// form (hence the fingerprint) drops them.
const GENERATED: &str = "by `cargo xtask gen`; do not edit";

/// The schema of one event, ready to write and embed.
pub struct EventSchema {
    pub event: String,
    /// CRC-64-AVRO (Rabin) fingerprint of the parsing canonical form, as on the wire.
    pub fingerprint: [u8; 8],
    /// Every published version, oldest first; the last one is this schema.
    pub versions: Vec<Published>,
}

#[derive(Debug, thiserror::Error)]
#[error("generated Avro schema for `{event}` is invalid: {source}")]
pub struct SchemaError {
    event: String,
    source: InvalidSchema,
}

/// What made a generated schema invalid.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSchema {
    #[error(transparent)]
    Avro(#[from] apache_avro::Error),
    #[error(transparent)]
    Canonical(#[from] saga_wire::canonical::CanonicalError),
}

/// The schema of every event of `saga`, each published in `history` (a new
/// version appended where the schema changed).
pub fn schemas(saga: &Saga, history: &mut History) -> Result<Vec<EventSchema>, SchemaError> {
    let mut out = Vec::new();
    for e in &saga.events {
        let json = event_schema(saga, e);
        let invalid = |source: InvalidSchema| SchemaError { event: e.name.clone(), source };
        // Parsed to prove it valid; fingerprinted by the specification's canonical form.
        Schema::parse(&json).map_err(|e| invalid(e.into()))?;
        let fingerprint = saga_wire::canonical::fingerprint(&json).map_err(|e| invalid(e.into()))?;
        let versions = history.publish(&e.name, json, fingerprint).to_vec();
        out.push(EventSchema { event: e.name.clone(), fingerprint, versions });
    }
    Ok(out)
}

/// The schema of event `e` as JSON: the envelope and its payload record.
pub fn event_schema(saga: &Saga, e: &ir::Event) -> Value {
    let name = pascal(&e.name);
    let uuid = json!({ "type": "string", "logicalType": "uuid" });
    let mut defined = Vec::new();
    // The context comes before the payload, so a named type both use is defined in it.
    let context = saga.context.as_ref().map(|_| {
        let record = ty(saga, &Type::Record(CONTEXT_TYPE.to_string()), &mut defined);
        json!({ "name": "context", "type": ["null", record], "default": null,
                "doc": "The saga context: what the command that started the saga said, carried by every reply (`context:` in the spec); none on an event a timeout emits." })
    });
    let payload_fields: Vec<Value> = e.fields.iter().map(|f| field(saga, f, &mut defined)).collect();
    let mut schema = json!({
        "@generated": GENERATED,
        "type": "record",
        "name": name,
        "namespace": saga.namespace,
        "doc": doc_or(&e.doc, &format!("Event `{}`.", e.name)),
        "fields": [
            { "name": "event_id", "type": uuid, "doc": "Unique id of this event; consumers deduplicate on it." },
            { "name": saga.key, "type": uuid, "doc": "Saga key; also the Kafka partition key, so one saga's events stay ordered." },
            { "name": "occurred_at", "type": { "type": "long", "logicalType": "timestamp-micros" }, "doc": "When the event happened (UTC)." },
            { "name": "traceparent", "type": ["null", "string"], "default": null, "doc": "W3C trace context `traceparent`." },
            { "name": "tracestate", "type": ["null", "string"], "default": null, "doc": "W3C trace context `tracestate`." },
            { "name": "deadline", "type": ["null", { "type": "long", "logicalType": "timestamp-micros" }], "default": null,
              "doc": "When the status owner gives up on the saga unless it has the answer to this event (UTC); none when no answer is awaited by a deadline. A participant may shed a request whose deadline has passed." },
            { "name": "payload", "type": {
                "type": "record",
                "name": format!("{name}Payload"),
                "doc": format!("Fields of `{}`.", e.name),
                "fields": payload_fields,
            } },
        ],
    });
    if let (Some(context), Some(fields)) = (context, schema["fields"].as_array_mut()) {
        let payload = fields.len() - 1;
        fields.insert(payload, context);
    }
    schema
}

fn doc_or(doc: &Option<String>, fallback: &str) -> String {
    doc.clone().unwrap_or_else(|| fallback.to_string())
}

fn field(saga: &Saga, f: &Field, defined: &mut Vec<String>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(f.name));
    m.insert("type".into(), ty(saga, &f.ty, defined));
    if let Some(d) = &f.doc {
        m.insert("doc".into(), json!(d));
    } else if f.ty == Type::Money {
        m.insert("doc".into(), json!("Money in integer minor units."));
    }
    if let Some(d) = &f.default {
        m.insert("default".into(), d.clone());
    } else if matches!(f.ty, Type::Optional(_)) {
        m.insert("default".into(), Value::Null);
    }
    Value::Object(m)
}

/// A named type is defined in full where it first appears and referenced by name after, as
/// Avro requires.
fn ty(saga: &Saga, t: &Type, defined: &mut Vec<String>) -> Value {
    match t {
        Type::Uuid => json!({ "type": "string", "logicalType": "uuid" }),
        Type::String => json!("string"),
        Type::Bool => json!("boolean"),
        Type::Int => json!("int"),
        Type::Long | Type::Money => json!("long"),
        Type::Double => json!("double"),
        Type::Timestamp => json!({ "type": "long", "logicalType": "timestamp-micros" }),
        Type::Array(inner) => json!({ "type": "array", "items": ty(saga, inner, defined) }),
        Type::Optional(inner) => json!(["null", ty(saga, inner, defined)]),
        Type::Record(n) | Type::Enum(n) => {
            if defined.contains(n) {
                return json!(n);
            }
            defined.push(n.clone());
            let Some(def) = saga.types.iter().find(|d| d.name == *n) else { return json!(n) };
            let doc = doc_or(&def.doc, &format!("Type `{n}`."));
            match &def.kind {
                TypeKind::Enum(symbols) => json!({ "type": "enum", "name": n, "doc": doc, "symbols": symbols }),
                TypeKind::Record(fields) => {
                    let fs: Vec<Value> = fields.iter().map(|f| field(saga, f, defined)).collect();
                    json!({ "type": "record", "name": n, "doc": doc, "fields": fs })
                }
            }
        }
    }
}

/// Pretty JSON with Avro's conventional key order (`type`, `name`, ... before `fields`), so a
/// schema reads top-down; serde_json's map would sort keys alphabetically.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write_pretty(value, 0, &mut out);
    out.push('\n');
    out
}

fn key_rank(key: &str, is_field: bool) -> usize {
    const TYPE_ORDER: &[&str] =
        &["@generated", "type", "name", "namespace", "doc", "logicalType", "symbols", "items", "default", "fields"];
    const FIELD_ORDER: &[&str] = &["name", "type", "doc", "default"];
    let order = if is_field { FIELD_ORDER } else { TYPE_ORDER };
    order.iter().position(|k| *k == key).unwrap_or(order.len())
}

/// A record field (`name` + `type`), as opposed to a type definition.
fn is_field(map: &Map<String, Value>) -> bool {
    let kind = map.get("type").and_then(Value::as_str);
    map.contains_key("name")
        && !map.contains_key("logicalType")
        && !matches!(kind, Some("record" | "enum" | "array" | "map" | "fixed"))
}

fn write_pretty(value: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            let field = is_field(map);
            entries.sort_by(|a, b| (key_rank(a.0, field), a.0).cmp(&(key_rank(b.0, field), b.0)));
            out.push_str("{\n");
            for (i, (k, v)) in entries.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push_str(": ");
                write_pretty(v, indent + 1, out);
                if i + 1 < entries.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        // Short arrays of scalars (unions, enum symbols) stay on one line.
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let parts: Vec<String> = items.iter().map(Value::to_string).collect();
            out.push('[');
            out.push_str(&parts.join(", "));
            out.push(']');
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                write_pretty(v, indent + 1, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
