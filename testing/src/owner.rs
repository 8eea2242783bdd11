//! What a scenario keeps of the status owner's store.

use saga_contract::OutboxRecord;
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
/// counted from, and every change of status and every event published, per saga. The
/// generated `<Owner>Observed` store keeps it up to date.
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
