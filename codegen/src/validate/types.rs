//! `types:` named records and enums, and the field lists and type expressions that types,
//! events and commands share.

use std::collections::BTreeMap;

use super::{Cx, Names, check_ident, check_pascal};
use crate::diagnostics::SpecError;
use crate::ir::{self, Field, Type};
use crate::parse::{self, FieldSpec, OrderedMap};
use crate::path;
use crate::spans::{Seg, Span};

const SCALARS: &[&str] = &["uuid", "string", "bool", "int", "long", "double", "money", "timestamp"];

/// Names the generated crate defines itself; a spec type, event or command may not take them.
const GENERATED_NAMES: &[&str] = &[
    "CommandError",
    "DecodeError",
    "EncodeError",
    "Envelope",
    "Event",
    "EventType",
    "Money",
    "Outbox",
    "OutboxRecord",
    "TraceContext",
    "Value",
];

pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec, names: &Names<'_>) -> Vec<ir::TypeDef> {
    rust_names(cx, spec);
    let mut types = Vec::new();
    for (name, t) in &spec.types.0 {
        let base = path!["types", name];
        let at = cx.key(&base);
        check_pascal(cx, "type", name, at, "type names look like `OrderItem`: letters and digits, starting upper-case");
        let kind = match (&t.fields, &t.symbols) {
            (Some(fields), None) => ir::TypeKind::Record(fields_of(cx, &base, fields, names)),
            (None, Some(symbols)) => {
                let sp: Vec<Span> = (0..symbols.len()).map(|i| cx.val(&path!["types", name, "enum", i])).collect();
                cx.duplicates("enum symbol", symbols.iter().map(String::as_str).zip(sp.iter().copied()));
                for (s, at) in symbols.iter().zip(&sp) {
                    check_ident(cx, "enum symbol", s, *at);
                }
                ir::TypeKind::Enum(symbols.clone())
            }
            _ => {
                cx.err(
                    SpecError::new(
                        "spec::bad_type",
                        format!("type `{name}` must have exactly one of `fields` or `enum`"),
                    )
                    .label(at, "declared here")
                    .help("a record: `fields: { name: type }`; an enum: `enum: [a, b]`"),
                );
                ir::TypeKind::Enum(Vec::new())
            }
        };
        types.push(ir::TypeDef { name: name.clone(), doc: t.doc.clone(), kind, loc: at });
    }
    types
}

/// Types, events (as their PascalCase struct names) and commands share one Rust namespace
/// with each other and with what the generated crate defines.
fn rust_names(cx: &mut Cx<'_>, spec: &parse::Spec) {
    let mut names_in_rust: Vec<(String, Span)> =
        spec.types.0.iter().map(|(n, _)| (n.clone(), cx.key(&path!["types", n]))).collect();
    names_in_rust.extend(spec.events.0.iter().map(|(n, _)| (ir::pascal(n), cx.key(&path!["events", n]))));
    names_in_rust.extend(spec.commands.0.iter().map(|(n, _)| (n.clone(), cx.key(&path!["commands", n]))));
    cx.duplicates("type, event or command", names_in_rust.iter().map(|(n, s)| (n.as_str(), *s)));
    for (n, at) in &names_in_rust {
        if GENERATED_NAMES.contains(&n.as_str()) {
            cx.err(
                SpecError::new("spec::reserved_name", format!("`{n}` is a name the generated code defines"))
                    .label(*at, "becomes the Rust name `".to_string() + n + "`")
                    .help(format!("rename it; reserved: {}", GENERATED_NAMES.join(", "))),
            );
        }
    }
}

/// The `fields:` under `base` (a type, event or command).
pub(super) fn fields_of(
    cx: &mut Cx<'_>,
    base: &[Seg],
    fields: &OrderedMap<FieldSpec>,
    names: &Names<'_>,
) -> Vec<Field> {
    let mut fp = base.to_vec();
    fp.push(Seg::Key("fields".into()));
    let occ: Vec<(&str, Span)> = {
        let mut nth: BTreeMap<&str, usize> = BTreeMap::new();
        fields
            .0
            .iter()
            .map(|(n, _)| {
                let i = nth.entry(n.as_str()).or_insert(0);
                let mut p = fp.clone();
                p.push(Seg::Key(n.clone()));
                let at = cx.spans.all(&p).get(*i).and_then(|l| l.key).unwrap_or_default();
                *i += 1;
                (n.as_str(), at)
            })
            .collect()
    };
    cx.duplicates("field", occ.iter().copied());
    let mut out = Vec::new();
    for ((name, f), (_, key_at)) in fields.0.iter().zip(&occ) {
        check_ident(cx, "field", name, *key_at);
        let mut p = fp.clone();
        p.push(Seg::Key(name.clone()));
        let ty_at = match f {
            FieldSpec::Short(_) => cx.val(&p),
            FieldSpec::Long(_) => {
                let mut q = p.clone();
                q.push(Seg::Key("type".into()));
                cx.val(&q)
            }
        };
        let Some(ty) = parse_type(cx, f.ty(), ty_at, names) else { continue };
        let default = f.default().and_then(|d| match serde_json::to_value(d) {
            Ok(v) => Some(v),
            Err(_) => {
                cx.err(
                    SpecError::new("spec::bad_value", format!("field `{name}` has a default that is not plain data"))
                        .label(ty_at, "here")
                        .help("use a scalar, list or mapping as the default"),
                );
                None
            }
        });
        out.push(Field { name: name.clone(), doc: f.doc().map(str::to_string), ty, default });
    }
    out
}

/// Parses `uuid`, `OrderItem`, `[OrderItem]`, `string?`.
fn parse_type(cx: &mut Cx<'_>, text: &str, at: Span, names: &Names<'_>) -> Option<Type> {
    let t = text.trim();
    if let Some(inner) = t.strip_suffix('?') {
        let inner = parse_type(cx, inner, at, names)?;
        if matches!(inner, Type::Optional(_)) {
            bad_type(cx, text, at);
            return None;
        }
        return Some(Type::Optional(Box::new(inner)));
    }
    if let Some(rest) = t.strip_prefix('[') {
        let Some(inner) = rest.strip_suffix(']') else {
            bad_type(cx, text, at);
            return None;
        };
        return Some(Type::Array(Box::new(parse_type(cx, inner, at, names)?)));
    }
    Some(match t {
        "uuid" => Type::Uuid,
        "string" => Type::String,
        "bool" => Type::Bool,
        "int" => Type::Int,
        "long" => Type::Long,
        "double" => Type::Double,
        "money" => Type::Money,
        "timestamp" => Type::Timestamp,
        named if names.types.contains(&named) => {
            if names.enums.contains(named) {
                Type::Enum(named.to_string())
            } else {
                Type::Record(named.to_string())
            }
        }
        named if !named.is_empty() && named.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            let mut known: Vec<&str> = SCALARS.to_vec();
            known.extend(&names.types);
            cx.unknown("type", named, at, &known);
            return None;
        }
        _ => {
            bad_type(cx, text, at);
            return None;
        }
    })
}

fn bad_type(cx: &mut Cx<'_>, text: &str, at: Span) {
    cx.err(
        SpecError::new("spec::bad_field_type", format!("bad field type `{text}`"))
            .label(at, "cannot parse this type")
            .help(format!(
                "a type is a scalar ({}), a declared type name, `[T]` for a list or `T?` for an optional value",
                SCALARS.join(", ")
            )),
    );
}
