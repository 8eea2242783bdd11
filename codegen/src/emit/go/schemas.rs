//! Emits `schemas.go`: every published version of every event's schema, which the
//! runtime's `wire.Registry` parses, fingerprints and checks against the fingerprints
//! written here.

use serde_json::Value;

use super::names;
use super::text::quoted;
use crate::emit::avro::EventSchema;

/// `schema` without what does not change the encoding and would only lengthen the file:
/// docs and the generated marker (the canonical form, hence the fingerprint, drops them).
fn lean(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| *k != "doc" && *k != "@generated").map(|(k, v)| (k.clone(), lean(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(lean).collect()),
        other => other.clone(),
    }
}

pub(super) fn declarations(schemas: &[EventSchema]) -> String {
    let mut rows = String::new();
    for s in schemas {
        let last = s.versions.last().map(|v| v.version);
        for v in &s.versions {
            rows.push_str(&format!(
                "\t{{Event: {}, Version: {}, Fingerprint: {}, Written: {}, JSON: {}}},\n",
                names::event_type(&s.event),
                v.version,
                quoted(&v.fingerprint.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                Some(v.version) == last,
                quoted(&lean(&v.json).to_string()),
            ));
        }
    }
    format!(
        "\n// schemas is every published version of every event's schema (`.avro/<event>/v<N>.avsc`),\n\
         // oldest first; each event writes its last.\n\
         var schemas = []wire.Schema{{\n{rows}}}\n\
         \n// registry is built once, on first use; it fails only if this file and the runtime's\n\
         // wire package disagree on a fingerprint.\n\
         var registry = wire.Built(sync.OnceValues(func() (*wire.Registry, error) {{ return wire.NewRegistry(schemas) }}))\n\
         \n// Schemas is every published version of every event's schema, oldest first per event.\n\
         func Schemas() []wire.Schema {{ return slices.Clone(schemas) }}\n"
    )
}
