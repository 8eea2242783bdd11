//! The mixed-version model: a rollout from one version of the spec to the next, with old
//! and new versions of the services side by side. `cargo xtask spec diff` proves the order
//! its plan gives and names every other order that is not sound.
//!
//! A rollout replaces the services one by one, in a given order, at any moment of a saga;
//! a saga may begin at any point of it. Each service handles each message by the version
//! it runs when the message reaches it, as the platform does:
//! - a version reads the topics its spec subscribes it to; a message on a topic its version
//!   does not read waits there (a consumer group new to a topic starts at its beginning);
//! - an event its version does not know, or does not subscribe to, on a topic it reads is
//!   skipped: old code resolves the new schema on the schema topic, finds an event it has
//!   no handler for, and commits past it (`saga_runtime::schema_registry`);
//! - a service the version does not have (one being added, before its deployment) reads
//!   nothing;
//! - the status owner moves by the machine of the version it runs; the statuses of both
//!   versions are one list, so a saga the old owner left in a status goes on from there
//!   once the new one runs, or from the status `status.migrations` moves it to.
//!
//! What a saga must do is what either version defines: every saga ends (by the timeouts of
//! the owner's version), a saga that completed holds once every resource of a version
//! that completes it there, any other end holds nothing, and no resource is taken or
//! given back twice. A rollout never goes back: a rollback is a rollout the other way.
//!
//! The saga context: a message carries it when every service on its way copies it, the
//! entry command's version setting it and each reply's version copying it (an old version
//! decodes the event by its own schema and drops it). A reader handles an event without
//! it by the reply `context.without` declares for it, or by any of its declared replies.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use super::explore::{self, Counterexample, Found, System};
use super::model::{Dead, Ix, Model, Record, Step, World};
use crate::ir;

/// A rollout explored, in one order.
#[derive(Debug, Clone)]
pub struct RolloutProof {
    /// The services in the order they were replaced.
    pub order: Vec<String>,
    /// Distinct worlds reached, over every point a saga may begin at.
    pub states: usize,
    pub elapsed: Duration,
    /// What breaks in this order, each with one of its shortest traces; empty when sound.
    pub findings: Vec<RolloutFinding>,
}

impl RolloutProof {
    pub fn sound(&self) -> bool {
        self.findings.is_empty()
    }
}

/// A violation in a rollout: what happens, and a trace that shows it (a Mermaid diagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutFinding {
    pub what: String,
    pub trace: String,
}

impl fmt::Display for RolloutProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.sound() {
            "sound".to_string()
        } else {
            let what: Vec<&str> = self.findings.iter().map(|x| x.what.as_str()).collect();
            format!("not sound: {}", what.join("; "))
        };
        // No time: the plan is snapshot-tested, and `spec diff` prints the total itself.
        write!(f, "{}: {verdict} ({} states)", self.order.join(", then "), self.states)
    }
}

/// Why a rollout could not be modelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("a version has no status machine or no entry command: there is no saga to roll out")]
    NoSaga,
    #[error("the status owner changes from `{0}` to `{1}`: the mixed-version model needs one owner")]
    OwnerChanged(String, String),
    #[error("`{0}` in the rollout order is a service of neither version")]
    UnknownService(String),
    #[error(
        "the resources differ between the versions (an effect changed): the mixed-version model needs the same ones"
    )]
    ResourcesDiffer,
}

/// The names both versions use, in one order: everything of `a`, then what only `b` has.
fn union<T: Clone>(a: &[T], b: &[T], name: impl Fn(&T) -> &str) -> Vec<T> {
    let mut out = a.to_vec();
    out.extend(b.iter().filter(|x| a.iter().all(|y| name(y) != name(x))).cloned());
    out
}

/// `this` version (`first` or `second`), its lists of services, topics, events and statuses
/// made the union of both versions' (`first`'s order first), so the models of both index alike. What
/// only `other` has is added inert: an event nothing here subscribes to, a status with no
/// timeout that nothing here leads to.
fn padded(this: &ir::Saga, first: &ir::Saga, second: &ir::Saga) -> ir::Saga {
    let mut out = this.clone();
    out.services = union(&first.services, &second.services, |s| &s.name);
    out.topics = union(&first.topics, &second.topics, |t| &t.name);
    out.events = union(&first.events, &second.events, |e| &e.name)
        .into_iter()
        .map(|e| match this.event(&e.name) {
            Some(own) => own.clone(),
            None => ir::Event { subscribers: Vec::new(), ..e },
        })
        .collect();
    if let (Some(sm), Some(a), Some(b)) = (out.status.as_mut(), &first.status, &second.status) {
        let own = sm.states.clone();
        sm.states = union(&a.states, &b.states, |s| &s.name)
            .into_iter()
            .map(|s| match own.iter().find(|o| o.name == s.name) {
                Some(o) => o.clone(),
                None => ir::State { timeout: None, ..s },
            })
            .collect();
    }
    out
}

/// The two versions as the explorer steps them.
struct Rollout<'a> {
    old: Model<'a>,
    new: Model<'a>,
    /// The services in the order they are replaced.
    order: Vec<Ix>,
    /// Per version (old, new): per queue, whether that version of its service reads its topic.
    reads: [Vec<bool>; 2],
    /// Per version: per resource, whether that version's spec has it.
    resources: [Vec<bool>; 2],
    /// Every running service answers at once: a timeout fires only when no message can be
    /// delivered, so one that fires waits for a service not running (or reading) yet.
    prompt: bool,
    /// `status.migrations` of the new version: a status the old owner left a saga in that
    /// the new one does not have, and the status it moves to when the new owner starts.
    migrations: Vec<(Ix, Ix)>,
}

impl<'a> Rollout<'a> {
    fn version(&self, world: &World, service: Ix) -> (usize, &Model<'a>) {
        self.version_at(usize::from(world.upgraded), service)
    }

    /// The version `service` runs once the first `upgraded` services of the order run new.
    fn version_at(&self, upgraded: usize, service: Ix) -> (usize, &Model<'a>) {
        if self.order[..upgraded].contains(&service) { (1, &self.new) } else { (0, &self.old) }
    }

    fn owner(&self, world: &World) -> (usize, &Model<'a>) {
        self.version(world, self.new.owner)
    }
}

impl System for Rollout<'_> {
    fn successors(&self, world: &World) -> (Vec<(Step, World)>, Vec<Dead>) {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for service in 0..self.new.services.len() {
            let service = service as Ix;
            let (v, model) = self.version(world, service);
            let queues: Vec<bool> =
                model.queues.iter().enumerate().map(|(q, (_, s))| *s == service && self.reads[v][q]).collect();
            let (steps, d) = model.successors_on(world, &queues, service == model.owner && !self.prompt);
            out.extend(steps);
            dead.extend(d);
        }
        if self.prompt && out.is_empty() && dead.is_empty() {
            // A status that waits for an answer (a transition leads out of it) timing out is
            // the rollout's doing; one whose only way out is its timeout waits by design.
            let (_, owner) = self.owner(world);
            let (steps, _) = owner.successors_on(world, &vec![false; owner.queues.len()], true);
            let waits = owner.transitions.keys().any(|(from, _)| *from == world.sagas[0].status);
            out.extend(steps.into_iter().map(|(step, mut next)| {
                next.timed_out = Some(world.sagas[0].status).filter(|_| waits);
                (step, next)
            }));
        }
        if let Some(&service) = self.order.get(usize::from(world.upgraded)) {
            let mut next = world.clone();
            next.upgraded += 1;
            if service == self.new.owner {
                for saga in &mut next.sagas {
                    if let Some((_, to)) = self.migrations.iter().find(|(from, _)| *from == saga.status) {
                        saga.status = *to;
                    }
                }
            }
            out.push((Step::Upgrade { service }, next));
        }
        (out, dead)
    }

    fn violated(&self, world: &World) -> Option<Found> {
        if let Some(status) = world.timed_out {
            return Some(Found::TimesOut { saga: 0, status });
        }
        explore::violated(self.owner(world).1, world)
    }

    /// Ended as either version defines: completed in a status a version completes in,
    /// holding every resource of that version; otherwise holding nothing.
    fn unfinished(&self, world: &World) -> Option<Found> {
        let (_, owner) = self.owner(world);
        for (s, saga) in world.sagas.iter().enumerate() {
            let status = saga.status;
            if !owner.states[usize::from(status)].terminal {
                return Some(Found::Stuck { saga: s, status });
            }
            let complete = |v: usize, model: &Model<'_>| {
                model.states[usize::from(status)].success
                    && saga.records.iter().zip(&self.resources[v]).all(|(r, has)| !has || *r == Record::Held)
            };
            if complete(0, &self.old) || complete(1, &self.new) {
                continue;
            }
            let missing = saga.records.iter().position(|r| *r != Record::Held);
            let held = saga.records.iter().position(|r| *r == Record::Held);
            let completes =
                self.old.states[usize::from(status)].success || self.new.states[usize::from(status)].success;
            return Some(match (completes, missing, held) {
                (true, Some(r), _) => Found::MissingAtSuccess { saga: s, status, resource: r as Ix },
                (_, _, Some(r)) => Found::HeldAtEnd { saga: s, status, resource: r as Ix },
                _ => continue,
            });
        }
        None
    }

    fn ended(&self, _: &World, _: &mut Vec<(Ix, Ix)>) {}
}

/// Explores the rollout from `old` to `new` (both valid specs) replacing the services in
/// `order` (every service of either version, each once; one left out is never replaced).
pub fn prove(old: &ir::Saga, new: &ir::Saga, order: &[String]) -> Result<RolloutProof, RolloutError> {
    let (Some(o), Some(n)) = (&old.status, &new.status) else { return Err(RolloutError::NoSaga) };
    if o.owner != n.owner {
        return Err(RolloutError::OwnerChanged(o.owner.clone(), n.owner.clone()));
    }
    let old_padded = padded(old, old, new);
    let new_padded = padded(new, old, new);
    let (Some(mut old_model), Some(mut new_model)) = (Model::new(&old_padded), Model::new(&new_padded)) else {
        return Err(RolloutError::NoSaga);
    };
    let names = |m: &Model<'_>| m.resources.iter().map(|r| r.name.to_string()).collect::<Vec<_>>();
    if names(&old_model) != names(&new_model) {
        return Err(RolloutError::ResourcesDiffer);
    }
    // One list of queues for both: a message joins the queue of every service that reads
    // it in either version; which version handles it is decided when it is delivered.
    let mut queues = old_model.queues.clone();
    queues.extend(new_model.queues.iter().filter(|q| !old_model.queues.contains(q)));
    let at = |q: &(Ix, Ix)| queues.iter().position(|x| x == q).expect("a queue of the union");
    let queue_of: Vec<Vec<usize>> = (0..new_model.events.len())
        .map(|e| {
            let mut qs: BTreeSet<usize> = old_model.queue_of[e].iter().map(|q| at(&old_model.queues[*q])).collect();
            qs.extend(new_model.queue_of[e].iter().map(|q| at(&new_model.queues[*q])));
            qs.into_iter().collect()
        })
        .collect();
    let reads = |saga: &ir::Saga| -> Vec<bool> {
        queues
            .iter()
            .map(|(topic, service)| {
                let (topic, service) =
                    (&new_padded.topics[usize::from(*topic)].name, new_model.services[usize::from(*service)]);
                saga.topic_events(topic).any(|e| e.subscribers.iter().any(|s| s.service == service))
            })
            .collect()
    };
    let reads = [reads(old), reads(new)];
    let has = |saga: &ir::Saga| -> Vec<bool> {
        new_model.resources.iter().map(|r| saga.events.iter().any(|e| e.holds() == Some(r.name))).collect()
    };
    let resources = [has(old), has(new)];
    for model in [&mut old_model, &mut new_model] {
        model.queues = queues.clone();
        model.queue_of = queue_of.clone();
        // The reduction knows one version's services; the rollout explores every order.
        model.reduce = false;
        // An old version drops the context (it decodes the event by its own schema), so a
        // reader may get an event without one.
        model.track_context = true;
    }
    let order: Vec<Ix> = order
        .iter()
        .map(|s| {
            new_model
                .services
                .iter()
                .position(|x| x == s)
                .map(|i| i as Ix)
                .ok_or(RolloutError::UnknownService(s.clone()))
        })
        .collect::<Result<_, _>>()?;
    let state = |name: &str| new_model.states.iter().position(|s| s.name == name).map(|i| i as Ix);
    let migrations = n.migrations.iter().filter_map(|m| Some((state(&m.from)?, state(&m.to)?))).collect();
    let mut rollout = Rollout { old: old_model, new: new_model, order, reads, resources, prompt: false, migrations };

    // A saga may begin at any point of the rollout: before it, after each service, after all.
    // Each is explored with participants as slow as can be (timeouts firing at any moment),
    // then with every running one answering at once (timeouts only when nothing else can
    // happen), where a timeout is the rollout's doing.
    let started = Instant::now();
    let mut states = 0;
    let mut findings: Vec<RolloutFinding> = Vec::new();
    for (prompt, k) in [false, true].into_iter().flat_map(|p| (0..=rollout.order.len()).map(move |k| (p, k))) {
        rollout.prompt = prompt;
        let start = World { upgraded: k as u8, ..rollout.version_at(k, rollout.new.owner).1.start(1, 0) };
        match explore::explore(&rollout, start) {
            Ok(seen) => states += seen.states,
            Err(found) => {
                for cx in found {
                    let finding = describe(&rollout, &cx, k);
                    if findings.iter().all(|f| f.what != finding.what) {
                        findings.push(finding);
                    }
                }
            }
        }
    }
    let order = rollout.order.iter().map(|s| rollout.new.services[usize::from(*s)].to_string()).collect();
    Ok(RolloutProof { order, states, elapsed: started.elapsed(), findings })
}

/// A counterexample in the spec's words, for a saga begun once `begun` services were new.
fn describe(rollout: &Rollout<'_>, cx: &Counterexample, begun: usize) -> RolloutFinding {
    let model = &rollout.new;
    let event = |e: Ix| model.saga.events[usize::from(e)].name.as_str();
    let state = |s: Ix| model.states[usize::from(s)].name;
    let resource = |r: Ix| model.resources[usize::from(r)].name;
    let owner = model.services[usize::from(model.owner)];
    let what = match &cx.found {
        Found::Unanswered(u) => {
            format!("`{}` may reach `{owner}` in `{}`, which has no answer for it", event(u.msg.event), state(u.status))
        }
        Found::Blocked(b) => {
            format!("`{}` may wait for `{}` a competitor holds", event(b.msg.event), resource(b.resource))
        }
        Found::WaitsForever { status, .. } => format!("a saga may wait in `{}` forever", state(*status)),
        Found::Stuck { status, .. } => {
            format!("every message is delivered and the saga is still in `{}`", state(*status))
        }
        Found::HeldAtEnd { status, resource: r, .. } => {
            format!("a saga may end `{}` still holding `{}`", state(*status), resource(*r))
        }
        Found::MissingAtSuccess { status, resource: r, .. } => {
            format!("a saga may complete in `{}` without holding `{}`", state(*status), resource(*r))
        }
        Found::Twice { resource: r, released, .. } => {
            format!("a saga may {} `{}` twice", if *released { "give back" } else { "take" }, resource(*r))
        }
        Found::Loops { event: e, .. } => format!("a saga may publish `{}` without end", event(*e)),
        Found::TimesOut { status, .. } => format!(
            "a saga may time out in `{}` during the rollout: the answer it waits for comes from, or goes to, a version that does not send or know it",
            state(*status)
        ),
    };
    let new_before = |trace: &[Step], service: Ix| -> &'static str {
        let upgraded = begun + trace.iter().filter(|s| matches!(s, Step::Upgrade { .. })).count();
        if rollout.order[..upgraded.min(rollout.order.len())].contains(&service) { "(new) " } else { "(old) " }
    };
    let begun_with: Vec<&str> = rollout.order[..begun].iter().map(|s| model.services[usize::from(*s)]).collect();
    let mut trace = if begun_with.is_empty() {
        String::from("a saga begun before the rollout:\n")
    } else {
        format!("a saga begun once {} run the new version:\n", begun_with.join(", "))
    };
    trace.push_str(&super::report::mermaid(model, None, &cx.trace, 1, &new_before));
    RolloutFinding { what, trace }
}

#[cfg(test)]
mod tests {
    //! The rollout that brought the shipping step, from the three-participant saga: what
    //! the mixed-version model finds in which order, and that each finding needs the rule
    //! it is about (the context, a service not yet running).

    use std::path::Path;

    use super::*;

    fn read(rel: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn spec(name: &str, text: &str) -> ir::Saga {
        crate::check(name, text).unwrap_or_else(|e| panic!("{}", e.render()))
    }

    fn order(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn three() -> ir::Saga {
        spec("three", &read("spec/scaling/three-participants.yaml"))
    }

    #[test]
    fn shipping_last_but_one_before_the_order_service_is_sound() {
        let (old, new) = (three(), spec("four", &read("spec/saga.yaml")));
        for o in [["product", "user", "shipping", "order"], ["shipping", "order", "user", "product"]] {
            let proof = prove(&old, &new, &order(&o)).expect("modelled");
            assert!(proof.sound(), "{proof}\n{:?}", proof.findings);
            assert!(proof.states > 1000, "{proof}");
        }
    }

    #[test]
    fn the_order_service_before_shipping_times_sagas_out_in_paid() {
        let (old, new) = (three(), spec("four", &read("spec/saga.yaml")));
        let proof = prove(&old, &new, &order(&["order", "product", "user", "shipping"])).expect("modelled");
        let what: Vec<&str> = proof.findings.iter().map(|f| f.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "a saga may time out in `paid` during the rollout: the answer it waits for comes from, or goes to, a version that does not send or know it"
            ],
            "{proof}"
        );
        let trace = &proof.findings[0].trace;
        assert!(trace.contains("Note over order: the new version is deployed"), "{trace}");
        assert!(trace.contains("(new) timeout, paid → cancelled"), "{trace}");
    }

    #[test]
    fn a_reader_without_a_declared_reply_may_refuse_a_saga_the_old_owner_completed() {
        // Without `context.without`, shipping may refuse a parcel for a saga the old order
        // service completed (it carries no context, so no weight): its refund and release
        // leave the order `completed` with nothing held, in every order.
        let without = "  without:\n    shipping: { payment.completed: shipment.booked }\n";
        let four = read("spec/saga.yaml");
        assert!(four.contains(without));
        let (old, new) = (three(), spec("four, no without", &four.replacen(without, "", 1)));
        let proof = prove(&old, &new, &order(&["product", "user", "shipping", "order"])).expect("modelled");
        assert!(
            proof.findings.iter().any(|f| f.what == "a saga may complete in `completed` without holding `reservation`"),
            "{proof}"
        );
        let trace = &proof.findings[0].trace;
        assert!(trace.contains("Note over shipping: (new) refuses, no shipment"), "{trace}");
    }

    #[test]
    fn a_rollout_that_changes_nothing_is_sound_in_any_order() {
        let saga = three();
        let proof = prove(&saga, &saga, &order(&["user", "order", "product"])).expect("modelled");
        assert!(proof.sound(), "{proof}");
    }

    #[test]
    fn an_unknown_service_in_the_order_is_refused() {
        let saga = three();
        assert_eq!(
            prove(&saga, &saga, &order(&["warehouse"])).map(|p| p.sound()),
            Err(RolloutError::UnknownService("warehouse".into()))
        );
    }
}
