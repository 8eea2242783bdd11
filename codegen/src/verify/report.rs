//! A counterexample as a diagnostic: what went wrong, labelled at the spec lines involved,
//! how to fix it, and the trace as a Mermaid sequence diagram whose every line names the
//! spec line it comes from (`line:column`).

use std::fmt::Write;

use super::explore::{Counterexample, Found};
use super::model::{Ix, Model, Outcome, Step};
use crate::diagnostics::SpecError;
use crate::path;
use crate::spans::{Span, SpanMap};

/// The spec's places, by what they declare.
pub(super) struct Places<'a> {
    spans: SpanMap,
    source: &'a str,
}

impl Places<'_> {
    fn event(&self, name: &str) -> Span {
        self.spans.key(&path!["events", name])
    }
    fn effect(&self, event: &str) -> Span {
        self.spans.value(&path!["events", event, "effect"])
    }
    fn state(&self, status: Ix) -> Span {
        self.spans.value(&path!["status", "states", usize::from(status)])
    }
    fn transition(&self, i: usize) -> Span {
        self.spans.value(&path!["status", "transitions", i])
    }
    fn timeout(&self, state: &str) -> Span {
        self.spans.key(&path!["status", "timeouts", state])
    }
    fn compensation(&self, i: usize) -> Span {
        self.spans.value(&path!["compensations", i])
    }
    /// `line:column` of a place, 1-based.
    fn at(&self, span: Span) -> String {
        let before = &self.source[..span.offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        format!("{line}:{column}")
    }
}

pub(super) fn diagnostic(model: &Model<'_>, cx: &Counterexample, sagas: usize, source: &str) -> SpecError {
    let places = Places { spans: SpanMap::read(source).unwrap_or_default(), source };
    let event = |e: Ix| model.saga.events[usize::from(e)].name.as_str();
    let state = |s: Ix| model.states[usize::from(s)].name;
    let resource = |r: Ix| model.resources[usize::from(r)].name;
    let holder = |r: Ix| event(model.resources[usize::from(r)].holder);
    let owner = model.services[usize::from(model.owner)];
    let error = match &cx.found {
        Found::Unanswered(u) => SpecError::new(
            "verify::unanswered",
            format!("`{}` may reach `{owner}` in `{}`, which has no answer for it", event(u.msg.event), state(u.status)),
        )
        .label(places.state(u.status), "no transition from here on it, and it is not parked")
        .see(places.event(event(u.msg.event)), format!("`{}` is declared here", event(u.msg.event)), "this event")
        .help(format!(
            "add a transition from `{}` on `{}`, or list it under `status.parks` if it may come before the status that accepts it",
            state(u.status),
            event(u.msg.event)
        )),
        Found::Blocked(b) => {
            let (request, service) = (event(b.msg.event), model.services[usize::from(model.queues[b.queue].1)]);
            SpecError::new(
                "verify::blocked",
                format!(
                    "`{request}` may reach `{service}` while a competing saga holds `{}`, and every reply it may send takes `{}`",
                    resource(b.resource),
                    resource(b.resource)
                ),
            )
            .label(places.event(request), format!("`{service}` has no reply here that does not take `{}`", resource(b.resource)))
            .see(places.effect(holder(b.resource)), format!("`{}` takes `{}`", holder(b.resource), resource(b.resource)), "taken here")
            .help(format!(
                "declare a failure reply (`outcome: failure`) among `{service}`'s replies to `{request}`, so it can refuse when `{}` is taken; otherwise the saga waits for as long as the competitor holds it",
                resource(b.resource)
            ))
        }
        Found::WaitsForever { status, .. } => SpecError::new(
            "verify::waits_forever",
            format!("a saga may wait in `{}` forever: if no reply comes, nothing moves it", state(*status)),
        )
        .label(places.state(*status), "no timeout leads from here to a terminal state")
        .help(format!(
            "add `{}: {{ after: 30s, to: <state>, emits: <event> }}` under `status.timeouts`, or make it terminal",
            state(*status)
        )),
        Found::Stuck { status, .. } => SpecError::new(
            "verify::stuck",
            format!("every message is delivered and the saga is still in `{}`", state(*status)),
        )
        .label(places.state(*status), "not terminal")
        .help("give this state a transition or a timeout that ends the saga"),
        Found::HeldAtEnd { saga, status, resource: r } => {
            let error = SpecError::new(
                "verify::held_at_end",
                format!("a saga may end `{}` still holding `{}`", state(*status), resource(*r)),
            )
            .see(places.state(*status), format!("`{}` ends the saga", state(*status)), "ends here");
            match early_compensation(cx, *saga, *r) {
                Some(comp) => error
                    .label(places.compensation(comp), "came before the request it undoes, and left nothing behind")
                    .see(places.effect(holder(*r)), format!("`{}` takes `{}`", holder(*r), resource(*r)), "taken here")
                    .help(
                        "add `tombstone: true` to this compensation, so the request does nothing when it comes after it (and its handler must honour the tombstone)",
                    ),
                None => error.label(places.effect(holder(*r)), format!("`{}` takes it, and nothing gives it back", holder(*r))).help(format!(
                    "add a compensation that undoes `{}` on the event that ends the saga in `{}`: `{{ on: {}, service: {}, undoes: {} }}`",
                    holder(*r),
                    state(*status),
                    ending_event(model, cx, *saga).unwrap_or("<event>"),
                    model.services[usize::from(model.events[usize::from(model.resources[usize::from(*r)].holder)].publisher)],
                    holder(*r)
                )),
            }
        }
        Found::MissingAtSuccess { status, resource: r, .. } => SpecError::new(
            "verify::completed_without",
            format!("a saga may complete in `{}` without holding `{}`", state(*status), resource(*r)),
        )
        .label(places.state(*status), "completes here")
        .see(places.effect(holder(*r)), format!("`{}` takes `{}`", holder(*r), resource(*r)), "taken here")
        .help(format!("let the transitions into `{}` follow `{}`", state(*status), holder(*r))),
        Found::Twice { resource: r, released, .. } => SpecError::new(
            "verify::effect_twice",
            format!("a saga may {} `{}` twice", if *released { "give back" } else { "take" }, resource(*r)),
        )
        .label(places.effect(holder(*r)), "this effect")
        .help("each resource is taken once per saga and given back at most once"),
        Found::Loops { event: e, .. } => SpecError::new(
            "verify::loops",
            format!("a saga may publish `{}` without end", event(*e)),
        )
        .label(places.event(event(*e)), "published again and again")
        .help("break the cycle of states that publishes it"),
        // Only a rollout's model finds it, and it reports it itself (`mixed::describe`).
        Found::TimesOut { status, .. } => SpecError::new(
            "verify::times_out",
            format!("a saga may time out in `{}` waiting for a service that does not run yet", state(*status)),
        )
        .label(places.state(*status), "times out here"),
    };
    let mut note = format!(
        "counterexample ({} saga{}, {} step{}):\n",
        sagas,
        if sagas == 1 { "" } else { "s" },
        cx.trace.len(),
        if cx.trace.len() == 1 { "" } else { "s" }
    );
    note.push_str(&mermaid(model, Some(&places), &cx.trace, sagas, &|_, _| ""));
    error.note(note)
}

/// The warning for a participant's success `event` that declares no effect, published by a
/// saga that then ended unsuccessfully in `status`.
pub(super) fn undeclared(model: &Model<'_>, event: Ix, status: Ix, source: &str) -> SpecError {
    let places = Places { spans: SpanMap::read(source).unwrap_or_default(), source };
    let name = model.saga.events[usize::from(event)].name.as_str();
    let publisher = model.services[usize::from(model.events[usize::from(event)].publisher)];
    let end = model.states[usize::from(status)].name;
    SpecError::warning(
        "verify::undeclared_effect",
        format!("`{name}` succeeds without a declared effect, and a saga may still end `{end}` after it"),
    )
    .label(places.event(name), format!("what `{publisher}` did here is never undone if the saga fails later"))
    .see(places.state(status), format!("`{end}` ends the saga unsuccessfully"), "ends here")
    .help(format!(
        "if `{name}` takes something (a booking, a reservation), declare `effect: {{ holds: <resource> }}` and a compensation that undoes it, so the proof checks it is given back; if it takes nothing, declare `effect: none`"
    ))
}

/// The compensation of `resource` that found nothing to undo in `saga`: it overtook the
/// request.
fn early_compensation(cx: &Counterexample, saga: usize, resource: Ix) -> Option<usize> {
    cx.trace.iter().find_map(|step| match step {
        Step::Deliver { saga: s, outcomes, .. } if *s == saga => outcomes.iter().find_map(|o| match o {
            Outcome::NothingToUndo { resource: r, comp } if *r == resource => Some(*comp),
            _ => None,
        }),
        _ => None,
    })
}

/// The event that ended `saga` in the trace: what its timeout emitted, or what moved it last.
fn ending_event<'m>(model: &Model<'m>, cx: &Counterexample, saga: usize) -> Option<&'m str> {
    let name = |e: Ix| model.saga.events[usize::from(e)].name.as_str();
    cx.trace.iter().rev().find_map(|step| match step {
        Step::Timeout { saga: s, emits, .. } if *s == saga => emits.map(name),
        Step::Deliver { saga: s, msg, outcomes, .. }
            if *s == saga && outcomes.iter().any(|o| matches!(o, Outcome::Moved { .. })) =>
        {
            Some(name(msg.event))
        }
        _ => None,
    })
}

/// The trace as a Mermaid sequence diagram: a delivery is an arrow from the publisher to
/// the subscriber, what the handler did a note over it, each with the spec line it comes
/// from when `places` are given (a rollout's trace runs two specs, and names none).
/// `version` says which version of a service handled a step, for a rollout's trace.
pub(super) fn mermaid(
    model: &Model<'_>,
    places: Option<&Places<'_>>,
    trace: &[Step],
    sagas: usize,
    version: &dyn Fn(&[Step], Ix) -> &'static str,
) -> String {
    let event = |e: Ix| model.saga.events[usize::from(e)].name.as_str();
    let state = |s: Ix| model.states[usize::from(s)].name;
    let resource = |r: Ix| model.resources[usize::from(r)].name;
    let tag = |s: usize| if sagas == 1 { String::new() } else { format!("saga {}: ", s + 1) };
    let at = |place: &dyn Fn(&Places<'_>) -> Span| places.map(|p| format!(" ({})", p.at(place(p)))).unwrap_or_default();
    let mut out = String::from("```mermaid\nsequenceDiagram\n");
    for s in &model.services {
        let _ = writeln!(out, "    participant {s}");
    }
    for (i, step) in trace.iter().enumerate() {
        let before = &trace[..i];
        match step {
            Step::Deliver { saga, queue, msg, outcomes, replies } => {
                let ev = &model.events[usize::from(msg.event)];
                let from = model.services[usize::from(ev.publisher)];
                let service = model.queues[*queue].1;
                let to = model.services[usize::from(service)];
                let name = event(msg.event);
                let _ = writeln!(out, "    {from}->>{to}: {}{name}{}", tag(*saga), at(&|p| p.event(name)));
                let mut did: Vec<String> = outcomes
                    .iter()
                    .filter(|o| **o != Outcome::Nothing || outcomes.len() == 1)
                    .map(|o| match o {
                        Outcome::Duplicate => "a duplicate, the inbox drops it".to_string(),
                        Outcome::Moved { from, to, transition } => {
                            format!("{} → {}{}", state(*from), state(*to), at(&|p| p.transition(*transition)))
                        }
                        Outcome::Unparked { from, to, transition, event: e } => format!(
                            "parked {} applied: {} → {}{}",
                            event(*e),
                            state(*from),
                            state(*to),
                            at(&|p| p.transition(*transition))
                        ),
                        Outcome::Parked { status } => format!("parked in {}", state(*status)),
                        Outcome::Late { status } => format!("late, ignored in {}", state(*status)),
                        Outcome::Recorded => "recorded".to_string(),
                        Outcome::Holds(r) => format!("takes {}", resource(*r)),
                        Outcome::Refuses(r) => format!("refuses, no {}", resource(*r)),
                        Outcome::Releases { resource: r, comp } => {
                            format!("gives back {}{}", resource(*r), at(&|p| p.compensation(*comp)))
                        }
                        Outcome::NothingToUndo { resource: r, comp } => {
                            format!("no {} to give back, no tombstone{}", resource(*r), at(&|p| p.compensation(*comp)))
                        }
                        Outcome::Tombstone { resource: r, comp } => {
                            format!("no {}: leaves a tombstone{}", resource(*r), at(&|p| p.compensation(*comp)))
                        }
                        Outcome::AlreadyDecided(r) => format!("{} already decided, does nothing", resource(*r)),
                        Outcome::Nothing => "handled".to_string(),
                        Outcome::DeadLettered => "no declared answer: dead-lettered".to_string(),
                    })
                    .collect();
                if outcomes.is_empty() {
                    did.push("no declared answer".to_string());
                }
                if !replies.is_empty() {
                    did.push(format!("publishes {}", replies.iter().map(|r| event(*r)).collect::<Vec<_>>().join(", ")));
                }
                let _ = writeln!(
                    out,
                    "    Note over {to}: {}{}{}",
                    tag(*saga),
                    version(before, service),
                    did.join(", then ")
                );
            }
            Step::Timeout { saga, from, to, emits } => {
                let owner = model.services[usize::from(model.owner)];
                let publishes = emits.map(|e| format!(", publishes {}", event(e))).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    Note over {owner}: {}{}timeout, {} → {}{}{publishes}",
                    tag(*saga),
                    version(before, model.owner),
                    state(*from),
                    state(*to),
                    at(&|p| p.timeout(state(*from)))
                );
            }
            Step::Redeliver { saga, queue, msg } => {
                let ev = &model.events[usize::from(msg.event)];
                let from = model.services[usize::from(ev.publisher)];
                let to = model.services[usize::from(model.queues[*queue].1)];
                let _ = writeln!(
                    out,
                    "    Note over {from},{to}: {}{} will be delivered again",
                    tag(*saga),
                    event(msg.event)
                );
            }
            Step::Upgrade { service } => {
                let _ = writeln!(
                    out,
                    "    Note over {}: the new version is deployed",
                    model.services[usize::from(*service)]
                );
            }
        }
    }
    out.push_str("```\n");
    out
}
