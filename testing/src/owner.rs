//! The status owner in a scenario, and what a scenario keeps of its store.

use std::future::Future;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use saga_contract::owner::{
    self, Cause, FailureOf, HandledBy, OverdueOf, StatusMachine, Store, Transition, TransitionOf,
};
use saga_contract::{Inbound, OutboxRecord, ParkedEvent, SweepFailure};
use uuid::Uuid;

use crate::{BySaga, Delivered, Emitted, EventKind, Inbox, Published, VirtualClock};

/// A change of status the owner wrote, as a scenario reads it back; `S` is the owner's
/// status (the generated `<Owner>Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<S> {
    pub from: Option<S>,
    pub to: S,
    pub event_type: String,
}

/// What a scenario sees of the status owner's store: the virtual clock its deadlines are
/// counted from, and every change of status and every event published, per saga.
/// [`Observed`] keeps it up to date.
#[derive(Debug)]
pub struct OwnerLog<S, K> {
    clock: VirtualClock,
    changes: BySaga<Change<S>>,
    published: Published<K>,
}

impl<S, K> Default for OwnerLog<S, K> {
    fn default() -> Self {
        OwnerLog { clock: VirtualClock::default(), changes: BySaga::default(), published: Published::default() }
    }
}

impl<S: Clone, K: EventKind + Clone> OwnerLog<S, K> {
    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// The store wrote a change of saga `key`'s status.
    pub fn changed(&self, key: Uuid, from: Option<S>, to: S, event_type: &str) {
        self.changes.push(key, Change { from, to, event_type: event_type.to_owned() });
    }

    /// The store wrote `record` to the outbox; its saga is its partition key.
    pub fn published(&self, record: OutboxRecord) {
        let key = Uuid::parse_str(&record.partition_key).unwrap_or_default();
        self.published.push(key, record);
    }

    /// Every event published: where replies are kept too.
    pub fn outbox(&self) -> &Published<K> {
        &self.published
    }

    /// Every change of saga `key`'s status, oldest first.
    pub fn history(&self, key: Uuid) -> Vec<Change<S>> {
        self.changes.of(key)
    }

    /// What saga `key` published (written to the outbox, or replied), oldest first.
    pub fn emitted(&self, key: Uuid) -> Vec<Emitted<K>> {
        self.published.of(key)
    }
}

/// The owner's store `H` as a scenario runs it: deadlines by the virtual clock, and each
/// change of status and write to the outbox kept in its [`OwnerLog`].
#[derive(Debug)]
pub struct Observed<H, S: StatusMachine> {
    inner: H,
    log: OwnerLog<S, S::Event>,
}

impl<H, S: StatusMachine> Observed<H, S> {
    pub fn new(inner: H) -> Self {
        Observed { inner, log: OwnerLog::default() }
    }

    /// The store observed: what the owner's handler is too.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    pub fn log(&self) -> &OwnerLog<S, S::Event> {
        &self.log
    }
}

impl<H, S> Store<S> for Observed<H, S>
where
    H: Store<S>,
    S: StatusMachine,
    S::Event: EventKind + Clone,
{
    type Ctx = H::Ctx;
    type Error = H::Error;

    fn load_for_update(
        &self,
        ctx: &mut Self::Ctx,
        saga_key: Uuid,
    ) -> impl Future<Output = Result<Option<S>, Self::Error>> + Send {
        self.inner.load_for_update(ctx, saga_key)
    }

    fn timeout(&self, status: S) -> Option<Duration> {
        self.inner.timeout(status)
    }

    fn now(&self) -> DateTime<Utc> {
        self.log.clock().now()
    }

    async fn write_transition(&self, ctx: &mut Self::Ctx, t: &TransitionOf<'_, S>) -> Result<(), Self::Error> {
        self.inner.write_transition(ctx, t).await?;
        self.log.changed(t.saga_key, t.from, t.to, t.event_type);
        Ok(())
    }

    fn park(
        &self,
        ctx: &mut Self::Ctx,
        saga_key: Uuid,
        event: &ParkedEvent,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.park(ctx, saga_key, event)
    }

    fn parked(
        &self,
        ctx: &mut Self::Ctx,
        saga_key: Uuid,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, Self::Error>> + Send {
        self.inner.parked(ctx, saga_key)
    }

    fn unpark(&self, ctx: &mut Self::Ctx, event_id: Uuid) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.unpark(ctx, event_id)
    }

    async fn publish(&self, ctx: &mut Self::Ctx, record: OutboxRecord) -> Result<(), Self::Error> {
        self.inner.publish(ctx, record.clone()).await?;
        self.log.published(record);
        Ok(())
    }

    fn next_overdue(
        &self,
        ctx: &mut Self::Ctx,
        statuses: &[S],
        as_of: SystemTime,
        skip: &[Uuid],
    ) -> impl Future<Output = Result<Option<OverdueOf<S>>, Self::Error>> + Send {
        self.inner.next_overdue(ctx, statuses, as_of, skip)
    }
}

/// The status owner of machine `S` in a scenario, its handler and store `H`: its events
/// run through the status machine and the handler as its consumer runs them (once per
/// event id), timeouts fire when the virtual clock passes them, and each change of status
/// and everything published is kept for [`Self::history`] and [`Self::emitted`]. The
/// generated `<Owner>Scenario` wraps it and adds the spec's entry commands.
pub struct OwnerScenario<H, S: StatusMachine> {
    observed: Observed<H, S>,
    inbox: Inbox,
}

impl<H, S> OwnerScenario<H, S>
where
    S: StatusMachine<Event: EventKind + Clone>,
{
    pub fn new(handler: H) -> Self {
        OwnerScenario { observed: Observed::new(handler), inbox: Inbox::default() }
    }

    pub fn handler(&self) -> &H {
        self.observed.inner()
    }

    /// The store as the scenario observes it: what the entry commands run against.
    pub fn observed(&self) -> &Observed<H, S> {
        &self.observed
    }

    pub fn clock(&self) -> &VirtualClock {
        self.observed.log().clock()
    }

    /// Every change of status of saga `key` this scenario made, oldest first.
    pub fn history(&self, key: Uuid) -> Vec<Change<S>> {
        self.observed.log().history(key)
    }

    /// What saga `key` published (written to the outbox, or replied), oldest first.
    pub fn emitted(&self, key: Uuid) -> Vec<Emitted<S::Event>> {
        self.observed.log().emitted(key)
    }
}

impl<H, S> OwnerScenario<H, S>
where
    H: Store<S>,
    S: StatusMachine<
            Event: EventKind + Clone,
            Inbound: HandledBy<H, Status = S, Ctx = H::Ctx, Error = H::Error> + Inbound + Clone,
        >,
{
    /// The event arrives: unless its id was delivered before, it runs through the status
    /// machine and the handler; the reply is kept for `emitted`.
    pub async fn when(
        &mut self,
        ctx: &mut H::Ctx,
        event: impl Into<S::Inbound>,
    ) -> Result<Delivered<S::Event>, FailureOf<S, H>> {
        let event = event.into();
        let meta = event.meta();
        let run = owner::run_event(&self.observed, self.observed.inner(), ctx, event);
        self.inbox.deliver_with(self.observed.log().outbox(), meta, run).await
    }

    /// The event arrives twice (a redelivery): the second changes nothing.
    pub async fn when_twice(
        &mut self,
        ctx: &mut H::Ctx,
        event: impl Into<S::Inbound>,
    ) -> Result<[Delivered<S::Event>; 2], FailureOf<S, H>> {
        let event = event.into();
        let first = self.when(ctx, event.clone()).await?;
        Ok([first, self.when(ctx, event).await?])
    }

    /// The status of saga `key`, as the store has it.
    pub async fn status(&self, ctx: &mut H::Ctx, key: Uuid) -> Result<Option<S>, H::Error> {
        self.observed.inner().load_for_update(ctx, key).await
    }

    /// Moves the virtual clock by `by`, then runs every timeout now due, as the sweeper
    /// does; returns the sagas that timed out, in the order they did.
    pub async fn advance(
        &mut self,
        ctx: &mut H::Ctx,
        by: Duration,
    ) -> Result<Vec<Uuid>, SweepFailure<FailureOf<S, H>>> {
        let clock = self.observed.log().clock();
        clock.advance(by);
        let as_of = SystemTime::from(clock.now());
        let mut timed_out = Vec::new();
        while let Some(key) = owner::run_timeout(&self.observed, self.observed.inner(), ctx, as_of, &timed_out).await? {
            timed_out.push(key);
        }
        Ok(timed_out)
    }

    /// Moves saga `key` from `from` straight to `to` (cause `Seeded`), with its history
    /// row and its deadline by the virtual clock: how `given` puts a saga in a status.
    pub async fn seed(&self, ctx: &mut H::Ctx, key: Uuid, from: S, to: S) -> Result<(), H::Error> {
        let change = Transition {
            saga_key: key,
            from: Some(from),
            to,
            event_id: Uuid::now_v7(),
            event_type: "seeded",
            cause: Cause::Seeded,
            deadline: owner::deadline_of(&self.observed, to),
        };
        self.observed.write_transition(ctx, &change).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Any;

    impl EventKind for Any {
        fn from_name(_: &str) -> Option<Self> {
            Some(Any)
        }
    }

    fn record(partition_key: String) -> OutboxRecord {
        OutboxRecord {
            event_id: Uuid::now_v7(),
            topic: "t".into(),
            partition_key,
            event_type: "e".into(),
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn changes_and_events_are_kept_per_saga() {
        let log = OwnerLog::<&str, Any>::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        log.changed(a, None, "created", "order.created");
        log.changed(b, None, "created", "order.created");
        log.changed(a, Some("created"), "done", "x");
        log.published(record(a.to_string()));
        assert_eq!(
            log.history(a),
            [
                Change { from: None, to: "created", event_type: "order.created".into() },
                Change { from: Some("created"), to: "done", event_type: "x".into() },
            ]
        );
        assert_eq!(log.history(b).len(), 1);
        assert_eq!((log.emitted(a).len(), log.emitted(b).len()), (1, 0));
        assert_eq!(log.outbox().of(a), log.emitted(a));
    }

    #[test]
    fn an_event_whose_key_is_no_saga_key_is_kept_under_nil() {
        let log = OwnerLog::<&str, Any>::default();
        log.published(record("not a uuid".into()));
        assert_eq!(log.emitted(Uuid::nil()).len(), 1);
    }

    /// A door: `open -shut-> closed`; `open` times out after 10 s to `stuck`. The handler
    /// answers `shut` with `shut.done` and a timeout with `stuck.alarm`.
    mod door {
        use std::collections::HashMap;
        use std::fmt;
        use std::sync::Mutex;

        use saga_contract::{Classify, EventMeta, FailureClass, HandleError, Inbound};

        use super::*;

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Door {
            Open,
            Closed,
            Stuck,
        }

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            Shut,
            ShutDone,
            StuckAlarm,
        }

        impl Kind {
            fn name(self) -> &'static str {
                match self {
                    Kind::Shut => "shut",
                    Kind::ShutDone => "shut.done",
                    Kind::StuckAlarm => "stuck.alarm",
                }
            }
        }

        impl EventKind for Kind {
            fn from_name(name: &str) -> Option<Self> {
                [Kind::Shut, Kind::ShutDone, Kind::StuckAlarm].into_iter().find(|k| k.name() == name)
            }
        }

        impl StatusMachine for Door {
            type Event = Kind;
            type Inbound = Shut;
            const WITH_TIMEOUT: &'static [Door] = &[Door::Open];

            fn name(self) -> &'static str {
                match self {
                    Door::Open => "open",
                    Door::Closed => "closed",
                    Door::Stuck => "stuck",
                }
            }
            fn event_name(event: Kind) -> &'static str {
                event.name()
            }
            fn is_terminal(self) -> bool {
                self != Door::Open
            }
            fn next(self, event: Kind) -> Option<Door> {
                (self == Door::Open && event == Kind::Shut).then_some(Door::Closed)
            }
            fn is_trigger(event: Kind) -> bool {
                event == Kind::Shut
            }
            fn parks(_: Kind) -> bool {
                false
            }
            fn timeout_after(self) -> Option<Duration> {
                (self == Door::Open).then_some(Duration::from_secs(10))
            }
            fn timeout_to(self) -> Option<Door> {
                (self == Door::Open).then_some(Door::Stuck)
            }
        }

        /// The one event the door's owner receives.
        #[derive(Debug, Clone)]
        pub struct Shut {
            pub id: Uuid,
            pub door: Uuid,
        }

        impl owner::OwnerEvent for Shut {
            type Kind = Kind;
            type Trace = ();
            fn kind(&self) -> Kind {
                Kind::Shut
            }
            fn event_id(&self) -> Uuid {
                self.id
            }
            fn saga_key(&self) -> Uuid {
                self.door
            }
        }

        impl Inbound for Shut {
            fn decode(_: &str, _: &[u8]) -> Result<Option<Self>, String> {
                Ok(None)
            }
            fn meta(&self) -> EventMeta {
                EventMeta { event_id: self.id, event_type: "shut", saga_key: self.door, traceparent: None }
            }
        }

        #[derive(Debug)]
        pub struct Never;

        impl fmt::Display for Never {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("never")
            }
        }

        impl std::error::Error for Never {}

        impl Classify for Never {
            fn class(&self) -> FailureClass {
                FailureClass::Permanent
            }
        }

        pub fn record(door: Uuid, kind: Kind) -> OutboxRecord {
            OutboxRecord {
                event_id: Uuid::now_v7(),
                topic: "doors".into(),
                partition_key: door.to_string(),
                event_type: kind.name().into(),
                payload: Vec::new(),
                headers: Vec::new(),
            }
        }

        /// A door's status and deadline.
        type Row = (Door, Option<DateTime<Utc>>);

        /// The owner's store (doors and their deadlines, in memory) and its handler.
        #[derive(Debug, Default)]
        pub struct Doors(Mutex<HashMap<Uuid, Row>>);

        impl Doors {
            pub fn with(door: Uuid) -> Self {
                let doors = Doors::default();
                doors.0.lock().unwrap().insert(door, (Door::Open, None));
                doors
            }
        }

        impl Store<Door> for Doors {
            type Ctx = ();
            type Error = Never;

            async fn load_for_update(&self, _: &mut (), key: Uuid) -> Result<Option<Door>, Never> {
                Ok(self.0.lock().unwrap().get(&key).map(|(d, _)| *d))
            }
            async fn write_transition(&self, _: &mut (), t: &TransitionOf<'_, Door>) -> Result<(), Never> {
                self.0.lock().unwrap().insert(t.saga_key, (t.to, t.deadline));
                Ok(())
            }
            async fn park(&self, _: &mut (), _: Uuid, _: &ParkedEvent) -> Result<(), Never> {
                unreachable!("the door parks nothing")
            }
            async fn parked(&self, _: &mut (), _: Uuid) -> Result<Vec<ParkedEvent>, Never> {
                Ok(Vec::new())
            }
            async fn unpark(&self, _: &mut (), _: Uuid) -> Result<(), Never> {
                Ok(())
            }
            async fn publish(&self, _: &mut (), _: OutboxRecord) -> Result<(), Never> {
                Ok(())
            }
            async fn next_overdue(
                &self,
                _: &mut (),
                statuses: &[Door],
                as_of: SystemTime,
                skip: &[Uuid],
            ) -> Result<Option<OverdueOf<Door>>, Never> {
                let doors = self.0.lock().unwrap();
                let due = doors.iter().find(|(k, (d, at))| {
                    statuses.contains(d) && !skip.contains(k) && at.is_some_and(|at| SystemTime::from(at) <= as_of)
                });
                Ok(due.map(|(k, (d, _))| owner::Overdue { saga_key: *k, status: *d, trace: () }))
            }
        }

        impl HandledBy<Doors> for Shut {
            type Status = Door;
            type Ctx = ();
            type Error = Never;
            type Failure = HandleError<Never, Never>;

            fn to_parked(&self) -> Result<ParkedEvent, Self::Failure> {
                unreachable!("the door parks nothing")
            }
            fn unparked(_: &ParkedEvent) -> Option<Shut> {
                None
            }
            async fn handle(
                self,
                _: &Doors,
                _: &mut (),
                _: owner::Step<Door>,
            ) -> Result<Option<OutboxRecord>, Self::Failure> {
                Ok(Some(record(self.door, Kind::ShutDone)))
            }
            async fn on_timeout(
                _: &Doors,
                _: &mut (),
                saga: OverdueOf<Door>,
                _: Door,
            ) -> Result<Option<OutboxRecord>, Self::Failure> {
                Ok(Some(record(saga.saga_key, Kind::StuckAlarm)))
            }
        }
    }

    /// Runs a future that never waits (the door's store does not).
    fn ready<T>(future: impl Future<Output = T>) -> T {
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        match pin!(future).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the future waited"),
        }
    }

    #[test]
    fn an_owner_scenario_runs_events_once_and_keeps_what_changed() {
        use door::{Door, Doors, Kind, Shut};
        let key = Uuid::now_v7();
        let mut s = OwnerScenario::<Doors, Door>::new(Doors::with(key));
        let shut = Shut { id: Uuid::now_v7(), door: key };
        let [first, again] = ready(s.when_twice(&mut (), shut)).unwrap();
        let Delivered::Handled { reply: Some(reply) } = first else { panic!("not handled: {first:?}") };
        assert_eq!((reply.event_type, again), (Kind::ShutDone, Delivered::Duplicate));
        assert_eq!(ready(s.status(&mut (), key)).unwrap(), Some(Door::Closed));
        assert_eq!(s.history(key), [Change { from: Some(Door::Open), to: Door::Closed, event_type: "shut".into() }]);
        assert_eq!(s.emitted(key).iter().map(|e| e.event_type).collect::<Vec<_>>(), [Kind::ShutDone]);
    }

    #[test]
    fn an_owner_scenario_times_out_only_when_its_clock_passes_the_deadline() {
        use door::{Door, Doors, Kind};
        let key = Uuid::now_v7();
        let mut s = OwnerScenario::<Doors, Door>::new(Doors::with(key));
        // Seeded now: the deadline is 10 s from the virtual clock's now.
        ready(s.seed(&mut (), key, Door::Open, Door::Open)).unwrap();
        assert_eq!(ready(s.advance(&mut (), Duration::from_millis(9_999))).unwrap(), Vec::<Uuid>::new());
        assert_eq!(ready(s.advance(&mut (), Duration::from_millis(1))).unwrap(), [key]);
        assert_eq!(ready(s.status(&mut (), key)).unwrap(), Some(Door::Stuck));
        let changes: Vec<_> = s.history(key).into_iter().map(|c| (c.to, c.event_type)).collect();
        assert_eq!(changes, [(Door::Open, "seeded".to_owned()), (Door::Stuck, "stuck.alarm".to_owned())]);
        assert_eq!(s.emitted(key).iter().map(|e| e.event_type).collect::<Vec<_>>(), [Kind::StuckAlarm]);
        assert_eq!(
            ready(s.advance(&mut (), Duration::from_secs(60))).unwrap(),
            Vec::<Uuid>::new(),
            "a saga times out once"
        );
    }
}
