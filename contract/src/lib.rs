//! What the generated saga code and the runtime agree on, so that neither
//! depends on the other: the generated crate stays light (its compile-fail
//! tests build it with its dependencies), and the runtime stays free of any
//! one saga. The generated code implements [`Inbound`] and [`Dispatch`] for
//! each service's inbound events; the runtime's transactional consumer
//! drives any type that does, and stores the [`OutboxRecord`]s they return.
//! The spec's consumer groups ([`ConsumerGroup`]) and services
//! ([`ServiceIdentity`]) are generated as data the runtime configures and
//! starts its consumers from; the status owner's timeouts are generated as a
//! [`Sweep`] the runtime's sweeper runs, driven by the generic status owner
//! of [`owner`].

pub mod owner;
pub mod topology;

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use uuid::Uuid;

/// One event to publish: inserted into the outbox in the transaction of the
/// state change it announces, published by the relay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxRecord {
    pub event_id: Uuid,
    /// Logical topic (without any deployment prefix).
    pub topic: String,
    /// Kafka key: the saga key, so a saga's events share a partition.
    pub partition_key: String,
    pub event_type: String,
    /// The encoded event.
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Facts about a decoded event the runtime needs: its inbox key and what
/// its log lines carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    pub event_id: Uuid,
    pub event_type: &'static str,
    /// The saga key (the order id of the order saga).
    pub saga_key: Uuid,
    pub traceparent: Option<String>,
}

/// How a consumer retries a failing message before dead-lettering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts including the first; then the message goes to the DLQ.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// Backoff doubles per attempt up to this.
    pub max_backoff: Duration,
}

/// One service's Kafka consumer group, as the spec declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGroup {
    pub service: &'static str,
    pub group_id: &'static str,
    /// Logical topic names (without any deployment prefix).
    pub topics: &'static [&'static str],
    pub retry: RetryPolicy,
    /// Most messages handled in one database transaction (1: one at a time).
    pub max_batch: usize,
}

/// An event a service consumes, decoded from a Kafka message.
pub trait Inbound: Sized + Send + 'static {
    /// `Ok(None)`: an event on a consumed topic that this service does not
    /// handle. `Err`: bytes that are no event at all (dead-letter them).
    fn decode(topic: &str, payload: &[u8]) -> Result<Option<Self>, String>;

    fn meta(&self) -> EventMeta;
}

/// What a failed delivery means, and so what the consumer does with the
/// message. Only a message that is itself wrong belongs in a dead-letter
/// queue; an outage of the world around it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The world is broken for a while: the database is unreachable, the
    /// pool timed out, a connection was lost, a serialization failure or a
    /// deadlock, a broker error. Never dead-lettered: the consumer waits and
    /// tries again for as long as it takes.
    Infrastructure,
    /// The state the message needs does not exist yet (a reply about a saga
    /// this service has not seen): retried by the spec's policy, then
    /// dead-lettered.
    NotYet,
    /// The handler lost a race with a concurrent transaction (a unique or
    /// exclusion violation: another instance handled a related event of the
    /// same saga at the same moment): retried by the spec's policy, where a
    /// fresh transaction sees what the other one committed, then
    /// dead-lettered. Serialization failures and deadlocks are
    /// [`FailureClass::Infrastructure`]: PostgreSQL says outright that a
    /// retry will do.
    Contended,
    /// The message itself is wrong and retrying cannot help (a handler's
    /// permanent verdict): dead-lettered at once.
    Permanent,
}

/// An error that knows its [`FailureClass`]: what every handler's error
/// type implements, so the consumer can tell an outage from a bad message.
pub trait Classify {
    fn class(&self) -> FailureClass;
}

/// Runs handler `H`'s method for an inbound event, in context `Ctx` (the
/// consumer's database transaction), and returns the reply to publish.
pub trait Dispatch<H>: Inbound {
    type Ctx: Send;
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    fn dispatch<'a>(
        self,
        handler: &'a H,
        ctx: &'a mut Self::Ctx,
    ) -> impl Future<Output = Result<Option<OutboxRecord>, Self::Error>> + Send + 'a;
}

/// A topic as the spec declares it. Every topic of a saga has the same
/// partition count, so one saga's events (keyed by the saga key) land on the
/// same partition number in each; a service refuses to start against a
/// topic with another count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicShape {
    /// Logical name (without any deployment prefix).
    pub name: &'static str,
    pub partitions: i32,
}

/// A service of the saga, as the spec declares it: what the runtime needs
/// to start it. Generated as a constant per service (`topology::ORDER`, ...),
/// typed by the inbound events its consumer decodes, so a service cannot be
/// started with another's events.
#[derive(Debug)]
pub struct ServiceIdentity<E> {
    pub name: &'static str,
    /// Position in the spec's list of services (the local stack's ports follow it).
    pub ordinal: u16,
    /// Its consumer group: every service of a saga subscribes to something.
    pub consumer_group: &'static ConsumerGroup,
    /// Every topic it subscribes or publishes to, with the partition count
    /// the spec gives it: checked against the broker before it starts.
    pub topics: &'static [TopicShape],
    /// Suffix of the dead-letter twin of every topic.
    pub dlq_suffix: &'static str,
    /// The saga's schema topic: every publisher registers its writer schemas
    /// there, keyed by fingerprint, before it publishes with them; a consumer
    /// built before a version existed looks it up there (`saga_wire::learned`).
    pub schema_topic: &'static str,
    /// The group the service reads the schema topic under: it never joins it
    /// or commits to it, but the broker checks its grant on it all the same.
    pub schema_group: &'static str,
    /// The schema histories of the events the service publishes: every
    /// version of each is registered on [`ServiceIdentity::schema_topic`].
    pub writes: &'static [fn() -> &'static saga_wire::SchemaHistory],
    /// The generated `<Service>Inbound`.
    pub inbound: PhantomData<fn() -> E>,
}

/// An event kept by the status owner because it arrived before the status
/// it needs (replies on different topics are not ordered against each
/// other): its encoded form, decoded again when the status moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Resolves sagas that stayed in a status past its deadline: generated for
/// the status owner, run by the runtime's sweeper one saga per transaction,
/// so that one saga that cannot be resolved never holds back the others.
pub trait Sweep: Send + Sync + 'static {
    type Ctx: Send;
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// Resolves the most overdue saga whose deadline is at or before `as_of`
    /// and whose key is not in `skip`, in `ctx` (one transaction).
    /// `Ok(None)`: none is due. `as_of` is the time deadlines are judged at:
    /// the runtime passes a clock that stands still while replies may still
    /// be on their way (see the runtime's `caught_up` module), not the wall clock.
    fn sweep_one<'a>(
        &'a self,
        ctx: &'a mut Self::Ctx,
        as_of: std::time::SystemTime,
        skip: &'a [Uuid],
    ) -> impl Future<Output = Result<Option<Uuid>, SweepFailure<Self::Error>>> + Send + 'a;
}

/// A sweep that failed, and the saga it failed for (`None`: before any
/// saga was found, e.g. the database is away).
#[derive(Debug)]
pub struct SweepFailure<E> {
    pub saga_key: Option<Uuid>,
    pub error: E,
}

/// A handler run failed: what the generated code's `HandleError<E>` is, with the saga's
/// encode error for `X`. [`Classify`] tells the consumer what to do with the message.
#[derive(Debug)]
pub enum HandleError<E, X> {
    /// The service's handler, or its store, failed.
    Handler(E),
    /// The reply could not be encoded.
    Encode(X),
    /// The status owner does not know the saga (yet): its first event may still be on
    /// its way. Retried by the spec's policy.
    UnknownSaga(Uuid),
    /// The event reached the status owner in a status the spec gives no answer for
    /// (no transition, not parked, not ended): `cargo xtask verify` proves this
    /// cannot happen, so the message is dead-lettered at once.
    Unanswered { status: &'static str, event: &'static str },
}

impl<E: std::fmt::Display, X: std::fmt::Display> std::fmt::Display for HandleError<E, X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandleError::Handler(e) => write!(f, "handler failed: {e}"),
            HandleError::Encode(e) => e.fmt(f),
            HandleError::UnknownSaga(key) => write!(f, "saga {key} is unknown here"),
            HandleError::Unanswered { status, event } => {
                write!(f, "`{event}` has no declared answer in status `{status}`")
            }
        }
    }
}

impl<E, X> std::error::Error for HandleError<E, X>
where
    E: std::error::Error + 'static,
    X: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandleError::Handler(e) => Some(e),
            // Transparent: the encode error speaks for itself.
            HandleError::Encode(e) => e.source(),
            HandleError::UnknownSaga(_) | HandleError::Unanswered { .. } => None,
        }
    }
}

impl<E: Classify, X> Classify for HandleError<E, X> {
    fn class(&self) -> FailureClass {
        match self {
            HandleError::Handler(e) => e.class(),
            HandleError::UnknownSaga(_) => FailureClass::NotYet,
            HandleError::Encode(_) | HandleError::Unanswered { .. } => FailureClass::Permanent,
        }
    }
}

impl<E, X> owner::Failure<E> for HandleError<E, X> {
    fn store(error: E) -> Self {
        HandleError::Handler(error)
    }

    fn unknown_saga(saga_key: Uuid) -> Self {
        HandleError::UnknownSaga(saga_key)
    }

    fn unanswered(status: &'static str, event: &'static str) -> Self {
        HandleError::Unanswered { status, event }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[derive(Debug)]
    struct Outage;

    impl std::fmt::Display for Outage {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("database away")
        }
    }

    impl std::error::Error for Outage {}

    impl Classify for Outage {
        fn class(&self) -> FailureClass {
            FailureClass::Infrastructure
        }
    }

    type Failed = HandleError<Outage, std::fmt::Error>;

    #[test]
    fn a_failed_handler_run_says_what_the_consumer_does() {
        let key = Uuid::nil();
        let cases: [(Failed, FailureClass, &str); 4] = [
            (HandleError::Handler(Outage), FailureClass::Infrastructure, "handler failed: database away"),
            (
                HandleError::Encode(std::fmt::Error),
                FailureClass::Permanent,
                "an error occurred when formatting an argument",
            ),
            (
                HandleError::UnknownSaga(key),
                FailureClass::NotYet,
                "saga 00000000-0000-0000-0000-000000000000 is unknown here",
            ),
            (
                HandleError::Unanswered { status: "created", event: "order.created" },
                FailureClass::Permanent,
                "`order.created` has no declared answer in status `created`",
            ),
        ];
        for (error, class, text) in cases {
            assert_eq!((error.class(), error.to_string().as_str()), (class, text));
        }
        assert!(Failed::Handler(Outage).source().is_some_and(|s| s.is::<Outage>()));
        assert!(Failed::UnknownSaga(key).source().is_none());
    }
}
