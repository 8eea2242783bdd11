//! The rows of the tables a saga's spec is generated into (`topology` of the generated
//! crate: `TOPICS`, `SUBSCRIPTIONS`, `EVENTS`, `COMPENSATIONS`, `KAFKA_GRANTS`), which
//! operators' tools, the deployment generator and the tests read as data. The same for
//! every spec; only the tables' contents are generated.

/// One Kafka topic the saga uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub name: &'static str,
    pub partitions: i32,
    /// Where messages that cannot be processed go.
    pub dlq: &'static str,
}

/// A service receiving an event, and what it may publish in reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub service: &'static str,
    pub event_type: &'static str,
    pub topic: &'static str,
    pub replies: &'static [&'static str],
}

/// An event: where it goes, who publishes it, its schema fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventInfo {
    pub event_type: &'static str,
    pub topic: &'static str,
    pub publisher: &'static str,
    /// Also consumed outside the saga.
    pub external: bool,
    pub fingerprint: [u8; 8],
}

/// On `on`, `service` undoes the local effect of its earlier event `undoes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compensation {
    pub on: &'static str,
    pub service: &'static str,
    pub undoes: &'static str,
    /// Arriving before the request it undoes, it leaves a tombstone: the request,
    /// when it comes, does nothing.
    pub tombstone: bool,
}

/// What the broker lets a service do, as the principal named after it
/// (docs/security.md): it writes the topics it publishes to and the
/// dead-letter twins of those it consumes, reads what it consumes with
/// its own group, describes the status owner's group and topics. And
/// what it lets the operator console (`console`) do: read everything,
/// redrive into the saga's topics, with groups of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaGrant {
    pub principal: &'static str,
    /// `topic` or `group`.
    pub resource: &'static str,
    /// `literal`: the resource named `name`; `prefixed`: every resource whose name starts with it.
    pub pattern: &'static str,
    pub name: &'static str,
    /// Kafka's names: `Read`, `Write`, `Describe`.
    pub operations: &'static [&'static str],
}
