//! Emits `samples.go`: a sample of every event, for scenarios of a service's handlers
//! (`runtime-go/scenario`), as the Rust crate's `Sample` impls give them: every field
//! filled, the saga context on the events that carry it.

use super::names;
use super::types::go_type;
use crate::ir::{Field, Saga, Type, TypeKind};

/// A Go expression of a sample value of `t`.
fn sample(saga: &Saga, t: &Type) -> String {
    match t {
        Type::Uuid => "uuid.New()".into(),
        Type::String => "\"sample\"".into(),
        Type::Bool => "false".into(),
        Type::Int | Type::Long | Type::Money | Type::Double => "1".into(),
        Type::Timestamp => "time.Unix(0, 0).UTC()".into(),
        Type::Record(n) => format!("sample{}()", names::exported(n)),
        Type::Enum(n) => match saga.types.iter().find(|d| d.name == *n).map(|d| &d.kind) {
            Some(TypeKind::Enum(symbols)) if !symbols.is_empty() => names::symbol(n, &symbols[0]),
            _ => format!("{}(\"\")", names::exported(n)),
        },
        Type::Array(inner) => format!("{}{{{}}}", go_type(t), sample(saga, inner)),
        // Set, as the Rust samples set it: the handler sees the value, not its absence.
        Type::Optional(inner) => format!("new({})", sample(saga, inner)),
    }
}

fn literal(saga: &Saga, name: &str, fields: &[Field]) -> String {
    let values: Vec<String> =
        fields.iter().map(|f| format!("{}: {}", names::exported(&f.name), sample(saga, &f.ty))).collect();
    format!("{name}{{{}}}", values.join(", "))
}

pub(super) fn declarations(saga: &Saga) -> String {
    let mut out = String::new();
    for t in &saga.types {
        if let TypeKind::Record(fields) = &t.kind {
            let name = names::exported(&t.name);
            out.push_str(&format!("\nfunc sample{name}() {name} {{ return {} }}\n", literal(saga, &name, fields)));
        }
    }
    let carriers = saga.context_carriers();
    let cases: String = saga
        .events
        .iter()
        .map(|e| {
            let payload = literal(saga, &names::exported(&e.name), &e.fields);
            let context =
                if carriers.contains(e.name.as_str()) { "\t\te.Context = new(sampleSagaContext())\n" } else { "" };
            format!(
                "\tcase {}:\n\t\te := New(key, {payload})\n{context}\t\treturn e, nil\n",
                names::event_type(&e.name)
            )
        })
        .collect();
    out.push_str(&format!(
        "\n// Sample is event `event` of saga key with a sample payload (every field set), and the\n\
         // sample saga context on the events that carry one: for scenarios of a service's\n\
         // handlers (runtime-go/scenario).\n\
         func Sample(event string, key uuid.UUID) (Message, error) {{\n\
         \tswitch event {{\n{cases}\t}}\n\
         \treturn nil, fmt.Errorf(\"no event %q in the saga\", event)\n}}\n"
    ));
    out
}
