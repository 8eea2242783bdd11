//! The status owner's driver, for any saga: what it does with an inbound event and with
//! a saga past its deadline, and the [`Store`] it keeps sagas in. The generated `owner`
//! module binds it to one spec (its status machine, its inbound events and the owner's
//! handler, through [`HandledBy`]); the owning service implements [`Store`] for its status
//! machine; nothing here knows a saga.
//!
//! An event runs through the status machine, then the owner's handler, in the caller's
//! transaction: the saga is locked; a trigger the status accepts is written as a
//! transition with its history row; one the spec parks (replies on different topics are
//! not ordered against each other) that arrived before the status it needs waits, and is
//! applied with its handler once a later event moved the status there; an event for a
//! saga that already ended changes nothing; any other has no declared answer
//! ([`Failure::unanswered`]), which the spec verifier proves unreachable.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{Classify, OutboxRecord, ParkedEvent, SweepFailure};

/// A status machine as the spec declares it (the generated `<Owner>Status`).
pub trait StatusMachine: Copy + Eq + Send + Sync + 'static {
    /// The kind of the events it is keyed by (the generated `EventType`).
    type Event: Copy + Send + Sync + 'static;
    /// The events its owner receives (the generated `<Owner>Inbound`).
    type Inbound: OwnerEvent<Kind = Self::Event>;

    /// The states that time out: where the sweeper looks for overdue sagas.
    const WITH_TIMEOUT: &'static [Self];

    /// The spec's name of the state.
    fn name(self) -> &'static str;
    /// The spec's name of an event.
    fn event_name(event: Self::Event) -> &'static str;
    fn is_terminal(self) -> bool;
    /// The state `event` moves this one to; `None` when it has no transition on it.
    fn next(self, event: Self::Event) -> Option<Self>;
    /// Whether any transition is keyed by `event`; the others are only recorded.
    fn is_trigger(event: Self::Event) -> bool;
    /// Whether `event` may come before the status that accepts it.
    fn parks(event: Self::Event) -> bool;
    /// How long a saga may stay in this state before it times out; `None`: it does not.
    fn timeout_after(self) -> Option<Duration>;
    /// The state a saga moves to when it stays too long in this one.
    fn timeout_to(self) -> Option<Self>;
}

/// An event the status owner receives (the generated `<Owner>Inbound`).
pub trait OwnerEvent: Sized + Send + Sync + 'static {
    type Kind: Copy + Send + Sync + 'static;
    /// The trace the events carry: a saga's timeout belongs to the one it started with.
    type Trace: Send;

    fn kind(&self) -> Self::Kind;
    fn event_id(&self) -> Uuid;
    fn saga_key(&self) -> Uuid;
}

/// What the status machine made of an event, before the owner's handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<S> {
    /// The event moved the status.
    Moved { from: S, to: S },
    /// The event moves no status in the spec; it is only recorded.
    Recorded { status: S },
    /// The saga had already ended: the event changes nothing (the compensations of
    /// that end undo whatever the event stands for).
    Late { status: S },
}

/// Why a status changes: what the store may take further columns from. `I` is the
/// owner's inbound event.
pub enum Cause<'a, I> {
    /// An entry command started the saga.
    Started,
    /// An inbound event, with everything it carries.
    Event(&'a I),
    /// The status stayed past its deadline.
    Timeout,
    /// A test scenario put the saga in this status directly (`scenario`'s `given`).
    Seeded,
}

// By hand: a derive would ask `I: Clone` of what is only borrowed.
impl<I> Clone for Cause<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Cause<'_, I> {}

impl<I: fmt::Debug> fmt::Debug for Cause<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Started => f.write_str("Started"),
            Cause::Event(event) => f.debug_tuple("Event").field(event).finish(),
            Cause::Timeout => f.write_str("Timeout"),
            Cause::Seeded => f.write_str("Seeded"),
        }
    }
}

/// One change of a saga's status, as the store writes it; `I` is the owner's inbound
/// event (the generated `<Owner>Transition` names the types).
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a, S, I> {
    pub saga_key: Uuid,
    /// `None` for the first transition, when the saga starts.
    pub from: Option<S>,
    pub to: S,
    /// The event behind the change, for the history row: a timeout's is the event it
    /// publishes, or a fresh id and `timeout` when it publishes none.
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub cause: Cause<'a, I>,
    /// When the saga times out of `to` ([`deadline`]); `None` for a status without one.
    pub deadline: Option<DateTime<Utc>>,
}

/// A saga past its deadline, as the store finds it; `T` is the trace it started with.
#[derive(Debug, Clone, PartialEq)]
pub struct Overdue<S, T> {
    pub saga_key: Uuid,
    pub status: S,
    pub trace: T,
}

/// A change of status of machine `S`.
pub type TransitionOf<'a, S> = Transition<'a, S, <S as StatusMachine>::Inbound>;

/// An overdue saga of machine `S`.
pub type OverdueOf<S> = Overdue<S, <<S as StatusMachine>::Inbound as OwnerEvent>::Trace>;

/// The deadline of a saga entering a status at `now` that times out `after` it: to the
/// microsecond (what an event's `deadline` keeps); `None` without a timeout, or past
/// the end of time.
pub fn deadline(now: DateTime<Utc>, after: Option<Duration>) -> Option<DateTime<Utc>> {
    let at = now.checked_add_signed(TimeDelta::from_std(after?).ok()?)?;
    DateTime::from_timestamp_micros(at.timestamp_micros())
}

/// Where a status owner keeps its sagas of machine `S`: the SQL behind the status
/// machine, which the owning service implements. The driver and the generated entry
/// commands call it, each method in the caller's transaction (`ctx`), so a status, its
/// history row and the events it publishes commit together.
pub trait Store<S: StatusMachine>: Send + Sync {
    type Ctx: Send;
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// The saga's status, locked until the transaction ends; `None` when the saga is not
    /// known here.
    fn load_for_update(
        &self,
        ctx: &mut Self::Ctx,
        saga_key: Uuid,
    ) -> impl Future<Output = Result<Option<S>, Self::Error>> + Send;

    /// How long a saga may stay in `status` before it times out: the spec's timeout
    /// (`None`: it has none); a store may scale it (tests shorten them).
    fn timeout(&self, status: S) -> Option<Duration> {
        status.timeout_after()
    }

    /// The time deadlines are counted from: the wall clock; a test scenario's virtual
    /// clock moves only when told.
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Writes a transition: the status `to`, its `deadline` and the history row.
    fn write_transition(
        &self,
        ctx: &mut Self::Ctx,
        transition: &TransitionOf<'_, S>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Keeps an event that arrived before the status it needs; parking the same event
    /// twice keeps one.
    fn park(
        &self,
        ctx: &mut Self::Ctx,
        saga_key: Uuid,
        event: &ParkedEvent,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The events parked for the saga, oldest first.
    fn parked(
        &self,
        ctx: &mut Self::Ctx,
        saga_key: Uuid,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, Self::Error>> + Send;

    /// Removes a parked event once it is applied.
    fn unpark(&self, ctx: &mut Self::Ctx, event_id: Uuid) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Writes an event to the outbox.
    fn publish(
        &self,
        ctx: &mut Self::Ctx,
        record: OutboxRecord,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The saga whose deadline passed longest ago (at or before `as_of`) while in one of
    /// `statuses`, its key not in `skip`, locked for this transaction; sagas another
    /// transaction holds are passed over. A machine without timeouts is never asked
    /// (its `WITH_TIMEOUT` is empty): its store may answer `Ok(None)`.
    fn next_overdue(
        &self,
        ctx: &mut Self::Ctx,
        statuses: &[S],
        as_of: SystemTime,
        skip: &[Uuid],
    ) -> impl Future<Output = Result<Option<OverdueOf<S>>, Self::Error>> + Send;
}

/// The deadline of a saga entering `status` now (the store's [`Store::now`]): now plus
/// the store's [`Store::timeout`] of it, to the microsecond.
pub fn deadline_of<S: StatusMachine, St: Store<S> + ?Sized>(store: &St, status: S) -> Option<DateTime<Utc>> {
    deadline(store.now(), store.timeout(status))
}

/// The failures of the driver itself, beside the store's (the generated `HandleError`).
pub trait Failure<E>: Sized {
    /// The store failed.
    fn store(error: E) -> Self;
    /// The owner does not know the saga (yet): its first event may still be on its way.
    fn unknown_saga(saga_key: Uuid) -> Self;
    /// The event reached the owner in a status the spec gives no answer for.
    fn unanswered(status: &'static str, event: &'static str) -> Self;
}

/// How the owner's handler `H` answers the owner's events, and how an event waits parked:
/// what the spec binds, implemented by the generated `<Owner>Inbound` for every handler of
/// the generated `<Owner>Handler` trait. Every method runs in the caller's transaction
/// (`ctx`).
pub trait HandledBy<H>: OwnerEvent {
    type Status: StatusMachine<Inbound = Self, Event = Self::Kind>;
    type Ctx: Send;
    /// The handler's (and so the store's) error.
    type Error: Send;
    type Failure: Failure<Self::Error> + Send;

    /// The event as it waits parked.
    fn to_parked(&self) -> Result<ParkedEvent, Self::Failure>;
    /// A parked event decoded again; `None` when it is no longer one of the owner's.
    fn unparked(parked: &ParkedEvent) -> Option<Self>;
    /// Runs `handler` for the event; its reply as an outbox record.
    fn handle(
        self,
        handler: &H,
        ctx: &mut Self::Ctx,
        step: Step<Self::Status>,
    ) -> impl Future<Output = Result<Option<OutboxRecord>, Self::Failure>> + Send;
    /// Asks `handler` for the event a timeout from `saga.status` to `to` publishes; as an
    /// outbox record of the saga, in its trace.
    fn on_timeout(
        handler: &H,
        ctx: &mut Self::Ctx,
        saga: OverdueOf<Self::Status>,
        to: Self::Status,
    ) -> impl Future<Output = Result<Option<OutboxRecord>, Self::Failure>> + Send;
}

/// The failure of the driver for machine `S` whose owner's handler is `H`.
pub type FailureOf<S, H> = <<S as StatusMachine>::Inbound as HandledBy<H>>::Failure;

/// Runs an event the owner received through the status machine, then its handler (see
/// the module's documentation). Returns the handler's reply.
pub async fn run_event<St, H, E>(
    store: &St,
    handler: &H,
    ctx: &mut E::Ctx,
    event: E,
) -> Result<Option<OutboxRecord>, E::Failure>
where
    E: HandledBy<H>,
    St: Store<E::Status, Ctx = E::Ctx, Error = E::Error>,
{
    let saga_key = event.saga_key();
    let kind = event.kind();
    let status = store
        .load_for_update(ctx, saga_key)
        .await
        .map_err(E::Failure::store)?
        .ok_or_else(|| E::Failure::unknown_saga(saga_key))?;
    let step = if !E::Status::is_trigger(kind) {
        Step::Recorded { status }
    } else {
        match status.next(kind) {
            Some(to) => {
                let change = Transition {
                    saga_key,
                    from: Some(status),
                    to,
                    event_id: event.event_id(),
                    event_type: E::Status::event_name(kind),
                    cause: Cause::Event(&event),
                    deadline: deadline_of(store, to),
                };
                store.write_transition(ctx, &change).await.map_err(E::Failure::store)?;
                Step::Moved { from: status, to }
            }
            None if status.is_terminal() => Step::Late { status },
            None if E::Status::parks(kind) => {
                let parked = event.to_parked()?;
                store.park(ctx, saga_key, &parked).await.map_err(E::Failure::store)?;
                return Ok(None);
            }
            None => return Err(E::Failure::unanswered(status.name(), E::Status::event_name(kind))),
        }
    };
    let reply = event.handle(handler, ctx, step).await?;
    if let Step::Moved { to, .. } = step {
        apply_parked::<_, _, E>(store, handler, ctx, saga_key, to).await?;
    }
    Ok(reply)
}

/// Applies, oldest first, each parked event the status now accepts, until none does;
/// their replies go to the outbox. A terminal status accepts none: the store is not
/// asked for the parked events then (one statement less for every saga that ends).
async fn apply_parked<St, H, E>(
    store: &St,
    handler: &H,
    ctx: &mut E::Ctx,
    saga_key: Uuid,
    mut status: E::Status,
) -> Result<(), E::Failure>
where
    E: HandledBy<H>,
    St: Store<E::Status, Ctx = E::Ctx, Error = E::Error>,
{
    while !status.is_terminal() {
        let parked = store.parked(ctx, saga_key).await.map_err(E::Failure::store)?;
        let next = parked.iter().find_map(|parked| {
            // One that no longer decodes (its schema changed while it waited) stays parked,
            // for an operator to see: it must not fail the event in hand.
            let event = E::unparked(parked)?;
            let to = status.next(event.kind())?;
            Some((parked.event_id, event, to))
        });
        let Some((event_id, event, to)) = next else { return Ok(()) };
        store.unpark(ctx, event_id).await.map_err(E::Failure::store)?;
        let change = Transition {
            saga_key,
            from: Some(status),
            to,
            event_id,
            event_type: E::Status::event_name(event.kind()),
            cause: Cause::Event(&event),
            deadline: deadline_of(store, to),
        };
        store.write_transition(ctx, &change).await.map_err(E::Failure::store)?;
        let step = Step::Moved { from: status, to };
        status = to;
        if let Some(record) = event.handle(handler, ctx, step).await? {
            store.publish(ctx, record).await.map_err(E::Failure::store)?;
        }
    }
    Ok(())
}

/// Resolves the most overdue saga whose deadline is at or before `as_of` and whose key is
/// not in `skip`, as the spec says: asks the owner for the event the timeout publishes
/// (its compensations undo what the saga did), writes the transition with its history
/// row and the event. `Ok(None)` when no saga is due; an error names the saga it failed
/// for.
pub async fn run_timeout<St, H, S>(
    store: &St,
    handler: &H,
    ctx: &mut St::Ctx,
    as_of: SystemTime,
    skip: &[Uuid],
) -> Result<Option<Uuid>, SweepFailure<FailureOf<S, H>>>
where
    S: StatusMachine<Inbound: HandledBy<H, Status = S, Ctx = St::Ctx, Error = St::Error>>,
    St: Store<S>,
{
    let failed = |saga_key, error| SweepFailure { saga_key, error };
    if S::WITH_TIMEOUT.is_empty() {
        return Ok(None);
    }
    let due = store.next_overdue(ctx, S::WITH_TIMEOUT, as_of, skip).await;
    let Some(saga) = due.map_err(|e| failed(None, FailureOf::<S, H>::store(e)))? else { return Ok(None) };
    let (saga_key, from) = (saga.saga_key, saga.status);
    let key = Some(saga_key);
    let Some(to) = from.timeout_to() else { return Ok(key) };
    let record = S::Inbound::on_timeout(handler, ctx, saga, to).await.map_err(|e| failed(key, e))?;
    let (event_id, event_type) = match &record {
        Some(r) => (r.event_id, r.event_type.as_str()),
        None => (Uuid::now_v7(), "timeout"),
    };
    let change = Transition {
        saga_key,
        from: Some(from),
        to,
        event_id,
        event_type,
        cause: Cause::Timeout,
        deadline: deadline_of(store, to),
    };
    store.write_transition(ctx, &change).await.map_err(|e| failed(key, FailureOf::<S, H>::store(e)))?;
    if let Some(record) = record {
        store.publish(ctx, record).await.map_err(|e| failed(key, FailureOf::<S, H>::store(e)))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Runs a future that never waits (the owner below does not).
    fn ready<T>(future: impl Future<Output = T>) -> T {
        match pin!(future).as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the future waited"),
        }
    }

    /// `a -x-> b -y-> c`, `a -z-> ended`; `y` parks, `note` moves nothing; `a` and `b`
    /// time out to `timed_out`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum St {
        A,
        B,
        C,
        Ended,
        TimedOut,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ev {
        X,
        Y,
        Z,
        Note,
    }

    const EVENTS: [(Ev, &str); 4] = [(Ev::X, "x"), (Ev::Y, "y"), (Ev::Z, "z"), (Ev::Note, "note")];

    impl StatusMachine for St {
        type Event = Ev;
        type Inbound = Msg;
        const WITH_TIMEOUT: &'static [St] = &[St::A, St::B];

        fn name(self) -> &'static str {
            match self {
                St::A => "a",
                St::B => "b",
                St::C => "c",
                St::Ended => "ended",
                St::TimedOut => "timed_out",
            }
        }
        fn event_name(event: Ev) -> &'static str {
            EVENTS.iter().find(|(e, _)| *e == event).map(|(_, n)| *n).unwrap()
        }
        fn is_terminal(self) -> bool {
            matches!(self, St::C | St::Ended | St::TimedOut)
        }
        fn next(self, event: Ev) -> Option<St> {
            match (self, event) {
                (St::A, Ev::X) => Some(St::B),
                (St::B, Ev::Y) => Some(St::C),
                (St::A, Ev::Z) => Some(St::Ended),
                _ => None,
            }
        }
        fn is_trigger(event: Ev) -> bool {
            event != Ev::Note
        }
        fn parks(event: Ev) -> bool {
            event == Ev::Y
        }
        fn timeout_after(self) -> Option<Duration> {
            St::WITH_TIMEOUT.contains(&self).then_some(AFTER)
        }
        fn timeout_to(self) -> Option<St> {
            St::WITH_TIMEOUT.contains(&self).then_some(St::TimedOut)
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Msg {
        id: Uuid,
        key: Uuid,
        kind: Ev,
    }

    impl Msg {
        fn new(key: Uuid, kind: Ev) -> Self {
            Msg { id: Uuid::now_v7(), key, kind }
        }
    }

    impl OwnerEvent for Msg {
        type Kind = Ev;
        type Trace = &'static str;
        fn kind(&self) -> Ev {
            self.kind
        }
        fn event_id(&self) -> Uuid {
            self.id
        }
        fn saga_key(&self) -> Uuid {
            self.key
        }
    }

    /// The store's failure (none of these tests makes one).
    #[derive(Debug, PartialEq)]
    struct DbError;

    impl fmt::Display for DbError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("the database failed")
        }
    }

    impl std::error::Error for DbError {}

    impl Classify for DbError {
        fn class(&self) -> crate::FailureClass {
            crate::FailureClass::Infrastructure
        }
    }

    #[derive(Debug, PartialEq)]
    enum Fail {
        Store(DbError),
        Unknown(Uuid),
        Unanswered(&'static str, &'static str),
    }

    impl Failure<DbError> for Fail {
        fn store(error: DbError) -> Self {
            Fail::Store(error)
        }
        fn unknown_saga(saga_key: Uuid) -> Self {
            Fail::Unknown(saga_key)
        }
        fn unanswered(status: &'static str, event: &'static str) -> Self {
            Fail::Unanswered(status, event)
        }
    }

    /// The owner's tables: the transaction every method runs in.
    #[derive(Debug, Default)]
    struct Db {
        sagas: HashMap<Uuid, (St, Option<DateTime<Utc>>)>,
        /// (saga, from, to, event type, cause)
        history: Vec<(Uuid, Option<St>, St, String, &'static str)>,
        parked: Vec<(Uuid, ParkedEvent)>,
        outbox: Vec<OutboxRecord>,
        /// How many times the driver asked for a saga's parked events.
        parked_reads: usize,
        /// What the handler ran: (event type, step).
        handled: Vec<(&'static str, Step<St>)>,
    }

    impl Db {
        fn with(sagas: &[(Uuid, St)]) -> Self {
            Db { sagas: sagas.iter().map(|(k, s)| (*k, (*s, None))).collect(), ..Db::default() }
        }
        fn status(&self, key: Uuid) -> St {
            self.sagas[&key].0
        }
    }

    fn record(key: Uuid, event_type: &str) -> OutboxRecord {
        OutboxRecord {
            event_id: Uuid::now_v7(),
            topic: "t".into(),
            partition_key: key.to_string(),
            event_type: event_type.into(),
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The owner's store; deadlines are counted from `now`.
    struct FakeStore {
        now: DateTime<Utc>,
    }

    const AFTER: Duration = Duration::from_secs(30);

    impl Store<St> for FakeStore {
        type Ctx = Db;
        type Error = DbError;

        async fn load_for_update(&self, db: &mut Db, key: Uuid) -> Result<Option<St>, DbError> {
            Ok(db.sagas.get(&key).map(|(s, _)| *s))
        }
        fn now(&self) -> DateTime<Utc> {
            self.now
        }
        async fn write_transition(&self, db: &mut Db, t: &TransitionOf<'_, St>) -> Result<(), DbError> {
            let cause = match t.cause {
                Cause::Started => "started",
                Cause::Event(_) => "event",
                Cause::Timeout => "timeout",
                Cause::Seeded => "seeded",
            };
            db.sagas.insert(t.saga_key, (t.to, t.deadline));
            db.history.push((t.saga_key, t.from, t.to, t.event_type.to_owned(), cause));
            Ok(())
        }
        async fn park(&self, db: &mut Db, key: Uuid, parked: &ParkedEvent) -> Result<(), DbError> {
            db.parked.push((key, parked.clone()));
            Ok(())
        }
        async fn parked(&self, db: &mut Db, key: Uuid) -> Result<Vec<ParkedEvent>, DbError> {
            db.parked_reads += 1;
            Ok(db.parked.iter().filter(|(k, _)| *k == key).map(|(_, p)| p.clone()).collect())
        }
        async fn unpark(&self, db: &mut Db, event_id: Uuid) -> Result<(), DbError> {
            db.parked.retain(|(_, p)| p.event_id != event_id);
            Ok(())
        }
        async fn publish(&self, db: &mut Db, record: OutboxRecord) -> Result<(), DbError> {
            db.outbox.push(record);
            Ok(())
        }
        async fn next_overdue(
            &self,
            db: &mut Db,
            statuses: &[St],
            as_of: SystemTime,
            skip: &[Uuid],
        ) -> Result<Option<OverdueOf<St>>, DbError> {
            let mut due: Vec<_> = db
                .sagas
                .iter()
                .filter(|(k, (s, d))| {
                    statuses.contains(s) && !skip.contains(k) && d.is_some_and(|d| SystemTime::from(d) <= as_of)
                })
                .collect();
            due.sort_by_key(|(_, (_, d))| *d);
            Ok(due.first().map(|(k, (s, _))| Overdue { saga_key: **k, status: *s, trace: "trace" }))
        }
    }

    impl FakeStore {
        fn at(now: DateTime<Utc>) -> Self {
            FakeStore { now }
        }
    }

    /// The owner's handler: replies `done` to `y`; its timeout publishes `expired` from
    /// `b` and nothing from `a`.
    struct Replies;

    impl HandledBy<Replies> for Msg {
        type Status = St;
        type Ctx = Db;
        type Error = DbError;
        type Failure = Fail;

        fn to_parked(&self) -> Result<ParkedEvent, Fail> {
            Ok(ParkedEvent {
                event_id: self.id,
                event_type: St::event_name(self.kind).into(),
                topic: "t".into(),
                payload: self.key.as_bytes().to_vec(),
            })
        }
        fn unparked(parked: &ParkedEvent) -> Option<Msg> {
            let kind = EVENTS.iter().find(|(_, n)| *n == parked.event_type)?.0;
            Some(Msg { id: parked.event_id, key: Uuid::from_slice(&parked.payload).ok()?, kind })
        }
        async fn handle(self, _: &Replies, db: &mut Db, step: Step<St>) -> Result<Option<OutboxRecord>, Fail> {
            db.handled.push((St::event_name(self.kind), step));
            Ok((self.kind == Ev::Y).then(|| record(self.key, "done")))
        }
        async fn on_timeout(
            _: &Replies,
            _: &mut Db,
            saga: OverdueOf<St>,
            to: St,
        ) -> Result<Option<OutboxRecord>, Fail> {
            assert_eq!((saga.trace, to), ("trace", St::TimedOut));
            Ok((saga.status == St::B).then(|| record(saga.saga_key, "expired")))
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_trigger_moves_the_status_with_a_history_row_and_a_deadline() {
        let (key, owner) = (Uuid::now_v7(), FakeStore::at(at(0)));
        let mut db = Db::with(&[(key, St::A)]);
        assert_eq!(ready(run_event(&owner, &Replies, &mut db, Msg::new(key, Ev::X))), Ok(None));
        assert_eq!(db.sagas[&key], (St::B, Some(at(30))));
        assert_eq!(db.history, [(key, Some(St::A), St::B, "x".to_owned(), "event")]);
        assert_eq!(db.handled, [("x", Step::Moved { from: St::A, to: St::B })]);
    }

    #[test]
    fn an_event_that_moves_nothing_is_recorded_and_handled() {
        let key = Uuid::now_v7();
        let mut db = Db::with(&[(key, St::B)]);
        ready(run_event(&FakeStore::at(at(0)), &Replies, &mut db, Msg::new(key, Ev::Note))).unwrap();
        assert!(db.history.is_empty());
        assert_eq!(db.handled, [("note", Step::Recorded { status: St::B })]);
    }

    #[test]
    fn an_event_after_the_end_is_late_and_changes_nothing() {
        let key = Uuid::now_v7();
        let mut db = Db::with(&[(key, St::Ended)]);
        ready(run_event(&FakeStore::at(at(0)), &Replies, &mut db, Msg::new(key, Ev::X))).unwrap();
        assert_eq!(db.status(key), St::Ended);
        assert!(db.history.is_empty());
        assert_eq!(db.handled, [("x", Step::Late { status: St::Ended })]);
    }

    #[test]
    fn an_early_event_waits_parked_until_the_status_accepts_it() {
        let (key, owner) = (Uuid::now_v7(), FakeStore::at(at(0)));
        let mut db = Db::with(&[(key, St::A)]);
        let early = Msg::new(key, Ev::Y);
        assert_eq!(ready(run_event(&owner, &Replies, &mut db, early.clone())), Ok(None));
        assert_eq!((db.status(key), db.parked.len()), (St::A, 1));
        assert!(db.handled.is_empty() && db.history.is_empty());

        ready(run_event(&owner, &Replies, &mut db, Msg::new(key, Ev::X))).unwrap();
        assert_eq!(db.status(key), St::C);
        assert!(db.parked.is_empty());
        assert_eq!(
            db.handled,
            [("x", Step::Moved { from: St::A, to: St::B }), ("y", Step::Moved { from: St::B, to: St::C })]
        );
        let (_, _, _, _, cause) = db.history[1];
        assert_eq!((db.history[1].1, db.history[1].2, cause), (Some(St::B), St::C, "event"));
        assert_eq!(db.outbox.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>(), ["done"]);
        // Looked for once, after `b`; `c` is terminal and accepts nothing.
        assert_eq!(db.parked_reads, 1);
    }

    #[test]
    fn a_saga_that_ends_does_not_look_for_parked_events() {
        let (key, owner) = (Uuid::now_v7(), FakeStore::at(at(0)));
        let mut db = Db::with(&[(key, St::A)]);
        ready(run_event(&owner, &Replies, &mut db, Msg::new(key, Ev::Y))).unwrap();
        ready(run_event(&owner, &Replies, &mut db, Msg::new(key, Ev::Z))).unwrap();
        assert_eq!((db.status(key), db.parked.len(), db.parked_reads), (St::Ended, 1, 0));
        assert_eq!(db.handled, [("z", Step::Moved { from: St::A, to: St::Ended })]);
    }

    #[test]
    fn a_parked_event_of_another_saga_stays_parked() {
        let (one, other, owner) = (Uuid::now_v7(), Uuid::now_v7(), FakeStore::at(at(0)));
        let mut db = Db::with(&[(one, St::A), (other, St::A)]);
        ready(run_event(&owner, &Replies, &mut db, Msg::new(other, Ev::Y))).unwrap();
        ready(run_event(&owner, &Replies, &mut db, Msg::new(one, Ev::X))).unwrap();
        assert_eq!((db.status(one), db.status(other), db.parked.len()), (St::B, St::A, 1));
    }

    #[test]
    fn an_event_without_an_answer_fails_and_an_unknown_saga_waits() {
        let (key, owner) = (Uuid::now_v7(), FakeStore::at(at(0)));
        let mut db = Db::with(&[(key, St::B)]);
        assert_eq!(ready(run_event(&owner, &Replies, &mut db, Msg::new(key, Ev::Z))), Err(Fail::Unanswered("b", "z")));
        let unknown = Uuid::now_v7();
        assert_eq!(ready(run_event(&owner, &Replies, &mut db, Msg::new(unknown, Ev::X))), Err(Fail::Unknown(unknown)));
        assert!(db.handled.is_empty() && db.history.is_empty());
    }

    #[test]
    fn timeouts_resolve_the_most_overdue_saga_first() {
        let (a, b, owner) = (Uuid::now_v7(), Uuid::now_v7(), FakeStore::at(at(0)));
        let mut db = Db::default();
        db.sagas.insert(a, (St::A, Some(at(20))));
        db.sagas.insert(b, (St::B, Some(at(10))));
        assert_eq!(ready(run_timeout(&owner, &Replies, &mut db, SystemTime::from(at(5)), &[])).unwrap(), None);

        let as_of = SystemTime::from(at(20));
        assert_eq!(ready(run_timeout(&owner, &Replies, &mut db, as_of, &[])).unwrap(), Some(b));
        assert_eq!(ready(run_timeout(&owner, &Replies, &mut db, as_of, &[b])).unwrap(), Some(a));
        assert_eq!(ready(run_timeout(&owner, &Replies, &mut db, as_of, &[b, a])).unwrap(), None);
        assert_eq!((db.status(a), db.status(b)), (St::TimedOut, St::TimedOut));
        let rows: Vec<_> = db.history.iter().map(|(k, f, t, e, c)| (*k, *f, *t, e.as_str(), *c)).collect();
        assert_eq!(
            rows,
            [
                (b, Some(St::B), St::TimedOut, "expired", "timeout"),
                (a, Some(St::A), St::TimedOut, "timeout", "timeout")
            ]
        );
        assert_eq!(db.outbox.len(), 1, "only `b`'s timeout publishes");
        assert_eq!(db.outbox[0].event_type, "expired");
    }

    #[test]
    fn deadlines_are_counted_to_the_microsecond() {
        let now = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        let at = deadline(now, Some(Duration::from_secs(30))).unwrap();
        assert_eq!(at.timestamp_nanos_opt(), Some(1_700_000_030_123_456_000));
        assert_eq!(deadline(now, None), None);
        assert_eq!(deadline(DateTime::<Utc>::MAX_UTC, Some(Duration::from_secs(1))), None);
    }
}
