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
}

pub(super) struct Ev {
    pub publisher: Ix,
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
}

/// Something the spec does not answer, found while stepping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unanswered {
    pub saga: usize,
    pub status: Ix,
    pub queue: usize,
    pub msg: Msg,
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
            events.push(Ev {
                publisher: service(&e.publisher)?,
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
        Some(Model {
            saga,
            owner: service(&status.owner)?,
            services,
            events,
            resources,
            initial: state(&status.initial)?,
            states,
            start,
            transitions,
            queues,
            queue_of,
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
        let mut world = World { sagas: vec![one; sagas], free: vec![1; self.resources.len()], redeliveries };
        for s in 0..sagas {
            self.publish(&mut world, s, self.start);
        }
        world
    }

    /// Every step possible from `world`, with the world after it; an event without a
    /// declared answer is an error.
    pub fn successors(&self, world: &World) -> Result<Vec<(Step, World)>, Unanswered> {
        let mut out = Vec::new();
        for s in 0..world.sagas.len() {
            for q in 0..self.queues.len() {
                let Some(&msg) = world.sagas[s].queues[q].first() else { continue };
                let mut next = world.clone();
                next.sagas[s].queues[q].remove(0);
                self.deliver(next, s, q, msg, &mut out)?;
                if world.redeliveries > 0 {
                    let mut again = world.clone();
                    again.redeliveries -= 1;
                    again.sagas[s].queues[q].insert(1, msg);
                    out.push((Step::Redeliver { saga: s, queue: q, msg }, again));
                }
            }
            let from = world.sagas[s].status;
            if let Some((to, emits)) = self.states[usize::from(from)].timeout {
                let mut next = world.clone();
                next.sagas[s].status = to;
                if let Some(e) = emits {
                    self.publish(&mut next, s, e);
                }
                out.push((Step::Timeout { saga: s, from, to, emits }, next));
            }
        }
        Ok(out)
    }

    fn deliver(
        &self,
        mut world: World,
        s: usize,
        q: usize,
        msg: Msg,
        out: &mut Vec<(Step, World)>,
    ) -> Result<(), Unanswered> {
        let service = self.queues[q].1;
        let step = |outcomes, replies| Step::Deliver { saga: s, queue: q, msg, outcomes, replies };
        let slot = usize::from(service) * self.events.len() + usize::from(msg.event);
        let bit = 1u8 << msg.nth.min(7);
        if world.sagas[s].inbox[slot] & bit != 0 {
            out.push((step(vec![Outcome::Duplicate], Vec::new()), world));
            return Ok(());
        }
        world.sagas[s].inbox[slot] |= bit;
        let ev = &self.events[usize::from(msg.event)];
        let Some((_, replies, comp)) = ev.subscribers.iter().find(|(svc, ..)| *svc == service) else {
            out.push((step(vec![Outcome::Nothing], Vec::new()), world));
            return Ok(());
        };
        let answered = if service == self.owner {
            self.owner_handles(world, s, msg, replies).map_err(|u| Unanswered { queue: q, ..u })?
        } else if let Some(c) = comp {
            self.compensate(world, s, *c, replies)
        } else {
            self.answer(world, s, replies, Outcome::Nothing)
        };
        for (outcomes, replies, world) in answered {
            out.push((step(outcomes, replies), world));
        }
        Ok(())
    }

    /// A compensation: gives back what is held (and replies), leaves a tombstone when it
    /// comes first and the spec says so, and otherwise does nothing.
    fn compensate(&self, mut world: World, s: usize, c: Comp, replies: &[Ix]) -> Vec<Answer> {
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
                        self.publish(&mut next, s, reply);
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
    fn answer(&self, world: World, s: usize, replies: &[Ix], base: Outcome) -> Vec<Answer> {
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
            self.publish(&mut next, s, reply);
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
        if !ev.trigger {
            return Ok(self.answer(world, s, replies, Outcome::Recorded));
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
            self.answer(world, s, replies, Outcome::Moved { from: status, to, transition })
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
        for (outcomes, replied, world) in self.answer(world, s, &replies, outcome) {
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

    /// Writes `event` for saga `s`: it joins the queue of each subscriber.
    pub fn publish(&self, world: &mut World, s: usize, event: Ix) {
        let saga = &mut world.sagas[s];
        let e = usize::from(event);
        let nth = saga.published[e];
        saga.published[e] = nth.saturating_add(1);
        for &q in &self.queue_of[e] {
            saga.queues[q].push(Msg { event, nth });
        }
    }
}
