//! `status:` the status machine of the saga: its states, the transitions events trigger,
//! and the timeout that gets each non-terminal state moving again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Cx, Names, check_ident, duration_ms};
use crate::diagnostics::SpecError;
use crate::ir;
use crate::parse;
use crate::path;
use crate::spans::Span;

pub(super) fn check(
    cx: &mut Cx<'_>,
    st: &parse::StatusSpec,
    spec: &parse::Spec,
    names: &Names<'_>,
) -> ir::StatusMachine {
    let owner_at = cx.val(&path!["status", "owner"]);
    if !names.services.contains(&st.owner.as_str()) {
        cx.unknown("service", &st.owner, owner_at, &names.services);
    }
    let state_spans: Vec<Span> = (0..st.states.len()).map(|i| cx.val(&path!["status", "states", i])).collect();
    cx.duplicates("state", st.states.iter().map(String::as_str).zip(state_spans.iter().copied()));
    for (s, at) in st.states.iter().zip(&state_spans) {
        check_ident(cx, "state", s, *at);
    }
    let states: Vec<&str> = st.states.iter().map(String::as_str).collect();

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
    transitions(cx, st, spec, names, &states);
    let timeouts = timeouts(cx, st, spec, names, &states);

    // A non-terminal state without a timeout is for `verify` to judge: it shows the path to
    // it, and the participant that never answers there.
    if states.contains(&st.initial.as_str()) {
        let reached = reachable(st, &timeouts);
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
        migrations: migrations(cx, st, &states),
        parks: parks(cx, st),
    }
}

/// `status.parks`: replies that may wait, parked, for a status that accepts them; each must
/// trigger a transition (the only thing a parked event waits for).
fn parks(cx: &mut Cx<'_>, st: &parse::StatusSpec) -> Vec<String> {
    let at: Vec<Span> = (0..st.parks.len()).map(|i| cx.val(&path!["status", "parks", i])).collect();
    cx.duplicates("parked event", st.parks.iter().map(String::as_str).zip(at.iter().copied()));
    for (event, at) in st.parks.iter().zip(at) {
        if !st.transitions.iter().any(|t| t.on == *event) {
            cx.err(
                SpecError::new("spec::bad_park", format!("`{event}` is parked, but no transition waits for it"))
                    .label(at, "no transition of `status.transitions` is on this event")
                    .help(
                        "a parked event waits for a status that accepts it: park only events that trigger a transition",
                    ),
            );
        }
    }
    st.parks.clone()
}

/// `status.migrations`: each moves the orders of a state the spec no longer has into one it has.
fn migrations(cx: &mut Cx<'_>, st: &parse::StatusSpec, states: &[&str]) -> Vec<ir::Migration> {
    let mut out = Vec::new();
    for (from, to) in &st.migrations.0 {
        let from_at = cx.key(&path!["status", "migrations", from]);
        if states.contains(&from.as_str()) {
            cx.err(
                SpecError::new("spec::bad_migration", format!("migration from `{from}`, a state the spec still has"))
                    .label(from_at, "still listed under `status.states`")
                    .help("a migration moves the orders of a removed state; remove the state, or this migration"),
            );
            continue;
        }
        if !states.contains(&to.as_str()) {
            let to_at = cx.val(&path!["status", "migrations", from]);
            cx.unknown("state", to, to_at, states);
            continue;
        }
        out.push(ir::Migration { from: from.clone(), to: to.clone() });
    }
    out
}

fn transitions(cx: &mut Cx<'_>, st: &parse::StatusSpec, spec: &parse::Spec, names: &Names<'_>, states: &[&str]) {
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
                cx.unknown("state", s, at, states);
            }
        }
        if !names.events.contains(&t.on.as_str()) {
            cx.unknown("event", &t.on, on_at, &names.events);
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
            let at = st
                .states
                .iter()
                .position(|x| *x == t.from)
                .map(|i| cx.val(&path!["status", "states", i]))
                .unwrap_or_default();
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
}

/// The timeouts by state.
fn timeouts<'s>(
    cx: &mut Cx<'_>,
    st: &'s parse::StatusSpec,
    spec: &parse::Spec,
    names: &Names<'_>,
    states: &[&str],
) -> BTreeMap<&'s str, ir::Timeout> {
    let mut timeouts = BTreeMap::new();
    for (state, t) in &st.timeouts.0 {
        let key_at = cx.key(&path!["status", "timeouts", state]);
        if !states.contains(&state.as_str()) {
            cx.unknown("state", state, key_at, states);
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
            cx.unknown("state", &t.to, to_at, states);
        }
        if let Some(ev) = &t.emits {
            let at = cx.val(&path!["status", "timeouts", state, "emits"]);
            match spec.events.0.iter().find(|(n, _)| n == ev) {
                None => cx.unknown("event", ev, at, &names.events),
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
    timeouts
}

/// The states reachable from the initial one over transitions and timeouts.
fn reachable<'a>(st: &'a parse::StatusSpec, timeouts: &'a BTreeMap<&str, ir::Timeout>) -> BTreeSet<&'a str> {
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
    reached
}
