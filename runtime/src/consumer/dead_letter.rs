//! Dead letters: a message that is itself wrong goes to `<topic><dlq_suffix>`
//! with headers saying why, so its partition can move on and an operator can
//! look at it and redrive it (`cargo xtask dlq`).

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Received;

/// Dead-letter headers (see docs/runtime.md).
pub mod dlq_headers {
    /// `undecodable`, `permanent` or `retries-exhausted` ([`super::Reason`]).
    pub const REASON: &str = "dlq-reason";
    pub const ERROR: &str = "dlq-error";
    pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
    pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
    pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
    pub const ATTEMPTS: &str = "dlq-attempts";
    pub const CONSUMER_GROUP: &str = "dlq-consumer-group";
    pub const FAILED_AT: &str = "dlq-failed-at";
}

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The bytes are no event this service knows (or an unknown schema).
    Undecodable,
    /// The handler's verdict: this event can never be handled.
    Permanent,
    /// The state it needs never appeared within the spec's retry policy.
    RetriesExhausted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Undecodable => "undecodable",
            Reason::Permanent => "permanent",
            Reason::RetriesExhausted => "retries-exhausted",
        }
    }
}

/// What goes into a dead letter's headers besides the message's own.
pub(super) struct Verdict<'a> {
    pub group: &'a str,
    pub reason: Reason,
    pub error: &'a str,
    pub attempts: u32,
}

/// Produces `message` to `dlq_topic`: same key, same bytes, its headers plus
/// the `dlq-*` ones.
pub(super) async fn write(
    producer: &FutureProducer,
    dlq_topic: &str,
    message: &OwnedMessage,
    received: &Received,
    verdict: &Verdict<'_>,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &received.headers {
        if !k.starts_with("dlq-") {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
    }
    let error: String = verdict.error.chars().take(2000).collect();
    let partition = received.partition.to_string();
    let offset = received.offset.to_string();
    let attempts = verdict.attempts.to_string();
    let failed_at = chrono::Utc::now().to_rfc3339();
    for (k, v) in [
        (dlq_headers::REASON, verdict.reason.as_str()),
        (dlq_headers::ERROR, error.as_str()),
        (dlq_headers::ORIGINAL_TOPIC, received.topic.as_str()),
        (dlq_headers::ORIGINAL_PARTITION, partition.as_str()),
        (dlq_headers::ORIGINAL_OFFSET, offset.as_str()),
        (dlq_headers::ATTEMPTS, attempts.as_str()),
        (dlq_headers::CONSUMER_GROUP, verdict.group),
        (dlq_headers::FAILED_AT, failed_at.as_str()),
    ] {
        headers = headers.insert(Header { key: k, value: Some(v) });
    }
    let payload = message.payload().unwrap_or_default();
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq_topic).payload(payload).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    producer.send(record, Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
}
