//! Emits `types.go`: the spec's named types (records and enums) and the Go type of every
//! spec type.

use super::names;
use super::text::{Line, aligned, comment, comment_lines, quoted};
use crate::ir::{Field, Saga, Type, TypeKind};

/// The Go type of a spec type.
pub(super) fn go_type(t: &Type) -> String {
    match t {
        Type::Uuid => "uuid.UUID".into(),
        Type::String => "string".into(),
        Type::Bool => "bool".into(),
        Type::Int => "int32".into(),
        Type::Long | Type::Money => "int64".into(),
        Type::Double => "float64".into(),
        Type::Timestamp => "time.Time".into(),
        Type::Record(n) | Type::Enum(n) => names::exported(n),
        Type::Array(inner) => format!("[]{}", go_type(inner)),
        Type::Optional(inner) => format!("*{}", go_type(inner)),
    }
}

/// Whether a Go type of `t` needs package `uuid` or `time`.
pub(super) fn uses(t: &Type, pkg: &str) -> bool {
    match t {
        Type::Uuid => pkg == "uuid",
        Type::Timestamp => pkg == "time",
        Type::Array(inner) | Type::Optional(inner) => uses(inner, pkg),
        _ => false,
    }
}

/// The field rows of a record whose Avro fields are `fields`, each with its doc.
pub(super) fn field_lines(fields: &[Field]) -> Vec<Line> {
    let mut lines = Vec::new();
    for f in fields {
        let doc = match (&f.doc, &f.ty) {
            (Some(d), _) => Some(d.as_str()),
            (None, Type::Money) => Some("Money in integer minor units."),
            _ => None,
        };
        lines.extend(doc.map(comment_lines).unwrap_or_default());
        lines.push(Line::Row(vec![names::exported(&f.name), go_type(&f.ty), format!("`avro:\"{}\"`", f.name)]));
    }
    lines
}

/// A struct declaration of `fields`; `struct{}` when there are none.
pub(super) fn struct_decl(name: &str, fields: &[Field]) -> String {
    if fields.is_empty() {
        return format!("type {name} struct{{}}\n");
    }
    format!("type {name} struct {{\n{}}}\n", aligned(&field_lines(fields)))
}

/// The file's declarations (records, enums and their symbols), without header or imports.
pub(super) fn declarations(saga: &Saga) -> String {
    let mut out = String::new();
    for t in &saga.types {
        let name = names::exported(&t.name);
        let doc =
            t.doc.as_deref().map(|d| format!("{name}: {d}")).unwrap_or_else(|| format!("{name} is type `{}`.", t.name));
        out.push('\n');
        out.push_str(&comment("", &doc));
        match &t.kind {
            TypeKind::Record(fields) => out.push_str(&struct_decl(&name, fields)),
            TypeKind::Enum(symbols) => {
                out.push_str(&format!("type {name} string\n\n"));
                out.push_str(&format!("// The symbols of {name}.\nconst (\n"));
                let rows: Vec<Line> = symbols
                    .iter()
                    .map(|s| Line::Row(vec![names::symbol(&t.name, s), name.clone(), format!("= {}", quoted(s))]))
                    .collect();
                out.push_str(&aligned(&rows));
                out.push_str(")\n");
            }
        }
    }
    out
}
