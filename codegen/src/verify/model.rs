//! The saga as a transition system: what each service does with each event, by the spec
//! alone. A [`World`] is one moment of one or more sagas: the owner's status, the messages
//! in flight to each consumer group, what each participant holds, the inboxes.
//!
//! The semantics are the platform's contract, which the generated code and the runtime keep:
//! - a consumer group handles one event id once (the inbox, in the handler's transaction),
//!   so a redelivered message changes nothing; a crash between transactions loses nothing
//!   and only redelivers, so it is the same step;
//! - one saga's messages on one topic reach each subscriber in publication order (one
//!   partition); messages on different topics interleave freely;
//! - the status owner moves on a declared transition, parks a declared early reply until a
//!   status accepts it, ignores a late reply once the saga ended, and records an event no
//!   transition is on; anything else has no declared answer;
//! - a participant decides once per saga and resource: a request it answers holds the
//!   resource (when a unit is free) or fails; a compensation gives back what is held, or,
//!   arriving first, leaves a tombstone if the spec says so; afterwards both do nothing.

use std::collections::BTreeMap;

use crate::ir;

pub(super) type Ix = u8;

/// The spec, indexed for the explorer.
pub(super) struct Model<'a> {
    pub saga: &'a ir::Saga,
    pub services: Vec<&'a str>,
    pub owner: Ix,
    pub events: Vec<Ev>,
    pub resources: Vec<Resource<'a>>,
    pub states: Vec<St<'a>>,
    pub initial: Ix,
    /// The event the entry command publishes.
    pub start: Ix,
    /// `(status, event)` -> `(to, index in status.transitions)`.
    pub transitions: BTreeMap<(Ix, Ix), (Ix, usize)>,
    /// One FIFO per (topic, subscriber): `queue_of[event][k]` for its k-th subscriber.
    pub queues: Vec<(Ix, Ix)>,
    pub queue_of: Vec<Vec<usize>>,
    /// Whether a competing saga is modelled ([`Blocked`]) rather than explored beside.
    pub competitor: bool,
    /// What the partial-order reduction ([`Model::ample`]) knows of each service.
    pub units: Vec<Unit>,
    /// Whether to reduce at all (the tests compare with the full exploration).
    pub reduce: bool,
    /// Whether the spec has a saga context, which each reply copies from its cause.
    pub has_context: bool,
    /// Whether messages tell if they carry the context: only in a rollout, where an old
    /// version drops it ([`super::mixed`]); one version's readers always get it (the
    /// compiler's `spec::context_not_carried`).
    pub track_context: bool,
    /// `(reader, event)` -> the reply it gives to the event when it comes without the
    /// context (`context.without`).
    pub without: BTreeMap<(Ix, Ix), Ix>,
}

/// A service as the partial-order reduction sees it: the queues it consumes, those it may
/// append to, the resources it may take or give back. Sets of queues and services are bit
/// masks (a spec has fewer than 64 of each: [`Model::new`] declines to reduce otherwise).
#[derive(Debug, Clone, Default)]
pub(super) struct Unit {
    pub consumes: u64,
    pub appends: u64,
    /// For the owner in a status it cannot leave: what it may still append (the replies to
    /// events no transition is on; a late reply publishes nothing).
    pub appends_when_ended: u64,
    pub resources: u64,
}

pub(super) struct Ev {
    pub publisher: Ix,
    /// A participant's success that declares no effect at all (not even `effect: none`):
    /// if the saga can still fail after it, whatever it did is never undone.
    pub undeclared_success: bool,
    pub trigger: bool,
    pub parked: bool,
    pub holds: Option<Ix>,
    /// Per subscriber (service, its replies, the compensation it runs).
    pub subscribers: Vec<(Ix, Vec<Ix>, Option<Comp>)>,
}

#[derive(Clone, Copy)]
pub(super) struct Comp {
    pub resource: Ix,
    pub tombstone: bool,
    /// Its index in `compensations`.
    pub index: usize,
}

pub(super) struct Resource<'a> {
    pub name: &'a str,
    /// The event that holds it.
    pub holder: Ix,
}

pub(super) struct St<'a> {
    pub name: &'a str,
    pub terminal: bool,
    /// `(to, emits)`.
    pub timeout: Option<(Ix, Option<Ix>)>,
    /// A terminal status entered on a successful reply: the saga completed, holding every
    /// resource. Every other terminal status must hold none.
    pub success: bool,
    /// Timeouts alone lead from here to a terminal status.
    pub ends_alone: bool,
}

/// What a participant decided for one saga and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Record {
    Absent,
    Held,
    Refused,
    Released,
    Tombstone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Msg {
    pub event: Ix,
    /// How many times the saga published this event before: with the event, the id the
    /// inbox knows it by.
    pub nth: Ix,
    /// Whether it carries the saga context (always false unless `Model::track_context`).
    pub context: bool,
}

/// One saga in a world.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Saga {
    pub status: Ix,
    pub queues: Vec<Vec<Msg>>,
    pub parked: Vec<Msg>,
    pub records: Vec<Record>,
    /// Times each resource was taken, and given back.
    pub held: Vec<u8>,
    pub released: Vec<u8>,
    /// Per event, how many times it was published.
    pub published: Vec<u8>,
    /// Per (service, event): a bit per `nth` handled.
    pub inbox: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct World {
    pub sagas: Vec<Saga>,
    /// Units of each resource free: one, so two sagas compete for it.
    pub free: Vec<u8>,
    /// Redeliveries still allowed (a bound keeps the space finite).
    pub redeliveries: u8,
    /// In a rollout ([`super::mixed`]): how many services of its order run their new
    /// version. Always 0 for one version.
    pub upgraded: u8,
    /// In a rollout's run without slow participants: the status a timeout fired in, which
    /// only a service not running yet (or not reading yet) can cause. Always `None` else.
    pub timed_out: Option<Ix>,
}

/// One step of a trace, for the counterexample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// `outcomes`: what the handler did, in order (a move, then each parked event applied).
    Deliver {
        saga: usize,
        queue: usize,
        msg: Msg,
        outcomes: Vec<Outcome>,
        replies: Vec<Ix>,
    },
    Timeout {
        saga: usize,
        from: Ix,
        to: Ix,
        emits: Option<Ix>,
    },
    Redeliver {
        saga: usize,
        queue: usize,
        msg: Msg,
    },
    /// In a rollout: the service now runs its new version.
    Upgrade {
        service: Ix,
    },
}

impl Step {
    /// The saga the step is of (none for an upgrade, which is of every saga).
    pub fn saga_mut(&mut self) -> Option<&mut usize> {
        match self {
            Step::Deliver { saga, .. } | Step::Timeout { saga, .. } | Step::Redeliver { saga, .. } => Some(saga),
            Step::Upgrade { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The inbox had it: nothing happened.
    Duplicate,
    Moved {
        from: Ix,
        to: Ix,
        transition: usize,
    },
    /// Applied after a move: a parked event the new status accepts.
    Unparked {
        from: Ix,
        to: Ix,
        transition: usize,
        event: Ix,
    },
    Parked {
        status: Ix,
    },
    Late {
        status: Ix,
    },
    Recorded,
    Holds(Ix),
    Refuses(Ix),
    Releases {
        resource: Ix,
        comp: usize,
    },
    NothingToUndo {
        resource: Ix,
        comp: usize,
    },
    Tombstone {
        resource: Ix,
        comp: usize,
    },
    AlreadyDecided(Ix),
    Nothing,
    /// No declared answer: the consumer dead-letters the message (a finding of its own).
    DeadLettered,
}

/// Something the spec does not answer, found while stepping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unanswered {
    pub saga: usize,
    pub status: Ix,
    pub queue: usize,
    pub msg: Msg,
}

/// A request whose every reply takes `resource`: while a competing saga holds it, the
/// handler has no answer, and the saga waits for as long as the other holds it (for good,
/// once that one completed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Blocked {
    pub saga: usize,
    pub queue: usize,
    pub msg: Msg,
    pub resource: Ix,
}

/// A delivery the spec gives no answer for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Dead {
    Unanswered(Unanswered),
    Blocked(Blocked),
}

/// What a handler did, what it published, and the world after.
type Answer = (Vec<Outcome>, Vec<Ix>, World);

/// The most times one saga may publish one event: a spec that publishes more loops.
pub(super) const MAX_PUBLISHED: u8 = 7;

impl<'a> Model<'a> {
    /// `None` when the saga has no status machine or no entry command: nothing to explore.
    pub fn new(saga: &'a ir::Saga) -> Option<Model<'a>> {
        let status = saga.status.as_ref()?;
        let ix = |i: usize| Ix::try_from(i).ok();
        let services: Vec<&str> = saga.services.iter().map(|s| s.name.as_str()).collect();
        let service = |n: &str| services.iter().position(|s| *s == n).and_then(ix);
        let event = |n: &str| saga.events.iter().position(|e| e.name == n).and_then(ix);
        let state = |n: &str| status.states.iter().position(|s| s.name == n).and_then(ix);
        let topic = |n: &str| saga.topics.iter().position(|t| t.name == n).and_then(ix);

        let resources: Vec<Resource> = saga
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some(Resource { name: e.holds()?, holder: ix(i)? }))
            .collect();
        let resource = |n: &str| resources.iter().position(|r| r.name == n).and_then(ix);

        let mut queues: Vec<(Ix, Ix)> = Vec::new();
        let mut events = Vec::new();
        let mut queue_of = Vec::new();
        for e in &saga.events {
            let topic = topic(&e.topic)?;
            let mut subscribers = Vec::new();
            let mut qs = Vec::new();
            for s in &e.subscribers {
                let svc = service(&s.service)?;
                let replies = s.replies.iter().map(|r| event(r)).collect::<Option<Vec<_>>>()?;
                let comp =
                    saga.compensations.iter().enumerate().find(|(_, c)| c.on == e.name && c.service == s.service);
                let comp = match comp {
                    Some((index, c)) => {
                        let undone = saga.event(&c.undoes)?.holds()?;
                        Some(Comp { resource: resource(undone)?, tombstone: c.tombstone, index })
                    }
                    None => None,
                };
                subscribers.push((svc, replies, comp));
                let q = match queues.iter().position(|q| *q == (topic, svc)) {
                    Some(q) => q,
                    None => {
                        queues.push((topic, svc));
                        queues.len() - 1
                    }
                };
                qs.push(q);
            }
            let replied = saga.events.iter().flat_map(|x| &x.subscribers).any(|s| s.replies.contains(&e.name));
            events.push(Ev {
                publisher: service(&e.publisher)?,
                undeclared_success: replied && !e.failure && e.effect.is_none() && e.publisher != status.owner,
                trigger: status.is_trigger(&e.name),
                parked: status.parks.contains(&e.name),
                holds: e.holds().and_then(resource),
                subscribers,
            });
            queue_of.push(qs);
        }

        let mut transitions = BTreeMap::new();
        for (i, t) in status.transitions.iter().enumerate() {
            transitions.insert((state(&t.from)?, event(&t.on)?), (state(&t.to)?, i));
        }
        let mut states: Vec<St> = Vec::new();
        for s in &status.states {
            let timeout = match &s.timeout {
                Some(t) => Some((state(&t.to)?, t.emits.as_deref().map(event).unwrap_or(None))),
                None => None,
            };
            let success = s.terminal
                && status.transitions.iter().any(|t| t.to == s.name && saga.event(&t.on).is_some_and(|e| !e.failure));
            states.push(St { name: &s.name, terminal: s.terminal, timeout, success, ends_alone: false });
        }
        for i in 0..states.len() {
            // Follow the timeouts; a chain longer than the states loops.
            let mut at = i;
            for _ in 0..=states.len() {
                if states[at].terminal {
                    states[i].ends_alone = true;
                    break;
                }
                match states[at].timeout {
                    Some((to, _)) => at = usize::from(to),
                    None => break,
                }
            }
        }
        let start = saga.commands.iter().find(|c| c.service == status.owner).map(|c| event(&c.emits))??;
        let owner = service(&status.owner)?;
        let units = units(&services, &events, &queues, &queue_of, owner);
        let mut without = BTreeMap::new();
        for read in saga.context.iter().flat_map(|c| &c.read_by) {
            if let Some(reply) = &read.without {
                without.insert((service(&read.service)?, event(&read.event)?), event(reply)?);
            }
        }
        Some(Model {
            saga,
            owner,
            services,
            events,
            resources,
            initial: state(&status.initial)?,
            states,
            start,
            transitions,
            queues,
            queue_of,
            competitor: true,
            units,
            reduce: true,
            has_context: saga.context.is_some(),
            track_context: false,
            without,
        })
    }

    /// `sagas` sagas just started, competing for one unit of each resource.
    pub fn start(&self, sagas: usize, redeliveries: u8) -> World {
        let one = Saga {
            status: self.initial,
            queues: vec![Vec::new(); self.queues.len()],
            parked: Vec::new(),
            records: vec![Record::Absent; self.resources.len()],
            held: vec![0; self.resources.len()],
            released: vec![0; self.resources.len()],
            published: vec![0; self.events.len()],
            inbox: vec![0; self.services.len() * self.events.len()],
        };
        let mut world = World {
            sagas: vec![one; sagas],
            free: vec![1; self.resources.len()],
            redeliveries,
            upgraded: 0,
            timed_out: None,
        };
        for s in 0..sagas {
            self.publish(&mut world, s, self.start, self.has_context);
        }
        world
    }

    /// Every step possible from `world` for a service in `units` (a mask), with the world
    /// after it, and every delivery the spec gives no answer for.
    pub fn successors(&self, world: &World, units: u64) -> (Vec<(Step, World)>, Vec<Dead>) {
        let has = |service: Ix| units & (1u64 << service) != 0;
        let queues: Vec<bool> = self.queues.iter().map(|(_, service)| has(*service)).collect();
        self.successors_on(world, &queues, has(self.owner))
    }

    /// Every step possible from `world` that delivers from the queues marked in `queues`
    /// (or fires a timeout, when `timeouts`), with the world after it, and every delivery
    /// the spec gives no answer for.
    pub fn successors_on(&self, world: &World, queues: &[bool], timeouts: bool) -> (Vec<(Step, World)>, Vec<Dead>) {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for s in 0..world.sagas.len() {
            for q in (0..self.queues.len()).filter(|q| queues[*q]) {
                let Some(&msg) = world.sagas[s].queues[q].first() else { continue };
                let mut next = world.clone();
                next.sagas[s].queues[q].remove(0);
                dead.extend(self.deliver(next, s, q, msg, &mut out));
                if world.redeliveries > 0 {
                    let mut again = world.clone();
                    again.redeliveries -= 1;
                    again.sagas[s].queues[q].insert(1, msg);
                    out.push((Step::Redeliver { saga: s, queue: q, msg }, again));
                }
            }
            let from = world.sagas[s].status;
            if let Some((to, emits)) = self.states[usize::from(from)].timeout.filter(|_| timeouts) {
                let mut next = world.clone();
                next.sagas[s].status = to;
                if let Some(e) = emits {
                    // A timeout starts from no event: what it emits carries no context.
                    self.publish(&mut next, s, e, false);
                }
                out.push((Step::Timeout { saga: s, from, to, emits }, next));
            }
        }
        (out, dead)
    }

    /// Delivers `msg` from queue `q` of saga `s`, pushing each world it may lead to; a
    /// delivery the spec gives no answer for is returned, and leads to the world where the
    /// message was dead-lettered (the consumer's verdict on it), so what follows is explored
    /// too.
    fn deliver(&self, mut world: World, s: usize, q: usize, msg: Msg, out: &mut Vec<(Step, World)>) -> Option<Dead> {
        let service = self.queues[q].1;
        let step = |outcomes, replies| Step::Deliver { saga: s, queue: q, msg, outcomes, replies };
        let dead_lettered = || step(vec![Outcome::DeadLettered], Vec::new());
        let slot = usize::from(service) * self.events.len() + usize::from(msg.event);
        let bit = 1u8 << msg.nth.min(7);
        if world.sagas[s].inbox[slot] & bit != 0 {
            out.push((step(vec![Outcome::Duplicate], Vec::new()), world));
            return None;
        }
        let unhandled = world.clone();
        world.sagas[s].inbox[slot] |= bit;
        let ev = &self.events[usize::from(msg.event)];
        let Some((_, replies, comp)) = ev.subscribers.iter().find(|(svc, ..)| *svc == service) else {
            out.push((step(vec![Outcome::Nothing], Vec::new()), world));
            return None;
        };
        // Without the context, a reader gives the reply the spec declares for that, and
        // nothing else: its author says it needs nothing a competitor could hold.
        let without = self.without.get(&(service, msg.event)).filter(|_| self.track_context && !msg.context);
        let forced;
        let replies = match without {
            Some(reply) => {
                forced = [*reply];
                &forced[..]
            }
            None => &replies[..],
        };
        let carry = msg.context && self.has_context;
        let mut dead = None;
        if self.competitor
            && comp.is_none()
            && without.is_none()
            && let Some(resource) = self.blocked_by_competitor(&world, s, replies)
        {
            // While a competitor holds it the handler cannot answer (the message is retried,
            // then dead-lettered); when the unit is free it answers as usual.
            dead = Some(Dead::Blocked(Blocked { saga: s, queue: q, msg, resource }));
            out.push((dead_lettered(), unhandled.clone()));
        }
        let answered = if service == self.owner {
            match self.owner_handles(world, s, msg, replies) {
                Ok(answered) => answered,
                Err(u) => {
                    out.push((dead_lettered(), unhandled));
                    return Some(Dead::Unanswered(Unanswered { queue: q, ..u }));
                }
            }
        } else if let Some(c) = comp {
            self.compensate(world, s, *c, replies, carry)
        } else {
            self.answer(world, s, replies, Outcome::Nothing, carry)
        };
        for (outcomes, replies, world) in answered {
            out.push((step(outcomes, replies), world));
        }
        dead
    }

    /// Whether a competing saga holding a resource leaves the handler no reply: every one of
    /// `replies` takes a resource still undecided for saga `s`. The resource it names.
    ///
    /// Sagas share nothing but the units of each resource, and a competitor holding one
    /// only takes the replies that need it away from a handler; so this check, beside the
    /// exploration of one saga (which already chooses every reply, the failures too),
    /// covers every way two or more sagas competing for a unit can go (docs/spec-language.md,
    /// "What `verify` proves").
    fn blocked_by_competitor(&self, world: &World, s: usize, replies: &[Ix]) -> Option<Ix> {
        let takes = |r: &Ix| self.events[usize::from(*r)].holds;
        let all_take = !replies.is_empty() && replies.iter().all(|r| takes(r).is_some());
        let first = takes(replies.first()?)?;
        (all_take && world.sagas[s].records[usize::from(first)] == Record::Absent).then_some(first)
    }

    /// A compensation: gives back what is held (and replies), leaves a tombstone when it
    /// comes first and the spec says so, and otherwise does nothing.
    fn compensate(&self, mut world: World, s: usize, c: Comp, replies: &[Ix], carry: bool) -> Vec<Answer> {
        let r = usize::from(c.resource);
        let saga = &mut world.sagas[s];
        let outcome = match saga.records[r] {
            Record::Held => {
                saga.records[r] = Record::Released;
                saga.released[r] = saga.released[r].saturating_add(1);
                world.free[r] += 1;
                let outcome = Outcome::Releases { resource: c.resource, comp: c.index };
                if replies.is_empty() {
                    return vec![(vec![outcome], Vec::new(), world)];
                }
                return replies
                    .iter()
                    .map(|&reply| {
                        let mut next = world.clone();
                        self.publish(&mut next, s, reply, carry);
                        (vec![outcome.clone()], vec![reply], next)
                    })
                    .collect();
            }
            Record::Absent if c.tombstone => {
                saga.records[r] = Record::Tombstone;
                Outcome::Tombstone { resource: c.resource, comp: c.index }
            }
            Record::Absent => Outcome::NothingToUndo { resource: c.resource, comp: c.index },
            _ => Outcome::AlreadyDecided(c.resource),
        };
        vec![(vec![outcome], Vec::new(), world)]
    }

    /// A handler's reply: one of `replies`, each a world of its own. A reply that holds a
    /// resource needs it undecided and a free unit; a reply beside one that holds (a failure)
    /// decides the resource as refused. Once decided, the handler does nothing.
    /// Each reply carries the context when `carry`.
    fn answer(&self, world: World, s: usize, replies: &[Ix], base: Outcome, carry: bool) -> Vec<Answer> {
        let decides: Vec<Ix> = replies.iter().filter_map(|r| self.events[usize::from(*r)].holds).collect();
        if let Some(&r) = decides.iter().find(|r| world.sagas[s].records[usize::from(**r)] != Record::Absent) {
            return vec![(vec![base, Outcome::AlreadyDecided(r)], Vec::new(), world)];
        }
        if replies.is_empty() {
            return vec![(vec![base], Vec::new(), world)];
        }
        let mut out = Vec::new();
        for &reply in replies {
            let mut next = world.clone();
            let mut outcomes = vec![base.clone()];
            match self.events[usize::from(reply)].holds {
                Some(r) => {
                    let i = usize::from(r);
                    if next.free[i] == 0 {
                        continue;
                    }
                    next.free[i] -= 1;
                    next.sagas[s].records[i] = Record::Held;
                    next.sagas[s].held[i] = next.sagas[s].held[i].saturating_add(1);
                    outcomes.push(Outcome::Holds(r));
                }
                None => {
                    for &r in &decides {
                        next.sagas[s].records[usize::from(r)] = Record::Refused;
                    }
                    if let Some(&r) = decides.first() {
                        outcomes.push(Outcome::Refuses(r));
                    }
                }
            }
            self.publish(&mut next, s, reply, carry);
            out.push((outcomes, vec![reply], next));
        }
        out
    }

    /// The status owner: a declared transition moves the status (then parked events the new
    /// status accepts follow), a declared early reply is parked, a late one ignored, an
    /// event no transition is on recorded; anything else has no declared answer.
    fn owner_handles(&self, mut world: World, s: usize, msg: Msg, replies: &[Ix]) -> Result<Vec<Answer>, Unanswered> {
        let status = world.sagas[s].status;
        let ev = &self.events[usize::from(msg.event)];
        let carry = msg.context && self.has_context;
        if !ev.trigger {
            return Ok(self.answer(world, s, replies, Outcome::Recorded, carry));
        }
        let Some(&(to, transition)) = self.transitions.get(&(status, msg.event)) else {
            if self.states[usize::from(status)].terminal {
                // The saga ended: the event changes nothing, its handler publishes nothing.
                return Ok(vec![(vec![Outcome::Late { status }], Vec::new(), world)]);
            }
            if ev.parked {
                world.sagas[s].parked.push(msg);
                return Ok(vec![(vec![Outcome::Parked { status }], Vec::new(), world)]);
            }
            return Err(Unanswered { saga: s, status, queue: 0, msg });
        };
        world.sagas[s].status = to;
        let mut out = Vec::new();
        for (outcomes, replied, world) in
            self.answer(world, s, replies, Outcome::Moved { from: status, to, transition }, carry)
        {
            for (more, more_replies, world) in self.unpark(world, s) {
                let mut all = outcomes.clone();
                all.extend(more);
                let mut r = replied.clone();
                r.extend(more_replies);
                out.push((all, r, world));
            }
        }
        Ok(out)
    }

    /// Applies, oldest first, each parked event the status now accepts, until none does.
    fn unpark(&self, world: World, s: usize) -> Vec<Answer> {
        let status = world.sagas[s].status;
        let Some(i) = world.sagas[s].parked.iter().position(|m| self.transitions.contains_key(&(status, m.event)))
        else {
            return vec![(Vec::new(), Vec::new(), world)];
        };
        let mut world = world;
        let msg = world.sagas[s].parked.remove(i);
        let (to, transition) = self.transitions[&(status, msg.event)];
        world.sagas[s].status = to;
        let replies = self.events[usize::from(msg.event)]
            .subscribers
            .iter()
            .find(|(svc, ..)| *svc == self.owner)
            .map(|(_, r, _)| r.clone())
            .unwrap_or_default();
        let outcome = Outcome::Unparked { from: status, to, transition, event: msg.event };
        let mut out = Vec::new();
        let carry = msg.context && self.has_context;
        for (outcomes, replied, world) in self.answer(world, s, &replies, outcome, carry) {
            for (more, more_replies, world) in self.unpark(world, s) {
                let mut all = outcomes.clone();
                all.extend(more);
                let mut r = replied.clone();
                r.extend(more_replies);
                out.push((all, r, world));
            }
        }
        out
    }

    /// Every service, as a mask.
    pub fn all_units(&self) -> u64 {
        if self.services.len() >= 64 { u64::MAX } else { (1u64 << self.services.len()) - 1 }
    }

    /// The services whose steps are enough to explore from `world` (of one saga, with no
    /// redelivery left): a stubborn set. Nothing a service outside it can do depends on or
    /// enables anything inside it, so delaying those steps reorders independent ones and
    /// loses no end state (every deadlock, every delivery without an answer, every status
    /// the owner passes through).
    ///
    /// Services are the units: one service's deliveries all depend on each other (its
    /// resources, its inbox). Two services depend on each other when they take or give
    /// back a common resource or may append to a common queue; a service's empty queue
    /// needs the services that may append to it. A set that would hold the owner while it
    /// can still change the status is refused: the status is what the properties watch.
    /// The smallest set from any service is taken; with none, every service.
    pub fn ample(&self, world: &World) -> u64 {
        let all = self.all_units();
        if !self.reduce
            || world.sagas.len() != 1
            || world.redeliveries > 0
            || self.services.len() >= 64
            || self.queues.len() >= 64
        {
            return all;
        }
        let saga = &world.sagas[0];
        let status = usize::from(saga.status);
        let ended = self.states[status].timeout.is_none()
            && !self.transitions.keys().any(|(from, _)| usize::from(*from) == status);
        let appends = |u: usize| {
            let unit = &self.units[u];
            if u == usize::from(self.owner) && ended { unit.appends_when_ended } else { unit.appends }
        };
        let nonempty: u64 = (0..self.queues.len()).filter(|q| !saga.queues[*q].is_empty()).fold(0, |m, q| m | 1 << q);
        let enabled = |u: usize| {
            self.units[u].consumes & nonempty != 0
                || (u == usize::from(self.owner) && !ended && self.states[status].timeout.is_some())
        };
        let mut best = all;
        let mut best_enabled = usize::MAX;
        for seed in 0..self.services.len() {
            if !enabled(seed) {
                continue;
            }
            let mut set = 1u64 << seed;
            let mut work = vec![seed];
            while let Some(u) = work.pop() {
                let empty = self.units[u].consumes & !nonempty;
                for v in 0..self.services.len() {
                    if set & (1 << v) != 0 {
                        continue;
                    }
                    let depends =
                        self.units[u].resources & self.units[v].resources != 0 || appends(u) & appends(v) != 0;
                    let enables = appends(v) & empty != 0;
                    if depends || enables {
                        set |= 1 << v;
                        work.push(v);
                    }
                }
            }
            if set & (1 << self.owner) != 0 && !ended {
                continue;
            }
            let count = (0..self.services.len()).filter(|u| set & (1 << u) != 0 && enabled(*u)).count();
            if count < best_enabled {
                (best, best_enabled) = (set, count);
            }
        }
        best
    }

    /// Writes `event` for saga `s`, carrying the context if `context`: it joins the queue
    /// of each subscriber.
    pub fn publish(&self, world: &mut World, s: usize, event: Ix, context: bool) {
        let saga = &mut world.sagas[s];
        let e = usize::from(event);
        let nth = saga.published[e];
        saga.published[e] = nth.saturating_add(1);
        for &q in &self.queue_of[e] {
            saga.queues[q].push(Msg { event, nth, context: context && self.track_context });
        }
    }
}

/// What the partial-order reduction needs to know of each service.
fn units(services: &[&str], events: &[Ev], queues: &[(Ix, Ix)], queue_of: &[Vec<usize>], owner: Ix) -> Vec<Unit> {
    let mask = |qs: &[usize]| qs.iter().filter(|q| **q < 64).fold(0u64, |m, q| m | 1 << q);
    let mut units = vec![Unit::default(); services.len()];
    for (q, (_, service)) in queues.iter().enumerate().filter(|(q, _)| *q < 64) {
        units[usize::from(*service)].consumes |= 1 << q;
    }
    for (e, ev) in events.iter().enumerate() {
        let publisher = &mut units[usize::from(ev.publisher)];
        publisher.appends |= mask(&queue_of[e]);
        if let Some(r) = ev.holds.filter(|r| *r < 64) {
            publisher.resources |= 1 << r;
        }
        for (service, replies, comp) in &ev.subscribers {
            let unit = &mut units[usize::from(*service)];
            if let Some(c) = comp.filter(|c| c.resource < 64) {
                unit.resources |= 1 << c.resource;
            }
            // A reply that takes a resource decides it where it is sent from.
            for r in replies.iter().filter_map(|r| events[usize::from(*r)].holds).filter(|r| *r < 64) {
                unit.resources |= 1 << r;
            }
            if *service == owner && !ev.trigger {
                for reply in replies {
                    unit.appends_when_ended |= mask(&queue_of[usize::from(*reply)]);
                }
            }
        }
    }
    units
}
