//! `events:` each event's topic, publisher, subscribers and their replies, and payload.

use super::types::fields_of;
use super::{Cx, Names, occurrences};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;
use crate::spans::Span;

pub(super) fn check(cx: &mut Cx<'_>, spec: &parse::Spec, names: &Names<'_>) -> Vec<ir::Event> {
    cx.duplicates("event", occurrences(cx, "events", &spec.events));
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
        if !names.topics.contains(&e.topic.as_str()) {
            let at = cx.val(&path!["events", name, "topic"]);
            cx.unknown("topic", &e.topic, at, &names.topics);
        }
        if !names.services.contains(&e.publisher.as_str()) {
            let at = cx.val(&path!["events", name, "publisher"]);
            cx.unknown("service", &e.publisher, at, &names.services);
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
        let subscribers = subscribers(cx, spec, name, e, names);
        if e.subscribers.0.is_empty() && !e.external {
            cx.err(
                SpecError::new("spec::no_subscriber", format!("event `{name}` has no subscriber"))
                    .label(at, "nobody consumes this event")
                    .help("add a subscriber, or mark it `external: true` if it is consumed outside the saga"),
            );
        }
        let fields = fields_of(cx, &base, &e.fields, names);
        let effect = effect(cx, name, e, failure);
        events.push(ir::Event {
            name: name.clone(),
            topic: e.topic.clone(),
            publisher: e.publisher.clone(),
            doc: e.doc.clone(),
            failure,
            external: e.external,
            retired: e.retired,
            subscribers,
            fields,
            effect,
            loc: at,
        });
    }
    held_once_and_released_by_holder(cx, spec);
    events
}

/// `effect:` exactly one of `holds` and `releases`, naming a resource, or `none`; a failure
/// outcome changed nothing, so it holds nothing.
fn effect(cx: &mut Cx<'_>, name: &str, e: &parse::EventSpec, failure: bool) -> Option<ir::Effect> {
    let spec = e.effect.as_ref()?;
    let at = cx.val(&path!["events", name, "effect"]);
    let effect = match (&spec.holds, &spec.releases, spec.none, &spec.word) {
        (Some(r), None, false, None) => ir::Effect::Holds(r.clone()),
        (None, Some(r), false, None) => ir::Effect::Releases(r.clone()),
        (None, None, true, None) => return Some(ir::Effect::Nothing),
        _ => {
            cx.err(
                SpecError::new("spec::bad_effect", format!("event `{name}` must hold or release one resource, or say `none`"))
                    .label(at, "give exactly one of `holds` and `releases`, or `none`")
                    .help("`effect: { holds: reservation }` for a step, `effect: { releases: reservation }` for its undoing, `effect: none` for a success that holds nothing"),
            );
            return None;
        }
    };
    let (ir::Effect::Holds(resource) | ir::Effect::Releases(resource)) = &effect else { return Some(effect) };
    super::check_ident(cx, "resource", resource, at);
    if failure && matches!(effect, ir::Effect::Holds(_)) {
        cx.err(
            SpecError::new("spec::bad_effect", format!("failure outcome `{name}` holds `{resource}`"))
                .label(at, "marked `outcome: failure`, which changed nothing")
                .help("a failure holds nothing: drop the effect, or the `outcome: failure`"),
        );
    }
    Some(effect)
}

/// One event holds each resource, and only its publisher gives it back.
fn held_once_and_released_by_holder(cx: &mut Cx<'_>, spec: &parse::Spec) {
    let mut holders: std::collections::BTreeMap<&str, (&str, &str, Span)> = Default::default();
    for (name, e) in &spec.events.0 {
        let Some(r) = e.effect.as_ref().and_then(|x| x.holds.as_deref()) else { continue };
        let at = cx.val(&path!["events", name, "effect"]);
        if let Some((first, _, first_at)) = holders.insert(r, (name, &e.publisher, at)) {
            cx.err(
                SpecError::new("spec::bad_effect", format!("`{r}` is held by both `{first}` and `{name}`"))
                    .label(first_at, "held here")
                    .label(at, "and again here")
                    .help("each resource is held by one event; name the resources apart"),
            );
        }
    }
    for (name, e) in &spec.events.0 {
        let Some(r) = e.effect.as_ref().and_then(|x| x.releases.as_deref()) else { continue };
        let at = cx.val(&path!["events", name, "effect"]);
        match holders.get(r) {
            None => cx.err(
                SpecError::new("spec::bad_effect", format!("`{name}` releases `{r}`, which no event holds"))
                    .label(at, "nothing holds this")
                    .help(format!("declare `effect: {{ holds: {r} }}` on the event that takes it")),
            ),
            Some((holder, publisher, _)) if *publisher != e.publisher => cx.err(
                SpecError::new(
                    "spec::bad_effect",
                    format!(
                        "`{name}` releases `{r}`, held by `{publisher}` (through `{holder}`), not by `{}`",
                        e.publisher
                    ),
                )
                .label(at, "a service can only give back what it holds")
                .help(format!("let `{publisher}` publish the release")),
            ),
            Some(_) => {}
        }
    }
}

/// The services event `name` is delivered to, and what each may publish in reply.
fn subscribers(
    cx: &mut Cx<'_>,
    spec: &parse::Spec,
    name: &str,
    e: &parse::EventSpec,
    names: &Names<'_>,
) -> Vec<ir::Subscriber> {
    let sub_at: Vec<(&str, Span)> =
        e.subscribers.0.iter().map(|(s, _)| (s.as_str(), cx.key(&path!["events", name, "subscribers", s]))).collect();
    cx.duplicates("subscriber", sub_at);
    let mut subscribers = Vec::new();
    for (svc, replies) in &e.subscribers.0 {
        let sp = path!["events", name, "subscribers", svc];
        if !names.services.contains(&svc.as_str()) {
            let at = cx.key(&sp);
            cx.unknown("service", svc, at, &names.services);
        }
        let replies = replies.clone().unwrap_or_default();
        for (i, r) in replies.iter().enumerate() {
            let rat = cx.val(&path!["events", name, "subscribers", svc, i]);
            match spec.events.0.iter().find(|(n, _)| n == r) {
                None => cx.unknown("event", r, rat, &names.events),
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
    subscribers
}

/// Every event must have a way to be published: a command, a reply or a timeout.
pub(super) fn check_published(cx: &mut Cx<'_>, spec: &parse::Spec) {
    // A retired event is published by nothing on purpose (see `unpublished_retired_events`).
    for (name, _) in spec.events.0.iter().filter(|(_, e)| !e.retired) {
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
                    .help("list it in a subscriber's replies, a command's `emits` or a timeout's `emits`, or mark it `retired: true` if it is on its way out"),
            );
        }
    }
}
