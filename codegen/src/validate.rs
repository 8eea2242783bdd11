//! Stage 2: resolve and check the parsed spec into the IR. This module knows the spec's
//! meaning, never Rust syntax. It collects every error it can instead of stopping at the
//! first, so one run shows the whole list.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::diagnostics::SpecError;
use crate::ir::{self, Field, Type};
use crate::parse::{self, FieldSpec, OrderedMap};
use crate::path;
use crate::spans::{Seg, Span, SpanMap};

const SCALARS: &[&str] = &["uuid", "string", "bool", "int", "long", "double", "money", "timestamp"];

const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self",
    "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "yield",
];

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

/// Envelope fields; the saga key sits beside them.
const ENVELOPE_FIELDS: &[&str] = &["event_id", "occurred_at", "trace", "traceparent", "tracestate", "payload"];

struct Cx<'a> {
    spans: &'a SpanMap,
    errors: Vec<SpecError>,
}

impl Cx<'_> {
    fn err(&mut self, e: SpecError) {
        self.errors.push(e);
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

/// Checks a parsed spec. On success every name in the IR resolves.
pub fn validate(spec: &parse::Spec, spans: &SpanMap) -> Result<ir::Saga, Vec<SpecError>> {
    let mut cx = Cx { spans, errors: Vec::new() };

    // --- Services ---------------------------------------------------------------------------
    let svc_spans: Vec<Span> = (0..spec.services.len()).map(|i| cx.val(&path!["services", i])).collect();
    cx.duplicates("service", spec.services.iter().map(String::as_str).zip(svc_spans.iter().copied()));
    for (s, at) in spec.services.iter().zip(&svc_spans) {
        check_ident(&mut cx, "service", s, *at);
    }
    let services: Vec<&str> = spec.services.iter().map(String::as_str).collect();

    // --- Topics -----------------------------------------------------------------------------
    let topic_names: Vec<&str> = spec.topics.0.iter().map(|(n, _)| n.as_str()).collect();
    cx.duplicates("topic", occurrences(&cx, "topics", &spec.topics));
    let mut topics = Vec::new();
    for (name, t) in &spec.topics.0 {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'));
        if !valid {
            let at = cx.key(&path!["topics", name]);
            cx.err(
                SpecError::new("spec::bad_name", format!("topic name `{name}` is not a lower-case Kafka name"))
                    .label(at, "here")
                    .help("topic names look like `order-events`: lower-case letters, digits, `-`, `.`, `_`"),
            );
        }
        let partitions = match i32::try_from(t.partitions) {
            Ok(p) if p > 0 => p,
            _ => {
                let at = cx.val(&path!["topics", name, "partitions"]);
                cx.err(
                    SpecError::new("spec::bad_value", format!("topic `{name}` has {} partitions", t.partitions))
                        .label(at, "must be between 1 and 2^31-1")
                        .help("give the topic at least one partition"),
                );
                1
            }
        };
        topics.push(ir::Topic {
            name: name.clone(),
            partitions,
            doc: t.doc.clone(),
            loc: cx.key(&path!["topics", name]),
        });
    }

    // --- Types ------------------------------------------------------------------------------
    let type_names: Vec<&str> = spec.types.0.iter().map(|(n, _)| n.as_str()).collect();
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
    for (name, _) in &spec.commands.0 {
        let at = cx.key(&path!["commands", name]);
        if !name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            || !name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            cx.err(
                SpecError::new("spec::bad_name", format!("command name `{name}` is not PascalCase"))
                    .label(at, "here")
                    .help("command names look like `CreateOrder`"),
            );
        }
    }
    let enums: BTreeSet<&str> =
        spec.types.0.iter().filter(|(_, t)| t.symbols.is_some()).map(|(n, _)| n.as_str()).collect();
    let mut types = Vec::new();
    for (name, t) in &spec.types.0 {
        let base = path!["types", name];
        let at = cx.key(&base);
        if !name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            || !name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            cx.err(
                SpecError::new("spec::bad_name", format!("type name `{name}` is not PascalCase"))
                    .label(at, "here")
                    .help("type names look like `OrderItem`: letters and digits, starting upper-case"),
            );
        }
        let kind = match (&t.fields, &t.symbols) {
            (Some(fields), None) => ir::TypeKind::Record(fields_of(&mut cx, &base, fields, &type_names, &enums)),
            (None, Some(symbols)) => {
                let sp: Vec<Span> = (0..symbols.len()).map(|i| cx.val(&path!["types", name, "enum", i])).collect();
                cx.duplicates("enum symbol", symbols.iter().map(String::as_str).zip(sp.iter().copied()));
                for (s, at) in symbols.iter().zip(&sp) {
                    check_ident(&mut cx, "enum symbol", s, *at);
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

    // --- Events -----------------------------------------------------------------------------
    let event_names: Vec<&str> = spec.events.0.iter().map(|(n, _)| n.as_str()).collect();
    cx.duplicates("event", occurrences(&cx, "events", &spec.events));
    let mut events = Vec::new();
    for (name, e) in &spec.events.0 {
        let base = path!["events", name];
        let at = cx.key(&base);
        if !name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_')
        {
            cx.err(
                SpecError::new("spec::bad_name", format!("event name `{name}` is not lower-case dotted"))
                    .label(at, "here")
                    .help("event names look like `order.created`"),
            );
        }
        if !topic_names.contains(&e.topic.as_str()) {
            let at = cx.val(&path!["events", name, "topic"]);
            cx.unknown("topic", &e.topic, at, &topic_names);
        }
        if !services.contains(&e.publisher.as_str()) {
            let at = cx.val(&path!["events", name, "publisher"]);
            cx.unknown("service", &e.publisher, at, &services);
        }
        let failure = match e.outcome.as_deref() {
            None | Some("success") => false,
            Some("failure") => true,
            Some(other) => {
                let at = cx.val(&path!["events", name, "outcome"]);
                cx.err(
                    SpecError::new("spec::bad_value", format!("event `{name}` has unknown outcome `{other}`"))
                        .label(at, "here")
                        .help("outcome is `success` (default) or `failure` (the publisher changed nothing)"),
                );
                false
            }
        };
        let sub_at: Vec<(&str, Span)> = e
            .subscribers
            .0
            .iter()
            .map(|(s, _)| (s.as_str(), cx.key(&path!["events", name, "subscribers", s])))
            .collect();
        cx.duplicates("subscriber", sub_at);
        let mut subscribers = Vec::new();
        for (svc, replies) in &e.subscribers.0 {
            let sp = path!["events", name, "subscribers", svc];
            if !services.contains(&svc.as_str()) {
                let at = cx.key(&sp);
                cx.unknown("service", svc, at, &services);
            }
            let replies = replies.clone().unwrap_or_default();
            for (i, r) in replies.iter().enumerate() {
                let rat = cx.val(&path!["events", name, "subscribers", svc, i]);
                match spec.events.0.iter().find(|(n, _)| n == r) {
                    None => cx.unknown("event", r, rat, &event_names),
                    Some((_, re)) if re.publisher != *svc => cx.err(
                        SpecError::new(
                            "spec::not_publisher",
                            format!("service `{svc}` replies with `{r}`, but `{r}` is published by `{}`", re.publisher),
                        )
                        .label(rat, format!("`{svc}` may not publish `{r}`"))
                        .help(format!("only an event's publisher emits it; make `{svc}` its publisher or reply with an event `{svc}` publishes")),
                    ),
                    Some(_) => {}
                }
            }
            subscribers.push(ir::Subscriber { service: svc.clone(), replies });
        }
        if e.subscribers.0.is_empty() && !e.external {
            cx.err(
                SpecError::new("spec::no_subscriber", format!("event `{name}` has no subscriber"))
                    .label(at, "nobody consumes this event")
                    .help("add a subscriber, or mark it `external: true` if it is consumed outside the saga"),
            );
        }
        let fields = fields_of(&mut cx, &base, &e.fields, &type_names, &enums);
        events.push(ir::Event {
            name: name.clone(),
            topic: e.topic.clone(),
            publisher: e.publisher.clone(),
            doc: e.doc.clone(),
            failure,
            external: e.external,
            subscribers,
            fields,
            loc: at,
        });
    }

    // --- Commands ---------------------------------------------------------------------------
    let mut commands = Vec::new();
    for (name, c) in &spec.commands.0 {
        let base = path!["commands", name];
        if !services.contains(&c.service.as_str()) {
            let at = cx.val(&path!["commands", name, "service"]);
            cx.unknown("service", &c.service, at, &services);
        }
        let emits_at = cx.val(&path!["commands", name, "emits"]);
        match spec.events.0.iter().find(|(n, _)| *n == c.emits) {
            None => cx.unknown("event", &c.emits, emits_at, &event_names),
            Some((_, ev)) if ev.publisher != c.service => cx.err(
                SpecError::new(
                    "spec::not_publisher",
                    format!(
                        "command `{name}` on `{}` emits `{}`, which is published by `{}`",
                        c.service, c.emits, ev.publisher
                    ),
                )
                .label(emits_at, format!("`{}` may not publish this", c.service))
                .help(format!("run the command on `{}` or emit an event `{}` publishes", ev.publisher, c.service)),
            ),
            Some(_) => {}
        }
        let fields = fields_of(&mut cx, &base, &c.fields, &type_names, &enums);
        commands.push(ir::Command {
            name: name.clone(),
            service: c.service.clone(),
            doc: c.doc.clone(),
            fields,
            emits: c.emits.clone(),
        });
    }

    // --- Status machine ---------------------------------------------------------------------
    let status = spec.status.as_ref().map(|st| status_of(&mut cx, st, &services, &event_names, spec));

    // Every event must have a way to be published: a command, a reply or a timeout.
    for (name, _) in &spec.events.0 {
        let by_command = spec.commands.0.iter().any(|(_, c)| c.emits == *name);
        let by_reply = spec
            .events
            .0
            .iter()
            .any(|(_, e)| e.subscribers.0.iter().any(|(_, r)| r.as_ref().is_some_and(|r| r.contains(name))));
        let by_timeout = spec
            .status
            .as_ref()
            .is_some_and(|s| s.timeouts.0.iter().any(|(_, t)| t.emits.as_deref() == Some(name.as_str())));
        if !(by_command || by_reply || by_timeout) {
            let at = cx.key(&path!["events", name]);
            cx.err(
                SpecError::new("spec::never_published", format!("event `{name}` is never published"))
                    .label(at, "no command, reply or timeout emits this")
                    .help("list it in a subscriber's replies, a command's `emits` or a timeout's `emits`"),
            );
        }
    }

    // --- Compensations ----------------------------------------------------------------------
    let mut compensations = Vec::new();
    for (i, c) in spec.compensations.iter().enumerate() {
        let on_at = cx.val(&path!["compensations", i, "on"]);
        let svc_at = cx.val(&path!["compensations", i, "service"]);
        let undoes_at = cx.val(&path!["compensations", i, "undoes"]);
        if !services.contains(&c.service.as_str()) {
            cx.unknown("service", &c.service, svc_at, &services);
        }
        match spec.events.0.iter().find(|(n, _)| *n == c.on) {
            None => cx.unknown("event", &c.on, on_at, &event_names),
            Some((_, ev)) if !ev.subscribers.0.iter().any(|(s, _)| *s == c.service) => cx.err(
                SpecError::new(
                    "spec::not_subscribed",
                    format!("compensation on `{}` runs in `{}`, which does not subscribe to it", c.on, c.service),
                )
                .label(on_at, "never delivered to that service")
                .help(format!("add `{}` to the subscribers of `{}`", c.service, c.on)),
            ),
            Some(_) => {}
        }
        match spec.events.0.iter().find(|(n, _)| *n == c.undoes) {
            None => cx.unknown("event", &c.undoes, undoes_at, &event_names),
            Some((_, ev)) if ev.publisher != c.service => cx.err(
                SpecError::new(
                    "spec::compensation_undoes_nothing",
                    format!(
                        "compensation in `{}` undoes `{}`, which `{}` never published",
                        c.service, c.undoes, c.service
                    ),
                )
                .label(undoes_at, format!("published by `{}`", ev.publisher))
                .help("a service can only undo its own local transaction; undo an event it publishes"),
            ),
            Some((_, ev)) if ev.outcome.as_deref() == Some("failure") => cx.err(
                SpecError::new(
                    "spec::compensation_undoes_nothing",
                    format!("compensation undoes `{}`, a failure outcome that changed nothing", c.undoes),
                )
                .label(undoes_at, "marked `outcome: failure`")
                .help("drop this compensation: there is no state to restore"),
            ),
            Some(_) => {}
        }
        compensations.push(ir::Compensation { on: c.on.clone(), service: c.service.clone(), undoes: c.undoes.clone() });
    }

    // --- Delivery ---------------------------------------------------------------------------
    let default_retry = ir::Retry { max_attempts: 5, initial_backoff_ms: 100, max_backoff_ms: 10_000 };
    let delivery = spec.delivery.as_ref();
    let (base_retry, base_batch) = match delivery.and_then(|d| d.default.as_ref()) {
        Some(r) => {
            let p = path!["delivery", "default"];
            (retry_of(&mut cx, r, default_retry, &p), batch_of(&mut cx, r, 1, &p))
        }
        None => (default_retry, 1),
    };
    let mut service_ir: Vec<ir::Service> = spec
        .services
        .iter()
        .zip(&svc_spans)
        .map(|(s, at)| ir::Service { name: s.clone(), retry: base_retry, max_batch: base_batch, loc: *at })
        .collect();
    if let Some(d) = delivery {
        for (svc, r) in &d.consumers.0 {
            let p = path!["delivery", "consumers", svc];
            match service_ir.iter().position(|s| s.name == *svc) {
                Some(i) => {
                    service_ir[i].retry = retry_of(&mut cx, r, base_retry, &p);
                    service_ir[i].max_batch = batch_of(&mut cx, r, base_batch, &p);
                }
                None => {
                    let at = cx.key(&p);
                    cx.unknown("service", svc, at, &services);
                }
            }
        }
    }
    let dlq_suffix = delivery.and_then(|d| d.dlq_suffix.clone()).unwrap_or_else(|| ".dlq".to_string());

    for (what, value, p) in [("saga", &spec.saga, "saga"), ("key", &spec.key, "key")] {
        let at = cx.val(&path![p]);
        check_ident(&mut cx, what, value, at);
    }
    if ENVELOPE_FIELDS.contains(&spec.key.as_str()) {
        let at = cx.val(&path!["key"]);
        cx.err(
            SpecError::new("spec::reserved_name", format!("saga key `{}` clashes with an envelope field", spec.key))
                .label(at, "here")
                .help(format!("the envelope already has: {}", ENVELOPE_FIELDS.join(", "))),
        );
    }

    if !cx.errors.is_empty() {
        cx.errors.sort_by_key(|e| e.labels.first().map(|(s, _)| s.offset).unwrap_or(0));
        return Err(cx.errors);
    }
    Ok(ir::Saga {
        name: spec.saga.clone(),
        doc: spec.doc.clone(),
        namespace: spec.namespace.clone(),
        key: spec.key.clone(),
        services: service_ir,
        topics,
        types,
        commands,
        events,
        status,
        compensations,
        dlq_suffix,
    })
}

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

fn fields_of(
    cx: &mut Cx<'_>,
    base: &[Seg],
    fields: &OrderedMap<FieldSpec>,
    types: &[&str],
    enums: &BTreeSet<&str>,
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
        let Some(ty) = parse_type(cx, f.ty(), ty_at, types, enums) else { continue };
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
fn parse_type(cx: &mut Cx<'_>, text: &str, at: Span, types: &[&str], enums: &BTreeSet<&str>) -> Option<Type> {
    let t = text.trim();
    if let Some(inner) = t.strip_suffix('?') {
        let inner = parse_type(cx, inner, at, types, enums)?;
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
        return Some(Type::Array(Box::new(parse_type(cx, inner, at, types, enums)?)));
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
        named if types.contains(&named) => {
            if enums.contains(named) {
                Type::Enum(named.to_string())
            } else {
                Type::Record(named.to_string())
            }
        }
        named if !named.is_empty() && named.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            let mut known: Vec<&str> = SCALARS.to_vec();
            known.extend(types);
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

fn status_of(
    cx: &mut Cx<'_>,
    st: &parse::StatusSpec,
    services: &[&str],
    event_names: &[&str],
    spec: &parse::Spec,
) -> ir::StatusMachine {
    let owner_at = cx.val(&path!["status", "owner"]);
    if !services.contains(&st.owner.as_str()) {
        cx.unknown("service", &st.owner, owner_at, services);
    }
    let state_spans: Vec<Span> = (0..st.states.len()).map(|i| cx.val(&path!["status", "states", i])).collect();
    cx.duplicates("state", st.states.iter().map(String::as_str).zip(state_spans.iter().copied()));
    for (s, at) in st.states.iter().zip(&state_spans) {
        check_ident(cx, "state", s, *at);
    }
    let states: Vec<&str> = st.states.iter().map(String::as_str).collect();
    let state_at = |cx: &Cx<'_>, s: &str| {
        st.states.iter().position(|x| x == s).map(|i| cx.val(&path!["status", "states", i])).unwrap_or_default()
    };

    let initial_at = cx.val(&path!["status", "initial"]);
    if !states.contains(&st.initial.as_str()) {
        cx.unknown("state", &st.initial, initial_at, &states);
    }
    for (i, t) in st.terminal.iter().enumerate() {
        if !states.contains(&t.as_str()) {
            let at = cx.val(&path!["status", "terminal", i]);
            cx.unknown("state", t, at, &states);
        }
    }
    let owner_receives: Vec<&str> = spec
        .events
        .0
        .iter()
        .filter(|(_, e)| e.subscribers.0.iter().any(|(s, _)| *s == st.owner))
        .map(|(n, _)| n.as_str())
        .collect();

    let mut seen: BTreeMap<(&str, &str), Span> = BTreeMap::new();
    for (i, t) in st.transitions.iter().enumerate() {
        let from_at = cx.val(&path!["status", "transitions", i, "from"]);
        let on_at = cx.val(&path!["status", "transitions", i, "on"]);
        let to_at = cx.val(&path!["status", "transitions", i, "to"]);
        for (s, at) in [(&t.from, from_at), (&t.to, to_at)] {
            if !states.contains(&s.as_str()) {
                cx.unknown("state", s, at, &states);
            }
        }
        if !event_names.contains(&t.on.as_str()) {
            cx.unknown("event", &t.on, on_at, event_names);
        } else if !owner_receives.contains(&t.on.as_str()) {
            cx.err(
                SpecError::new(
                    "spec::not_subscribed",
                    format!("transition on `{}`, which `{}` does not subscribe to", t.on, st.owner),
                )
                .label(on_at, "the status owner never receives this event")
                .help(format!("add `{}` to the subscribers of `{}`", st.owner, t.on)),
            );
        }
        if st.terminal.contains(&t.from) {
            let at = state_at(cx, &t.from);
            cx.err(
                SpecError::new(
                    "spec::terminal_transition",
                    format!("terminal state `{}` has an outgoing transition", t.from),
                )
                .label(from_at, format!("leaves `{}` on `{}`", t.from, t.on))
                .label(at, "declared here, listed as terminal")
                .help("a terminal state ends the saga: drop the transition or remove the state from `terminal`"),
            );
        }
        if let Some(first) = seen.insert((t.from.as_str(), t.on.as_str()), on_at) {
            cx.err(
                SpecError::new("spec::duplicate_name", format!("two transitions from `{}` on `{}`", t.from, t.on))
                    .label(first, "first here")
                    .label(on_at, "again here")
                    .help("a state reacts to one event in exactly one way; remove one transition"),
            );
        }
    }

    let mut timeouts: BTreeMap<&str, ir::Timeout> = BTreeMap::new();
    for (state, t) in &st.timeouts.0 {
        let key_at = cx.key(&path!["status", "timeouts", state]);
        if !states.contains(&state.as_str()) {
            cx.unknown("state", state, key_at, &states);
        }
        if st.terminal.contains(state) {
            cx.err(
                SpecError::new("spec::terminal_transition", format!("terminal state `{state}` has a timeout"))
                    .label(key_at, "a terminal state never times out")
                    .help("remove this timeout"),
            );
        }
        let to_at = cx.val(&path!["status", "timeouts", state, "to"]);
        if !states.contains(&t.to.as_str()) {
            cx.unknown("state", &t.to, to_at, &states);
        }
        if let Some(ev) = &t.emits {
            let at = cx.val(&path!["status", "timeouts", state, "emits"]);
            match spec.events.0.iter().find(|(n, _)| n == ev) {
                None => cx.unknown("event", ev, at, event_names),
                Some((_, e)) if e.publisher != st.owner => cx.err(
                    SpecError::new(
                        "spec::not_publisher",
                        format!(
                            "timeout of `{state}` emits `{ev}`, published by `{}` not by `{}`",
                            e.publisher, st.owner
                        ),
                    )
                    .label(at, format!("`{}` may not publish this", st.owner))
                    .help("the status owner resolves timeouts; emit an event it publishes"),
                ),
                Some(_) => {}
            }
        }
        let after_at = cx.val(&path!["status", "timeouts", state, "after"]);
        let after_ms = duration_ms(cx, &t.after, after_at);
        timeouts.insert(state.as_str(), ir::Timeout { after_ms, to: t.to.clone(), emits: t.emits.clone() });
    }

    for (s, at) in st.states.iter().zip(&state_spans) {
        if !st.terminal.contains(s) && !timeouts.contains_key(s.as_str()) {
            cx.err(
                SpecError::new("spec::missing_timeout", format!("non-terminal state `{s}` has no timeout"))
                    .label(*at, "a saga could wait here forever")
                    .help(format!(
                        "add `{s}: {{ after: 30s, to: <state> }}` under `status.timeouts`, or mark it terminal"
                    )),
            );
        }
    }

    // Reachability from the initial state over transitions and timeouts.
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut queue: VecDeque<&str> = VecDeque::from([st.initial.as_str()]);
    while let Some(s) = queue.pop_front() {
        if !reached.insert(s) {
            continue;
        }
        for t in st.transitions.iter().filter(|t| t.from == s) {
            queue.push_back(&t.to);
        }
        if let Some(t) = timeouts.get(s) {
            queue.push_back(&t.to);
        }
    }
    if states.contains(&st.initial.as_str()) {
        for (s, at) in st.states.iter().zip(&state_spans) {
            if !reached.contains(s.as_str()) {
                cx.err(
                    SpecError::new("spec::unreachable_state", format!("state `{s}` is unreachable"))
                        .label(*at, format!("no path from `{}` leads here", st.initial))
                        .help("add a transition into it, or remove the state"),
                );
            }
        }
    }

    ir::StatusMachine {
        owner: st.owner.clone(),
        initial: st.initial.clone(),
        states: st
            .states
            .iter()
            .map(|s| ir::State {
                name: s.clone(),
                terminal: st.terminal.contains(s),
                timeout: timeouts.get(s.as_str()).cloned(),
            })
            .collect(),
        transitions: st
            .transitions
            .iter()
            .map(|t| ir::Transition { from: t.from.clone(), on: t.on.clone(), to: t.to.clone() })
            .collect(),
    }
}

/// Most messages one consumer transaction may hold: more only lengthens how
/// long a batch keeps its row locks.
const MAX_BATCH: u32 = 1000;

fn batch_of(cx: &mut Cx<'_>, r: &parse::RetrySpec, base: u32, p: &[Seg]) -> u32 {
    let Some(n) = r.batch else { return base };
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_BATCH).contains(&n) => n,
        _ => {
            let mut q = p.to_vec();
            q.push(Seg::Key("batch".into()));
            let at = cx.val(&q);
            cx.err(
                SpecError::new("spec::bad_value", format!("batch {n} is out of range"))
                    .label(at, "here")
                    .help(format!("1 (one message per transaction) to {MAX_BATCH}")),
            );
            base
        }
    }
}

fn retry_of(cx: &mut Cx<'_>, r: &parse::RetrySpec, base: ir::Retry, p: &[Seg]) -> ir::Retry {
    let mut out = base;
    if let Some(n) = r.max_attempts {
        match u32::try_from(n) {
            Ok(n) if n > 0 => out.max_attempts = n,
            _ => {
                let mut q = p.to_vec();
                q.push(Seg::Key("max_attempts".into()));
                let at = cx.val(&q);
                cx.err(
                    SpecError::new("spec::bad_value", format!("max_attempts {n} is out of range"))
                        .label(at, "here")
                        .help("at least 1 attempt"),
                );
            }
        }
    }
    if let Some(b) = &r.backoff {
        let mut q = p.to_vec();
        q.push(Seg::Key("backoff".into()));
        let mut qi = q.clone();
        qi.push(Seg::Key("initial".into()));
        let mut qm = q.clone();
        qm.push(Seg::Key("max".into()));
        let (ai, am) = (cx.val(&qi), cx.val(&qm));
        out.initial_backoff_ms = duration_ms(cx, &b.initial, ai);
        out.max_backoff_ms = duration_ms(cx, &b.max, am);
    }
    out
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
