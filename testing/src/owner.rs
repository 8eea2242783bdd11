//! What a scenario keeps of the status owner's store.

use std::future::Future;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use saga_contract::owner::{OverdueOf, StatusMachine, Store, TransitionOf};
use saga_contract::{OutboxRecord, ParkedEvent};
use uuid::Uuid;

use crate::{BySaga, Emitted, EventKind, Published, VirtualClock};

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
}
