//! What a spec change does to the saga's behaviour, and the order its services must be
//! deployed in: `cargo xtask spec diff` prints both after the compatibility verdicts of
//! [`crate::evolution`].
//!
//! A behaviour change is any difference in who reacts to what and how: the status owner's
//! transitions, parks and timeouts, each subscriber's replies, the compensations and the
//! effects. Each is classified by what the rollout needs:
//! - **any order**: old and new services can run side by side in any mix;
//! - **after** one or more services: the new behaviour relies on something only the new
//!   version of those services does, so they must be deployed first.
//!
//! The deploy order is the order every "after" allows. Two rules make them, and a third
//! says what a mixed rollout looks like:
//! - the status owner entering a state through a new or changed transition waits there for
//!   the events leading out of it: when only new versions of their publishers send every
//!   one of them, those go first (deployed first, the owner's sagas would time out there);
//! - a new event needs its subscribers whose old version reads its topic first: old code
//!   skips an event it does not know (docs/spec-language.md, "Changing a spec safely").
//!   Every publisher registers its writer schemas on the saga's schema topic before it
//!   publishes with them, and a consumer that meets an unknown fingerprint looks it up
//!   there (`saga_runtime::schema_registry`): a new schema of an event old code knows is
//!   resolved to its own, and an event it does not know is skipped, not dead-lettered;
//! - a handler that newly reads the saga context (or reads a changed one) orders nothing:
//!   until every service on the way to it copies the context, the event reaches it
//!   without one, as for a saga begun before the context existed, and its handler takes
//!   an `Option`. The plan names the services it waits for to get it.
//!
//! Beyond these rules, the plan proves how old and new versions behave side by side: the
//! mixed-version model of [`crate::verify::mixed`] explores the rollout in the plan's order
//! and in every other order (an old owner completing a saga that a new participant then
//! compensates, say), and the plan names each order that is not sound, with a trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::ir::{Effect, Saga};
use crate::verify::mixed::{self, RolloutError, RolloutProof};

/// The most services whose every order the plan explores (5! = 120 orders); beyond, only
/// its own order.
const EVERY_ORDER_UP_TO: usize = 5;

/// What a change needs of the rollout.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Needs {
    AnyOrder,
    /// The services whose new version must be running first, and why.
    After {
        first: BTreeSet<String>,
        why: String,
    },
}

/// One difference in behaviour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BehaviourChange {
    /// The service whose behaviour changes (the one to deploy after `needs`).
    pub service: String,
    pub what: String,
    pub needs: Needs,
}

impl fmt::Display for BehaviourChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.needs {
            Needs::AnyOrder => write!(f, "any order  {}: {}", self.service, self.what),
            Needs::After { first, why } => {
                let first: Vec<String> = first.iter().map(|s| format!("`{s}`")).collect();
                write!(f, "after {}  {}: {} ({why})", first.join(", "), self.service, self.what)
            }
        }
    }
}

/// Every behaviour change from `old` to `new`, and the deploy order they need.
#[derive(Debug, Clone)]
pub struct Plan {
    pub changes: Vec<BehaviourChange>,
    /// The services to deploy, in an order every change allows; `Err` with the services
    /// that need each other first (no order works: split the change in two releases).
    pub order: Result<Vec<String>, Vec<String>>,
    /// The mixed-version model explored: the plan's order first, then every other order
    /// (while there are few services); or why it could not be modelled.
    pub proofs: Result<Vec<RolloutProof>, RolloutError>,
}

impl Plan {
    /// Whether the services may be deployed in any order.
    pub fn any_order(&self) -> bool {
        self.changes.iter().all(|c| c.needs == Needs::AnyOrder)
    }

    /// Whether the plan's own order was proved sound in the mixed-version model.
    pub fn proved(&self) -> bool {
        matches!(&self.proofs, Ok(proofs) if proofs.first().is_some_and(RolloutProof::sound))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "{change}")?;
        }
        let every_order_sound = self.proofs.as_ref().map_or(true, |p| p.iter().all(RolloutProof::sound));
        match &self.order {
            _ if self.any_order() && every_order_sound => write!(f, "deploy order: any"),
            Ok(order) => write!(f, "deploy order: {}", order.join(", then ")),
            Err(cycle) => write!(
                f,
                "deploy order: none works, {} each need the other first: split the change into two releases",
                cycle.join(", ")
            ),
        }?;
        let proofs = match &self.proofs {
            Ok(proofs) if !proofs.is_empty() => proofs,
            Ok(_) => return Ok(()),
            Err(why) => return write!(f, "\nmixed versions: not modelled, {why}"),
        };
        let first = &proofs[0];
        let others = &proofs[1..];
        let unsound: Vec<&RolloutProof> = others.iter().filter(|p| !p.sound()).collect();
        write!(
            f,
            "\nmixed versions, old and new side by side: this order is {}",
            if first.sound() { "sound" } else { "NOT sound" }
        )?;
        if !others.is_empty() {
            write!(f, "; of the {} other orders, {} are not", others.len(), unsound.len())?;
        }
        let states: usize = proofs.iter().map(|p| p.states).sum();
        write!(f, " ({states} states)")?;
        for proof in std::iter::once(first).filter(|p| !p.sound()).chain(unsound) {
            write!(f, "\n  {proof}")?;
        }
        if let Some(shown) = std::iter::once(first).chain(others.iter()).find(|p| !p.sound()) {
            let finding = &shown.findings[0];
            write!(f, "\ncounterexample for {}: {}, {}", shown.order.join(", then "), finding.what, finding.trace)?;
        }
        Ok(())
    }
}

/// Who publishes each event in reply to what: `(publisher, event)` pairs a reply, a
/// command or a timeout sends.
fn sent(saga: &Saga) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for e in &saga.events {
        for s in &e.subscribers {
            for r in &s.replies {
                out.insert((s.service.clone(), r.clone()));
            }
        }
    }
    for c in &saga.commands {
        out.insert((c.service.clone(), c.emits.clone()));
    }
    if let Some(sm) = &saga.status {
        for s in &sm.states {
            if let Some(e) = s.timeout.as_ref().and_then(|t| t.emits.clone()) {
                out.insert((sm.owner.clone(), e));
            }
        }
    }
    out
}

/// Every behaviour change from `old` to `new` (both valid specs), with its schemas by
/// event (the JSON each is written with), and the deploy order.
pub fn plan(
    old: &Saga,
    new: &Saga,
    old_schemas: &BTreeMap<String, Value>,
    new_schemas: &BTreeMap<String, Value>,
) -> Plan {
    let mut changes = BTreeSet::new();
    let (sent_before, sent_now) = (sent(old), sent(new));
    let publisher = |saga: &Saga, event: &str| saga.event(event).map(|e| e.publisher.clone());
    // The new publisher of `event`, when the new version sends it and the old did not.
    let newly_sent = |event: &str| {
        let p = publisher(new, event)?;
        (!sent_before.contains(&(p.clone(), event.to_string())) && sent_now.contains(&(p.clone(), event.to_string())))
            .then_some(p)
    };

    for s in new.services.iter().filter(|s| old.services.iter().all(|o| o.name != s.name)) {
        changes.insert(BehaviourChange {
            service: s.name.clone(),
            what: format!("service `{}` added", s.name),
            needs: Needs::AnyOrder,
        });
    }
    for s in old.services.iter().filter(|s| new.services.iter().all(|n| n.name != s.name)) {
        changes.insert(BehaviourChange {
            service: s.name.clone(),
            what: format!("service `{}` removed", s.name),
            needs: Needs::AnyOrder,
        });
    }

    // The status owner's machine.
    if let (Some(o), Some(n)) = (&old.status, &new.status) {
        let owner = &n.owner;
        let transitions = |sm: &crate::ir::StatusMachine| -> BTreeMap<(String, String), String> {
            sm.transitions.iter().map(|t| ((t.from.clone(), t.on.clone()), t.to.clone())).collect()
        };
        let (before, now) = (transitions(o), transitions(n));
        // Entering `to`, the owner waits there for one of the events leading out of it
        // (its timeout aside): when only new publishers send every one of them, those
        // must be running first.
        let waits_for = |to: &str| -> Needs {
            let outs: Vec<&String> = now.keys().filter(|(f, _)| f == to).map(|(_, on)| on).collect();
            let senders: Option<BTreeSet<String>> =
                outs.iter().map(|on| newly_sent(on).filter(|p| p != owner)).collect();
            match senders {
                Some(first) if !outs.is_empty() => {
                    let events: Vec<String> = outs.iter().map(|e| format!("`{e}`")).collect();
                    let who: Vec<String> = first.iter().map(|p| format!("`{p}`")).collect();
                    let why = format!(
                        "in `{to}` it waits for {}, which only the new {} send{}: deployed first, its sagas would time out there",
                        events.join(" or "),
                        who.join(", "),
                        if first.len() == 1 { "s" } else { "" }
                    );
                    Needs::After { first, why }
                }
                _ => Needs::AnyOrder,
            }
        };
        for ((from, on), to) in &now {
            let what = match before.get(&(from.clone(), on.clone())) {
                None => format!("new transition: `{from}` on `{on}` leads to `{to}`"),
                Some(was) if was != to => format!("`{from}` on `{on}` now leads to `{to}` (was `{was}`)"),
                Some(_) => continue,
            };
            changes.insert(BehaviourChange { service: owner.clone(), what, needs: waits_for(to) });
        }
        for ((from, on), to) in &before {
            if !now.contains_key(&(from.clone(), on.clone())) {
                changes.insert(BehaviourChange {
                    service: owner.clone(),
                    what: format!("transition removed: `{from}` on `{on}` led to `{to}`"),
                    needs: Needs::AnyOrder,
                });
            }
        }
        let (parks_before, parks_now): (BTreeSet<_>, BTreeSet<_>) =
            (o.parks.iter().collect(), n.parks.iter().collect());
        for e in parks_now.difference(&parks_before) {
            changes.insert(BehaviourChange {
                service: owner.clone(),
                what: format!("`{e}` may now wait, parked, for the status that accepts it"),
                needs: Needs::AnyOrder,
            });
        }
        for e in parks_before.difference(&parks_now) {
            changes.insert(BehaviourChange {
                service: owner.clone(),
                what: format!("`{e}` is no longer parked"),
                needs: Needs::AnyOrder,
            });
        }
        let timeouts = |sm: &crate::ir::StatusMachine| -> BTreeMap<String, String> {
            sm.states
                .iter()
                .filter_map(|s| {
                    let t = s.timeout.as_ref()?;
                    let emits = t.emits.as_deref().map(|e| format!(", emits `{e}`")).unwrap_or_default();
                    Some((s.name.clone(), format!("after {} ms to `{}`{emits}", t.after_ms, t.to)))
                })
                .collect()
        };
        let (before, now) = (timeouts(o), timeouts(n));
        for (state, rule) in &now {
            let what = match before.get(state) {
                None => format!("new timeout: `{state}` {rule}"),
                Some(was) if was != rule => format!("timeout of `{state}` now {rule} (was {was})"),
                Some(_) => continue,
            };
            changes.insert(BehaviourChange { service: owner.clone(), what, needs: Needs::AnyOrder });
        }
        for (state, rule) in before.iter().filter(|(s, _)| !now.contains_key(*s)) {
            changes.insert(BehaviourChange {
                service: owner.clone(),
                what: format!("timeout of `{state}` removed (was {rule})"),
                needs: Needs::AnyOrder,
            });
        }
    }

    // Who subscribes to what, and what each may reply.
    let replies = |saga: &Saga| -> BTreeMap<(String, String), BTreeSet<String>> {
        saga.events
            .iter()
            .flat_map(|e| {
                e.subscribers.iter().map(|s| ((s.service.clone(), e.name.clone()), s.replies.iter().cloned().collect()))
            })
            .collect()
    };
    let (before, now) = (replies(old), replies(new));
    for ((service, event), rs) in &now {
        match before.get(&(service.clone(), event.clone())) {
            None => {
                changes.insert(BehaviourChange {
                    service: service.clone(),
                    what: format!("now handles `{event}`{}", listed(" and may reply ", rs)),
                    needs: Needs::AnyOrder,
                });
            }
            Some(was) => {
                for r in rs.difference(was) {
                    changes.insert(BehaviourChange {
                        service: service.clone(),
                        what: format!("now may reply `{r}` to `{event}`"),
                        needs: Needs::AnyOrder,
                    });
                }
                for r in was.difference(rs) {
                    changes.insert(BehaviourChange {
                        service: service.clone(),
                        what: format!("no longer replies `{r}` to `{event}`"),
                        needs: Needs::AnyOrder,
                    });
                }
            }
        }
    }
    for (service, event) in before.keys().filter(|k| !now.contains_key(*k)) {
        changes.insert(BehaviourChange {
            service: service.clone(),
            what: format!("no longer handles `{event}`"),
            needs: Needs::AnyOrder,
        });
    }

    // Compensations and effects.
    let comps = |saga: &Saga| -> BTreeMap<(String, String, String), bool> {
        saga.compensations.iter().map(|c| ((c.service.clone(), c.on.clone(), c.undoes.clone()), c.tombstone)).collect()
    };
    let (before, now) = (comps(old), comps(new));
    for ((service, on, undoes), tombstone) in &now {
        let stone = if *tombstone { ", leaving a tombstone if it comes first" } else { "" };
        let what = match before.get(&(service.clone(), on.clone(), undoes.clone())) {
            None => format!("new compensation: on `{on}` it undoes `{undoes}`{stone}"),
            Some(was) if was != tombstone => {
                format!("compensation on `{on}` of `{undoes}` now {}", tombstone_word(*tombstone))
            }
            Some(_) => continue,
        };
        changes.insert(BehaviourChange { service: service.clone(), what, needs: Needs::AnyOrder });
    }
    for (service, on, undoes) in before.keys().filter(|k| !now.contains_key(*k)) {
        changes.insert(BehaviourChange {
            service: service.clone(),
            what: format!("compensation removed: on `{on}` it undid `{undoes}`"),
            needs: Needs::AnyOrder,
        });
    }
    for e in &new.events {
        // A new event's effect is part of it being new.
        let Some(was) = old.event(&e.name).map(|o| o.effect.clone()) else { continue };
        if was != e.effect {
            changes.insert(BehaviourChange {
                service: e.publisher.clone(),
                what: format!("effect of `{}`: {} (was {})", e.name, effect_word(&e.effect), effect_word(&was)),
                needs: Needs::AnyOrder,
            });
        }
    }

    // Schemas: a consumer must know an event before anyone writes it. A new schema of an
    // event it knows is no reason to wait: the publisher registers it on the schema topic
    // before it publishes with it, and the consumer looks it up there.
    for e in &new.events {
        match (old_schemas.get(&e.name), new_schemas.get(&e.name)) {
            (Some(a), Some(b)) if a != b => {
                changes.insert(BehaviourChange {
                    service: e.publisher.clone(),
                    what: format!(
                        "`{}` is written with a new schema (its consumers look it up on the schema topic)",
                        e.name
                    ),
                    needs: Needs::AnyOrder,
                });
            }
            (None, Some(_)) => {
                // Its subscribers whose old version reads the topic: old code skips an event
                // it does not know (its schema learned from the schema topic), so a subscriber
                // deployed after the publisher would miss it. A service that does not
                // subscribe to it skips it in either version; a topic new to a service is
                // read only by its new version.
                let first: BTreeSet<String> = old
                    .events
                    .iter()
                    .filter(|x| x.topic == e.topic)
                    .flat_map(|x| x.subscribers.iter().map(|s| s.service.clone()))
                    .filter(|s| *s != e.publisher && e.subscribers.iter().any(|n| n.service == *s))
                    .collect();
                if !first.is_empty() {
                    let why =
                        format!("they subscribe to it on `{}`, and old code skips an event it does not know", e.topic);
                    changes.insert(BehaviourChange {
                        service: e.publisher.clone(),
                        what: format!("`{}` is new", e.name),
                        needs: Needs::After { first, why },
                    });
                }
            }
            _ => {}
        }
    }

    // The saga context: a reader gets it only once every publisher on the way to it copies
    // it. Until then it gets none, as for a saga begun before the context existed: its
    // handler takes an `Option` and must do without, so this orders nothing; the plan says
    // who the reader waits for to get it.
    let same_context = match (&old.context, &new.context) {
        (Some(a), Some(b)) => a.fields.iter().map(|f| (&f.name, &f.ty)).eq(b.fields.iter().map(|f| (&f.name, &f.ty))),
        (None, None) => true,
        _ => false,
    };
    for read in new.context.iter().flat_map(|c| &c.read_by) {
        let was_read = old.reads_context(&read.service, &read.event);
        if was_read && same_context {
            continue;
        }
        let carriers: Vec<String> = carried_by(new, &read.event)
            .into_iter()
            .filter(|p| *p != read.service && old.services.iter().any(|s| s.name == *p))
            .map(|p| format!("`{p}`"))
            .collect();
        let without = match &read.without {
            Some(reply) => format!(", and replies `{reply}` to them"),
            None => String::new(),
        };
        let what = if carriers.is_empty() {
            format!("reads the saga context on `{}`", read.event)
        } else {
            format!(
                "reads the saga context on `{}` (sagas begun before {} run the new version reach it without one{without})",
                read.event,
                carriers.join(", ")
            )
        };
        changes.insert(BehaviourChange { service: read.service.clone(), what, needs: Needs::AnyOrder });
    }

    let changes: Vec<BehaviourChange> = changes.into_iter().collect();
    let order = deploy_order(new, &changes);
    let proofs = prove_orders(old, new, &order);
    Plan { changes, order, proofs }
}

/// The mixed-version model in the plan's `order` (or in spec order when none works), then
/// in every other order of the services while they are few.
fn prove_orders(
    old: &Saga,
    new: &Saga,
    order: &Result<Vec<String>, Vec<String>>,
) -> Result<Vec<RolloutProof>, RolloutError> {
    let mut services: Vec<String> = new.services.iter().map(|s| s.name.clone()).collect();
    services
        .extend(old.services.iter().filter(|s| new.services.iter().all(|n| n.name != s.name)).map(|s| s.name.clone()));
    let first = match order {
        Ok(order) => order.clone(),
        Err(_) => services.clone(),
    };
    let mut proofs = vec![mixed::prove(old, new, &first)?];
    if services.len() <= EVERY_ORDER_UP_TO {
        for other in permutations(&services).into_iter().filter(|o| *o != first) {
            proofs.push(mixed::prove(old, new, &other)?);
        }
    }
    Ok(proofs)
}

/// Every order of `items`.
fn permutations(items: &[String]) -> Vec<Vec<String>> {
    if items.is_empty() {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            out.push(tail);
        }
    }
    out
}

/// The services that publish `event` or an event on a path of replies to it from the
/// entry command: those whose code passes the saga context on to it.
fn carried_by(saga: &Saga, event: &str) -> BTreeSet<String> {
    let mut publishers = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![event.to_string()];
    while let Some(e) = todo.pop() {
        if !seen.insert(e.clone()) {
            continue;
        }
        let Some(ev) = saga.event(&e) else { continue };
        publishers.insert(ev.publisher.clone());
        for cause in saga.events.iter().filter(|c| c.subscribers.iter().any(|s| s.replies.contains(&e))) {
            todo.push(cause.name.clone());
        }
    }
    publishers
}

fn listed(prefix: &str, items: &BTreeSet<String>) -> String {
    if items.is_empty() {
        return String::new();
    }
    let items: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    format!("{prefix}{}", items.join(", "))
}

fn tombstone_word(tombstone: bool) -> &'static str {
    if tombstone { "leaves a tombstone if it comes first" } else { "leaves no tombstone" }
}

fn effect_word(effect: &Option<Effect>) -> String {
    match effect {
        None => "none declared".into(),
        Some(Effect::Holds(r)) => format!("holds `{r}`"),
        Some(Effect::Releases(r)) => format!("releases `{r}`"),
        Some(Effect::Nothing) => "`none`".into(),
    }
}

/// The services of `saga` in an order where each comes after every service its changes
/// need first (a topological order, ties in spec order); `Err` with the services on a
/// cycle.
fn deploy_order(saga: &Saga, changes: &[BehaviourChange]) -> Result<Vec<String>, Vec<String>> {
    let names: Vec<&str> = saga.services.iter().map(|s| s.name.as_str()).collect();
    let mut before: BTreeMap<&str, BTreeSet<&str>> = names.iter().map(|n| (*n, BTreeSet::new())).collect();
    for c in changes {
        if let Needs::After { first, .. } = &c.needs {
            for f in first.iter().filter(|f| **f != c.service) {
                if let (Some(deps), Some(f)) = (before.get_mut(c.service.as_str()), names.iter().find(|n| *n == f)) {
                    deps.insert(f);
                }
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    while order.len() < names.len() {
        let next = names
            .iter()
            .find(|n| !order.iter().any(|o| o == *n) && before[**n].iter().all(|d| order.iter().any(|o| o == d)));
        match next {
            Some(n) => order.push(n.to_string()),
            None => {
                return Err(names.iter().filter(|n| !order.iter().any(|o| o == *n)).map(|n| n.to_string()).collect());
            }
        }
    }
    Ok(order)
}
