//! Spec evolution: what changed between two versions of a spec, and whether
//! running services and the data in flight survive it.
//!
//! A change is *compatible* when services of both versions can run side by
//! side during a rolling deploy and every message either version wrote (in
//! Kafka, in an outbox, parked, in a dead-letter topic) is still understood;
//! otherwise it is *breaking*, with the reason. The [`Contract`] is what the
//! previous version published (topics and their partition counts, consumer
//! groups, status states, events and the schema each is written with); it is
//! kept beside the schema history in `.avro/index.json`, so `cargo xtask gen`
//! can compare the spec with it and `cargo xtask spec diff` can compare two
//! specs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostics::SpecError;
use crate::ir::Saga;
use crate::spans::{Seg, SpanMap};

/// What a spec version published that the next one must keep honouring.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    pub saga: String,
    pub namespace: String,
    /// Topic name -> partition count (the count places every saga key).
    pub topics: BTreeMap<String, i32>,
    /// Consuming service -> its consumer group (which holds its offsets).
    pub groups: BTreeMap<String, String>,
    /// The status owner's states, in spec order.
    pub states: Vec<String>,
    /// Event name -> where it travels.
    pub events: BTreeMap<String, ContractEvent>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContractEvent {
    pub topic: String,
    /// Nothing publishes it any more (`retired: true`): once the messages
    /// already written are consumed, the next version may remove it.
    #[serde(default)]
    pub retired: bool,
}

impl Contract {
    pub fn of(saga: &Saga) -> Contract {
        Contract {
            saga: saga.name.clone(),
            namespace: saga.namespace.clone(),
            topics: saga.topics.iter().map(|t| (t.name.clone(), t.partitions)).collect(),
            groups: saga
                .services
                .iter()
                .filter(|s| saga.subscriptions(&s.name).next().is_some())
                .map(|s| (s.name.clone(), saga.consumer_group(&s.name)))
                .collect(),
            states: saga.status.iter().flat_map(|m| m.states.iter().map(|s| s.name.clone())).collect(),
            events: saga
                .events
                .iter()
                .map(|e| (e.name.clone(), ContractEvent { topic: e.topic.clone(), retired: e.retired }))
                .collect(),
        }
    }
}

/// A spec version as the comparison needs it: its contract, the schema each
/// event is written with, and the status migrations it declares.
#[derive(Debug, Clone, Default)]
pub struct Published<'a> {
    pub contract: Contract,
    /// Event name -> the JSON of the schema it is written with.
    pub schemas: BTreeMap<String, &'a Value>,
    /// Old state -> the state its orders move to (`status.migrations`).
    pub migrations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Compatible,
    Breaking,
}

/// One difference between two spec versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// Where in the (new, or for a removal the old) spec, as a YAML path.
    pub at: Vec<Seg>,
    pub verdict: Verdict,
    /// What changed and, for a breaking change, why it breaks.
    pub what: String,
    /// How to make it safe, for a breaking change.
    pub fix: Option<String>,
}

impl Change {
    /// `events.order.created.fields.total`.
    pub fn path(&self) -> String {
        self.at
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The change as a located diagnostic in the spec `spans` were read from.
    pub fn diagnostic(&self, spans: &SpanMap) -> SpecError {
        let error =
            SpecError::new("spec::breaking_change", format!("breaking change at `{}`: {}", self.path(), self.what))
                .label(spans.key(&self.at), "changed here");
        match &self.fix {
            Some(fix) => error.help(fix.clone()),
            None => error,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Compatible => "compatible",
            Verdict::Breaking => "BREAKING  ",
        };
        write!(f, "{verdict}  {}: {}", self.path(), self.what)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}

fn key(s: &str) -> Seg {
    Seg::Key(s.to_string())
}

/// Every change from `old` to `new`, breaking ones first, each once.
pub fn diff(old: &Published<'_>, new: &Published<'_>) -> Vec<Change> {
    let mut out = Changes::default();
    let (o, n) = (&old.contract, &new.contract);
    if o.saga != n.saga {
        out.breaking(
            vec![key("saga")],
            format!(
                "saga renamed from `{}` to `{}`: every consumer group is renamed and loses its offsets",
                o.saga, n.saga
            ),
            "keep the saga's name; start a new saga beside the old one instead",
        );
    }
    if o.namespace != n.namespace {
        out.breaking(
            vec![key("namespace")],
            format!(
                "namespace changed from `{}` to `{}`: every schema's record names change, and Avro resolves records by name",
                o.namespace, n.namespace
            ),
            "keep the namespace",
        );
    }
    for (topic, partitions) in &o.topics {
        match n.topics.get(topic) {
            None => out.breaking(
                vec![key("topics")],
                format!("topic `{topic}` removed: its messages in flight would never be consumed"),
                "keep the topic until no event travels on it and its messages are consumed",
            ),
            Some(now) if now != partitions => out.breaking(
                vec![key("topics"), key(topic), key("partitions")],
                format!(
                    "topic `{topic}` changes from {partitions} to {now} partitions: that moves the saga keys of sagas in flight, so their events lose their order"
                ),
                format!("keep {partitions} partitions; to grow, create a new topic and move events to it"),
            ),
            Some(_) => {}
        }
    }
    for topic in n.topics.keys().filter(|t| !o.topics.contains_key(*t)) {
        out.compatible(vec![key("topics"), key(topic)], format!("topic `{topic}` added"));
    }
    for (service, group) in &o.groups {
        if let Some(now) = n.groups.get(service)
            && now != group
        {
            out.breaking(
                vec![key("services")],
                format!("the consumer group of `{service}` is renamed from `{group}` to `{now}`: it loses its offsets"),
                "keep the service's and the saga's names",
            );
        }
    }
    for state in &o.states {
        if n.states.contains(state) {
            continue;
        }
        match new.migrations.get(state) {
            Some(to) => out.compatible(
                vec![key("status"), key("migrations"), key(state)],
                format!("state `{state}` removed; sagas in it move to `{to}` when the status owner starts"),
            ),
            None => out.breaking(
                vec![key("status"), key("states")],
                format!("state `{state}` removed (or renamed): sagas in it would be in a state the status owner does not know"),
                format!("add `migrations: {{ {state}: <new state> }}` under `status`"),
            ),
        }
    }
    for state in n.states.iter().filter(|s| !o.states.contains(s)) {
        out.compatible(vec![key("status"), key("states")], format!("state `{state}` added"));
    }
    for (event, was) in &o.events {
        let Some(now) = n.events.get(event) else {
            if was.retired {
                out.compatible(vec![key("events")], format!("retired event `{event}` removed"));
            } else {
                out.breaking(
                    vec![key("events")],
                    format!("event `{event}` removed (or renamed) while it can still be in flight"),
                    "first mark it `retired: true` (nothing publishes it, consumers still handle it) and deploy; \
                     remove it in a later version, once its messages are consumed",
                );
            }
            continue;
        };
        let at = vec![key("events"), key(event)];
        if now.topic != was.topic {
            out.breaking(
                [at.clone(), vec![key("topic")]].concat(),
                format!(
                    "event `{event}` moves from topic `{}` to `{}`: consumers of the old topic miss it",
                    was.topic, now.topic
                ),
                "add a new event on the new topic and retire this one",
            );
        }
        if now.retired && !was.retired {
            out.compatible([at.clone(), vec![key("retired")]].concat(), format!("event `{event}` retired"));
        }
        if let (Some(before), Some(after)) = (old.schemas.get(event), new.schemas.get(event)) {
            Schemas::new(before, after, &mut out).event(event, before, after);
        }
    }
    for event in n.events.keys().filter(|e| !o.events.contains_key(*e)) {
        out.compatible(vec![key("events"), key(event)], format!("event `{event}` added"));
    }
    out.done()
}

#[derive(Default)]
struct Changes {
    list: BTreeSet<Change>,
}

impl Changes {
    fn breaking(&mut self, at: Vec<Seg>, what: String, fix: impl Into<String>) {
        self.list.insert(Change { at, verdict: Verdict::Breaking, what, fix: Some(fix.into()) });
    }

    fn compatible(&mut self, at: Vec<Seg>, what: String) {
        self.list.insert(Change { at, verdict: Verdict::Compatible, what, fix: None });
    }

    fn done(self) -> Vec<Change> {
        let mut list: Vec<Change> = self.list.into_iter().collect();
        list.sort_by(|a, b| (b.verdict, &a.at).cmp(&(a.verdict, &b.at)));
        list
    }
}

/// Compares the old and new schema of one event, field by field.
struct Schemas<'a> {
    old_named: BTreeMap<String, &'a Value>,
    new_named: BTreeMap<String, &'a Value>,
    out: &'a mut Changes,
}

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The named types (records, enums) a schema defines, by short name.
fn named_types<'a>(schema: &'a Value, into: &mut BTreeMap<String, &'a Value>) {
    match schema {
        Value::Object(o) => {
            if let (Some(Value::String(kind)), Some(Value::String(name))) = (o.get("type"), o.get("name"))
                && matches!(kind.as_str(), "record" | "enum" | "fixed")
            {
                let short = name.rsplit('.').next().unwrap_or(name);
                into.entry(short.to_string()).or_insert(schema);
            }
            o.values().for_each(|v| named_types(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| named_types(v, into)),
        _ => {}
    }
}

/// A reference to a named type, as the type it names (a primitive or an inline type as it is).
fn resolve<'a>(named: &BTreeMap<String, &'a Value>, ty: &'a Value) -> &'a Value {
    match ty.as_str() {
        Some(name) if !PRIMITIVES.contains(&name) => named.get(name).copied().unwrap_or(ty),
        _ => ty,
    }
}

impl<'a> Schemas<'a> {
    fn new(old: &'a Value, new: &'a Value, out: &'a mut Changes) -> Self {
        let (mut old_named, mut new_named) = (BTreeMap::new(), BTreeMap::new());
        named_types(old, &mut old_named);
        named_types(new, &mut new_named);
        Schemas { old_named, new_named, out }
    }

    /// The whole message: envelope fields are the generator's, payload fields the spec's.
    fn event(&mut self, event: &str, old: &'a Value, new: &'a Value) {
        let at = vec![key("events"), key(event)];
        let (Some(old_fields), Some(new_fields)) = (old["fields"].as_array(), new["fields"].as_array()) else { return };
        let payload = |fields: &'a [Value]| fields.iter().find(|f| f["name"] == "payload").map(|f| &f["type"]);
        let (old_payload, new_payload) = (payload(old_fields), payload(new_fields));
        let envelope =
            |fields: &'a [Value]| -> Vec<&'a Value> { fields.iter().filter(|f| f["name"] != "payload").collect() };
        self.fields(&at, &envelope(old_fields), &envelope(new_fields), &mut BTreeSet::new());
        if let (Some(o), Some(n)) = (old_payload, new_payload) {
            let (o, n) = (self.resolve_old(o), self.resolve_new(n));
            let fields = |v: &'a Value| -> Vec<&'a Value> {
                v["fields"].as_array().map(|f| f.iter().collect()).unwrap_or_default()
            };
            self.fields(&[at, vec![key("fields")]].concat(), &fields(o), &fields(n), &mut BTreeSet::new());
        }
    }

    fn resolve_old(&self, ty: &'a Value) -> &'a Value {
        resolve(&self.old_named, ty)
    }

    fn resolve_new(&self, ty: &'a Value) -> &'a Value {
        resolve(&self.new_named, ty)
    }

    /// Fields of a record: added, removed, changed. `at` is the record's fields in the spec.
    fn fields(&mut self, at: &[Seg], old: &[&'a Value], new: &[&'a Value], seen: &mut BTreeSet<String>) {
        let name = |f: &Value| f["name"].as_str().unwrap_or_default().to_string();
        for n in new {
            let field = name(n);
            let here = [at, &[key(&field)]].concat();
            match old.iter().find(|o| name(o) == field) {
                None if n.get("default").is_some() => {
                    self.out.compatible(here, format!("field `{field}` added with a default"));
                }
                None => self.out.breaking(
                    here,
                    format!("field `{field}` added without a default: messages written before it lack it"),
                    "give it a default (an optional field defaults to null), or add a new event",
                ),
                Some(o) => self.ty(&here, &field, &o["type"], &n["type"], seen),
            }
        }
        for o in old {
            let field = name(o);
            if new.iter().any(|n| name(n) == field) {
                continue;
            }
            if o.get("default").is_some() {
                self.out.compatible(at.to_vec(), format!("field `{field}` removed; it had a default"));
            } else {
                self.out.breaking(
                    at.to_vec(),
                    format!(
                        "field `{field}` removed without a default: consumers still on the previous version need it"
                    ),
                    "first give it a default and deploy; remove it in a later version",
                );
            }
        }
    }

    /// The type of one field, old against new.
    fn ty(&mut self, at: &[Seg], field: &str, old: &'a Value, new: &'a Value, seen: &mut BTreeSet<String>) {
        let (old, new) = (self.resolve_old(old), self.resolve_new(new));
        let kind = |v: &Value| match v {
            Value::Array(_) => "union".to_string(),
            Value::String(s) => s.clone(),
            Value::Object(o) => {
                match (o.get("type").and_then(Value::as_str), o.get("logicalType").and_then(Value::as_str)) {
                    (Some(t), Some(l)) => format!("{t} ({l})"),
                    (Some(t), None) => t.to_string(),
                    _ => "?".to_string(),
                }
            }
            _ => "?".to_string(),
        };
        let (ko, kn) = (kind(old), kind(new));
        let changed = |out: &mut Changes, why: &str| {
            out.breaking(
                at.to_vec(),
                format!("field `{field}` changes type from {ko} to {kn}: {why}"),
                "add a new field (with a default) beside the old one instead",
            )
        };
        match (old, new) {
            (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
                for (o, n) in o.iter().zip(n) {
                    self.ty(at, field, o, n, seen);
                }
            }
            (Value::Array(_), _) | (_, Value::Array(_)) => {
                let why = if kn == "union" {
                    "consumers still on the previous version cannot read the new branches (e.g. null)"
                } else {
                    "messages in flight may hold a branch the new type lacks (e.g. null)"
                };
                changed(self.out, why)
            }
            _ if ko != kn => changed(self.out, "Avro cannot read one as the other in both directions"),
            (Value::Object(o), Value::Object(n)) => match ko.as_str() {
                "record" => {
                    let (on, nn) = (o["name"].as_str().unwrap_or_default(), n["name"].as_str().unwrap_or_default());
                    if on.rsplit('.').next() != nn.rsplit('.').next() {
                        return changed(self.out, "Avro resolves records by name");
                    }
                    // A named type is compared once, where the spec defines it.
                    if !seen.insert(format!("record {nn}")) {
                        return;
                    }
                    let short = nn.rsplit('.').next().unwrap_or(nn);
                    let fields = |v: &'a Value| -> Vec<&'a Value> {
                        v["fields"].as_array().map(|f| f.iter().collect()).unwrap_or_default()
                    };
                    self.fields(&[key("types"), key(short), key("fields")], &fields(old), &fields(new), seen);
                }
                "enum" => {
                    let symbols = |v: &Value| -> Vec<String> {
                        v["symbols"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    };
                    let name = n["name"].as_str().unwrap_or_default();
                    let short = name.rsplit('.').next().unwrap_or(name);
                    if !seen.insert(format!("enum {short}")) {
                        return;
                    }
                    let here = vec![key("types"), key(short), key("enum")];
                    let (so, sn) = (symbols(old), symbols(new));
                    for gone in so.iter().filter(|s| !sn.contains(s)) {
                        self.out.breaking(
                            here.clone(),
                            format!("symbol `{gone}` removed from enum `{short}`: messages in flight may carry it"),
                            "keep the symbol; stop writing it instead",
                        );
                    }
                    for added in sn.iter().filter(|s| !so.contains(s)) {
                        self.out.compatible(
                            here.clone(),
                            format!(
                                "symbol `{added}` added to enum `{short}` (deploy its readers before anything writes it)"
                            ),
                        );
                    }
                }
                "array" => self.ty(at, field, &o["items"], &n["items"], seen),
                _ => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn published<'a>(schemas: &[(&str, &'a Value)], states: &[&str]) -> Published<'a> {
        let mut contract = Contract {
            saga: "s".into(),
            namespace: "n".into(),
            topics: BTreeMap::from([("t".to_string(), 3)]),
            groups: BTreeMap::from([("a".to_string(), "s.a".to_string())]),
            states: states.iter().map(|s| s.to_string()).collect(),
            events: BTreeMap::new(),
        };
        for (event, _) in schemas {
            contract.events.insert(event.to_string(), ContractEvent { topic: "t".into(), retired: false });
        }
        Published {
            contract,
            schemas: schemas.iter().map(|(e, s)| (e.to_string(), *s)).collect(),
            migrations: BTreeMap::new(),
        }
    }

    fn event(payload: Value) -> Value {
        json!({ "type": "record", "name": "E", "fields": [
            { "name": "event_id", "type": "string" },
            { "name": "payload", "type": { "type": "record", "name": "EPayload", "fields": payload } },
        ] })
    }

    fn verdicts(changes: &[Change]) -> Vec<(Verdict, String)> {
        changes.iter().map(|c| (c.verdict, c.path())).collect()
    }

    #[test]
    fn an_optional_field_with_a_default_is_compatible_a_required_one_is_not() {
        let old = event(json!([{ "name": "a", "type": "int" }]));
        let new = event(json!([
            { "name": "a", "type": "int" },
            { "name": "b", "type": ["null", "string"], "default": null },
            { "name": "c", "type": "string" },
        ]));
        let changes = diff(&published(&[("e", &old)], &[]), &published(&[("e", &new)], &[]));
        assert_eq!(
            verdicts(&changes),
            [
                (Verdict::Breaking, "events.e.fields.c".to_string()),
                (Verdict::Compatible, "events.e.fields.b".to_string())
            ]
        );
    }

    #[test]
    fn removed_fields_changed_types_and_removed_symbols_break() {
        let kind = json!({ "type": "enum", "name": "Kind", "symbols": ["x", "y"] });
        let old = event(json!([
            { "name": "a", "type": "int" },
            { "name": "k", "type": kind },
            { "name": "gone", "type": "string" },
            { "name": "optional_gone", "type": "string", "default": "" },
        ]));
        let new = event(json!([
            { "name": "a", "type": "long" },
            { "name": "k", "type": { "type": "enum", "name": "Kind", "symbols": ["x", "z"] } },
        ]));
        let changes = diff(&published(&[("e", &old)], &[]), &published(&[("e", &new)], &[]));
        let text: Vec<String> = changes.iter().map(Change::to_string).collect();
        assert_eq!(changes.iter().filter(|c| c.verdict == Verdict::Breaking).count(), 3, "{text:#?}");
        assert!(text.iter().any(|t| t.contains("`a` changes type from int to long")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("symbol `y` removed from enum `Kind`")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("field `gone` removed without a default")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("compatible") && t.contains("`optional_gone` removed")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("compatible") && t.contains("symbol `z` added")), "{text:#?}");
    }

    #[test]
    fn partitions_states_events_and_groups() {
        let schema = event(json!([]));
        let old = published(&[("e", &schema), ("f", &schema)], &["a", "b", "c"]);
        let mut new = published(&[("e", &schema)], &["a", "b2"]);
        new.contract.topics.insert("t".into(), 6);
        new.contract.groups.insert("a".into(), "s2.a".into());
        new.migrations.insert("c".into(), "a".into());
        let changes = diff(&old, &new);
        let text: Vec<String> = changes.iter().map(Change::to_string).collect();
        let breaking: Vec<String> =
            changes.iter().filter(|c| c.verdict == Verdict::Breaking).map(Change::path).collect();
        assert_eq!(breaking, ["events", "services", "status.states", "topics.t.partitions"], "{text:#?}");
        assert!(text.iter().any(|t| t.contains("state `b` removed")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("compatible") && t.contains("sagas in it move to `a`")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("compatible") && t.contains("state `b2` added")), "{text:#?}");
    }

    #[test]
    fn a_retired_event_may_be_removed() {
        let schema = event(json!([]));
        let mut old = published(&[("e", &schema)], &[]);
        old.contract.events.get_mut("e").expect("e").retired = true;
        let changes = diff(&old, &published(&[], &[]));
        assert_eq!(verdicts(&changes), [(Verdict::Compatible, "events".to_string())]);
    }

    #[test]
    fn the_same_spec_has_no_changes() {
        let schema = event(json!([{ "name": "a", "type": ["null", "long"], "default": null }]));
        let same = published(&[("e", &schema)], &["a"]);
        assert_eq!(diff(&same, &same), []);
    }
}
