//! Stage 2: resolve and check the parsed spec into the IR. This module knows the spec's
//! meaning, never Rust syntax. It collects every error it can instead of stopping at the
//! first, so one run shows the whole list.
//!
//! One submodule per section of the spec; [`validate`] runs them in turn. Shared here: the
//! error collector [`Cx`], the declared [`Names`] that references resolve against, and the
//! checks more than one section makes (identifiers, durations, "did you mean").

mod commands;
mod compensations;
mod context;
mod delivery;
mod events;
mod services;
mod status;
mod topics;
mod types;

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse::{self, OrderedMap};
use crate::path;
use crate::spans::{Seg, Span, SpanMap};

const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self",
    "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "yield",
];

/// Envelope fields; the saga key sits beside them.
const ENVELOPE_FIELDS: &[&str] =
    &["event_id", "occurred_at", "trace", "traceparent", "tracestate", "deadline", "context", "payload"];

/// Checks a parsed spec. On success every name in the IR resolves.
pub fn validate(spec: &parse::Spec, spans: &SpanMap) -> Result<ir::Saga, Vec<SpecError>> {
    let mut cx = Cx { spans, errors: Vec::new() };
    let names = Names::of(spec);

    // Errors are sorted by place at the end; errors at the same place keep this order.
    let service_spans = services::check(&mut cx, spec);
    let topics = topics::check(&mut cx, spec);
    let types = types::check(&mut cx, spec, &names);
    let events = events::check(&mut cx, spec, &names);
    let commands = commands::check(&mut cx, spec, &names);
    let context = context::check(&mut cx, spec, &names, &commands);
    let status = spec.status.as_ref().map(|st| status::check(&mut cx, st, spec, &names));
    events::check_published(&mut cx, spec);
    services::check_subscribes(&mut cx, spec, &service_spans);
    let compensations = compensations::check(&mut cx, spec, &names);
    let (services, dlq_suffix) = delivery::check(&mut cx, spec, &service_spans, &names);
    saga_and_key(&mut cx, spec);
    unpublished_retired_events(&mut cx, spec);

    if !cx.errors.is_empty() {
        return Err(cx.sorted());
    }
    let mut types = types;
    if let Some(c) = &context {
        // The context's record is a type like the spec's own, so every emitter knows it.
        types.push(ir::TypeDef {
            name: ir::CONTEXT_TYPE.to_string(),
            doc: Some(c.doc.clone().unwrap_or_else(|| {
                "Saga data set by the command that starts the saga and carried by every reply.".to_string()
            })),
            kind: ir::TypeKind::Record(c.fields.clone()),
            loc: cx.key(&path!["context"]),
        });
    }
    let saga = ir::Saga {
        name: spec.saga.clone(),
        doc: spec.doc.clone(),
        namespace: spec.namespace.clone(),
        key: spec.key.clone(),
        services,
        topics,
        types,
        commands,
        context,
        events,
        status,
        compensations,
        dlq_suffix,
    };
    // Checks of the whole saga, which need every name resolved.
    context::check_carried(&mut cx, &saga);
    if !cx.errors.is_empty() {
        return Err(cx.sorted());
    }
    Ok(saga)
}

/// The saga's own name and its key, which every event carries beside the envelope fields.
fn saga_and_key(cx: &mut Cx<'_>, spec: &parse::Spec) {
    for (what, value, p) in [("saga", &spec.saga, "saga"), ("key", &spec.key, "key")] {
        let at = cx.val(&path![p]);
        check_ident(cx, what, value, at);
    }
    if ENVELOPE_FIELDS.contains(&spec.key.as_str()) {
        let at = cx.val(&path!["key"]);
        cx.err(
            SpecError::new("spec::reserved_name", format!("saga key `{}` clashes with an envelope field", spec.key))
                .label(at, "here")
                .help(format!("the envelope already has: {}", ENVELOPE_FIELDS.join(", "))),
        );
    }
}

/// A retired event is handled but no longer published: nothing may emit it.
fn unpublished_retired_events(cx: &mut Cx<'_>, spec: &parse::Spec) {
    let retired: BTreeSet<&str> = spec.events.0.iter().filter(|(_, e)| e.retired).map(|(n, _)| n.as_str()).collect();
    let mut emitted: Vec<(&str, Vec<Seg>)> = Vec::new();
    for (name, e) in &spec.events.0 {
        for (service, replies) in &e.subscribers.0 {
            for (i, reply) in replies.iter().flatten().enumerate() {
                emitted.push((reply, path!["events", name, "subscribers", service, i].to_vec()));
            }
        }
    }
    for (name, c) in &spec.commands.0 {
        emitted.push((&c.emits, path!["commands", name, "emits"].to_vec()));
    }
    if let Some(st) = &spec.status {
        for (state, t) in &st.timeouts.0 {
            if let Some(emits) = &t.emits {
                emitted.push((emits, path!["status", "timeouts", state, "emits"].to_vec()));
            }
        }
    }
    for (event, at) in emitted.into_iter().filter(|(e, _)| retired.contains(e)) {
        let span = cx.val(&at);
        cx.err(
            SpecError::new("spec::retired_event_published", format!("retired event `{event}` is still published"))
                .label(span, "published here")
                .help(format!("publish another event here, or un-retire `{event}`")),
        );
    }
}

/// The names each section declares, in spec order: what references resolve against (and
/// what an unknown name's "did you mean" chooses from), duplicates included.
struct Names<'s> {
    services: Vec<&'s str>,
    topics: Vec<&'s str>,
    types: Vec<&'s str>,
    /// The types declared with `enum`.
    enums: BTreeSet<&'s str>,
    events: Vec<&'s str>,
}

impl<'s> Names<'s> {
    fn of(spec: &'s parse::Spec) -> Self {
        Names {
            services: spec.services.iter().map(String::as_str).collect(),
            topics: spec.topics.0.iter().map(|(n, _)| n.as_str()).collect(),
            types: spec.types.0.iter().map(|(n, _)| n.as_str()).collect(),
            enums: spec.types.0.iter().filter(|(_, t)| t.symbols.is_some()).map(|(n, _)| n.as_str()).collect(),
            events: spec.events.0.iter().map(|(n, _)| n.as_str()).collect(),
        }
    }
}

/// Where the spec's parts are, and the errors found so far.
struct Cx<'a> {
    spans: &'a SpanMap,
    errors: Vec<SpecError>,
}

impl Cx<'_> {
    fn err(&mut self, e: SpecError) {
        self.errors.push(e);
    }
    /// The errors in the order of their places in the spec.
    fn sorted(mut self) -> Vec<SpecError> {
        self.errors.sort_by_key(|e| e.labels.first().map(|(s, _)| s.offset).unwrap_or(0));
        self.errors
    }
    fn key(&self, p: &[Seg]) -> Span {
        self.spans.key(p)
    }
    fn val(&self, p: &[Seg]) -> Span {
        self.spans.value(p)
    }

    /// Reports a name that does not resolve, suggesting the closest known one.
    fn unknown(&mut self, what: &str, name: &str, at: Span, known: &[&str]) {
        let code = match what {
            "event" => "spec::unknown_event",
            "service" => "spec::unknown_service",
            "state" => "spec::unknown_state",
            "topic" => "spec::unknown_topic",
            _ => "spec::unknown_type",
        };
        let help = match closest(name, known) {
            Some(c) => format!("did you mean `{c}`? Known {what}s: {}", known.join(", ")),
            None if known.is_empty() => format!("declare the {what} first"),
            None => format!("known {what}s: {}", known.join(", ")),
        };
        self.err(
            SpecError::new(code, format!("unknown {what} `{name}`"))
                .label(at, format!("no {what} named `{name}`"))
                .help(help),
        );
    }

    /// Reports repeated names in one namespace, pointing at both occurrences.
    fn duplicates<'n>(&mut self, what: &str, names: impl IntoIterator<Item = (&'n str, Span)>) {
        let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
        for (n, at) in names {
            if let Some(first) = seen.get(n) {
                self.err(
                    SpecError::new("spec::duplicate_name", format!("duplicate {what} `{n}`"))
                        .label(*first, "first declared here")
                        .label(at, "declared again here")
                        .help(format!("{what} names must be unique; rename or remove one of them")),
                );
            } else {
                seen.insert(n, at);
            }
        }
    }
}

/// Each key of a section mapping with the place of that occurrence of it.
fn occurrences<'a, V>(cx: &Cx<'_>, section: &str, map: &'a OrderedMap<V>) -> Vec<(&'a str, Span)> {
    // Duplicate keys share a path; the span map holds their occurrences in order.
    let mut nth: BTreeMap<&str, usize> = BTreeMap::new();
    map.0
        .iter()
        .map(|(n, _)| {
            let i = nth.entry(n.as_str()).or_insert(0);
            let all = cx.spans.all(&path![section, n]);
            let at = all.get(*i).map(|l| l.key.unwrap_or(l.value)).unwrap_or_default();
            *i += 1;
            (n.as_str(), at)
        })
        .collect()
}

/// A name that becomes a Rust identifier as written must be snake_case and not a keyword.
fn check_ident(cx: &mut Cx<'_>, what: &str, name: &str, at: Span) {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        cx.err(
            SpecError::new("spec::bad_name", format!("{what} name `{name}` is not snake_case"))
                .label(at, "here")
                .help(format!("{what} names look like `order_id`: lower-case letters, digits and `_`")),
        );
    } else if RUST_KEYWORDS.contains(&name) {
        cx.err(
            SpecError::new("spec::bad_name", format!("{what} name `{name}` is a Rust keyword"))
                .label(at, "here")
                .help("pick another name, e.g. with a suffix"),
        );
    }
}

/// A name that becomes a Rust type name as written must be PascalCase.
fn check_pascal(cx: &mut Cx<'_>, what: &str, name: &str, at: Span, help: &str) {
    if !name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) || !name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        cx.err(
            SpecError::new("spec::bad_name", format!("{what} name `{name}` is not PascalCase"))
                .label(at, "here")
                .help(help),
        );
    }
}

/// `250ms`, `30s`, `5m`, `1h` -> milliseconds.
fn duration_ms(cx: &mut Cx<'_>, text: &str, at: Span) -> u64 {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor = match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    };
    match (num.parse::<u64>(), factor) {
        (Ok(n), Some(f)) if n > 0 => n.saturating_mul(f),
        _ => {
            cx.err(
                SpecError::new("spec::bad_value", format!("bad duration `{text}`"))
                    .label(at, "here")
                    .help("a duration is a positive integer with a unit: `250ms`, `30s`, `5m`, `1h`"),
            );
            1
        }
    }
}

/// The known name with the smallest edit distance, when it is close enough to be a typo.
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(name.len()) / 3).max(2))
        .min()
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
