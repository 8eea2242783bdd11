//! Kafka client settings shared by the relay, the consumer and the DLQ.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use saga_contract::TopicShape;

/// How long a producer waits to fill a batch (`linger.ms`) unless told
/// otherwise: not at all. The relay enqueues a whole outbox batch at once and
/// librdkafka batches whatever queued up while a request was in flight, so a
/// wait only delayed every hop of a saga (5 ms doubled the open-loop median
/// latency, see BENCHMARKS.md).
pub const DEFAULT_LINGER_MS: u32 = 0;

/// Who this process is to the broker: a SASL/SCRAM principal and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials two optional settings give: both, or neither (no
    /// authentication); one without the other is an error, not a silent
    /// anonymous client.
    pub fn from_settings(username: Option<String>, password: Option<String>) -> Result<Option<Credentials>, String> {
        match (username, password) {
            (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
            (None, None) => Ok(None),
            _ => Err("give both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD, or neither".to_owned()),
        }
    }
}

/// The SASL mechanism of every client: SCRAM, so no password crosses the wire.
pub const SASL_MECHANISM: &str = "SCRAM-SHA-512";

static CREDENTIALS: std::sync::OnceLock<Option<Credentials>> = std::sync::OnceLock::new();

/// Makes every Kafka client this process creates from now on ([`client`])
/// authenticate as `credentials` (none: plaintext without authentication).
/// One identity per process: a service is one principal, with the topics and
/// group the spec gives it (docs/security.md). The first call wins; a later
/// one with other credentials is an error.
pub fn authenticate_as(credentials: Option<Credentials>) -> Result<(), String> {
    let username = credentials.as_ref().map(|c| c.username.clone());
    let set = CREDENTIALS.get_or_init(|| credentials.clone());
    if *set != credentials {
        return Err(format!(
            "this process already authenticates to Kafka as {:?}, not {username:?}",
            set.as_ref().map(|c| &c.username)
        ));
    }
    Ok(())
}

/// Settings every Kafka client of the platform starts from: the brokers, the
/// process's credentials ([`authenticate_as`]), and a reconnect backoff
/// capped at 1 s. librdkafka's default cap is 10 s, so after an outage of the
/// broker its clients came back up to 10 s after it did (the kill-broker
/// chaos scenario saw 8 to 10 s with no traffic at all).
pub fn client(brokers: &str) -> ClientConfig {
    client_as(brokers, CREDENTIALS.get().and_then(Option::as_ref))
}

/// [`client`], signed in as `credentials` (none: no authentication) rather
/// than as the process: for tools and tests that act as another principal.
pub fn client_as(brokers: &str, credentials: Option<&Credentials>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("reconnect.backoff.ms", "100").set("reconnect.backoff.max.ms", "1000");
    if let Some(credentials) = credentials {
        config
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", SASL_MECHANISM)
            .set("sasl.username", &credentials.username)
            .set("sasl.password", &credentials.password);
    }
    config
}

/// An idempotent producer (acks=all, at most 5 in flight): retries never
/// duplicate or reorder messages within a partition, which keeps every saga's
/// events in order. `linger_ms`: see `KAFKA_LINGER_MS` in docs/runtime.md.
pub fn producer(brokers: &str, linger_ms: u32) -> Result<FutureProducer, KafkaError> {
    client(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "30000")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", RECORD_BATCH_BYTES.to_string())
        .set("log_level", "4")
        .create()
}

/// Messages librdkafka keeps prefetched per partition (its default: 100,000).
const QUEUED_MIN_MESSAGES: u32 = 100;

/// Bytes one fetch returns of one partition at most (its default: 1 MiB), about a hundred of
/// the saga's events.
const MAX_PARTITION_FETCH_BYTES: u32 = 64 * 1024;

/// Bytes of one record batch a producer sends at most (librdkafka's default: 1 MB). A
/// broker answers a fetch with whole batches, the first however big, so a fetch's size
/// limit holds only for batches no bigger than it: after a backlog was published in
/// 1 MB batches (a relay catching up), one fetch of a busy topic brought 2,432 events
/// and the other topics' events waited behind all of them.
const RECORD_BATCH_BYTES: u32 = MAX_PARTITION_FETCH_BYTES;

/// How long librdkafka waits before the next fetch once its queue holds
/// [`QUEUED_MIN_MESSAGES`] (its default: 1 s). That queue is one for all of the consumer's
/// partitions, and the receiving loop empties it at once, so the threshold is crossed by
/// one big fetch answer, after which every partition waited a whole second; the stack took
/// a backlog in steps of one fetch per second.
const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// A consumer of `group` that never commits on its own: offsets are stored
/// only after the message's transaction committed (or it was dead-lettered),
/// and auto-commit then commits the stored offsets. `instance`: its static
/// membership id (see `ConsumerConfig::instance_id`). Partitions are assigned
/// cooperatively: a rebalance moves only the partitions that change owner,
/// and `context` hands each over once its work in flight is done.
pub fn consumer<C: ConsumerContext + 'static>(
    brokers: &str,
    group: &str,
    instance: Option<&str>,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    let mut config = client(brokers);
    if let Some(instance) = instance {
        config.set("group.instance.id", instance);
    }
    // librdkafka debug contexts (e.g. `cgrp,fetch`) for diagnosing group issues.
    if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
        config.set("debug", debug).set("log_level", "7");
    }
    config
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Prefetch little of each partition: librdkafka's queue is one FIFO for all of them,
        // and by default it keeps up to 100,000 messages (1 MB a fetch) of every partition.
        // After an outage the first topic fetched then lined up its whole backlog ahead of the
        // others, and a saga's later replies (payment-events) waited behind thousands of
        // earlier ones (inventory-events) that finish no saga.
        .set("queued.min.messages", QUEUED_MIN_MESSAGES.to_string())
        .set("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES.to_string())
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string())
        .create_with_context(context)
}

/// Why a service refuses to start against the broker's topics.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("Kafka topic {topic} does not exist: create the spec's topics first (`cargo xtask up` does)")]
    Missing { topic: String },
    #[error(
        "Kafka topic {topic} has {found} partitions but the spec says {expected}: one saga's events would \
         land on different partition numbers in different topics, and an order's replies would reach \
         different workers (or instances) out of order. Recreate the topic with {expected} partitions \
         (a new deployment), or change the spec and migrate the topics with the services stopped"
    )]
    Partitions { topic: String, found: usize, expected: i32 },
    #[error("cannot read the topics' metadata from Kafka within {within:?}: {error}")]
    Unreachable { within: Duration, error: String },
}

/// Checks that every topic in `topics` (logical names; `prefix` is
/// prepended) exists with the partition count the spec gives it, waiting up
/// to `within` for the broker to answer. Partitions are never grown in
/// place: a key's partition is its hash modulo the count, so growing a topic
/// would move sagas in flight to other partitions.
pub async fn check_topics(
    brokers: &str,
    prefix: &str,
    topics: &[TopicShape],
    within: Duration,
) -> Result<(), TopologyError> {
    let unreachable = |error: String| TopologyError::Unreachable { within, error };
    let client: BaseConsumer =
        client(brokers).set("log_level", "3").create().map_err(|e| unreachable(e.to_string()))?;
    let client = std::sync::Arc::new(client);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let fetch = client.clone();
        let attempt = tokio::task::spawn_blocking(move || fetch.fetch_metadata(None, Duration::from_secs(5))).await;
        let missing = match attempt {
            Ok(Ok(metadata)) => {
                let mut missing = None;
                for shape in topics {
                    let topic = format!("{prefix}{}", shape.name);
                    let found = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none());
                    match found.map(|t| t.partitions().len()).filter(|n| *n > 0) {
                        // A topic just created may not show on every node yet: waited for.
                        None => missing = missing.or(Some(topic)),
                        Some(found) if found as i64 != i64::from(shape.partitions) => {
                            return Err(TopologyError::Partitions { topic, found, expected: shape.partitions });
                        }
                        Some(_) => {}
                    }
                }
                match missing {
                    None => break,
                    Some(topic) if tokio::time::Instant::now() >= deadline => {
                        return Err(TopologyError::Missing { topic });
                    }
                    Some(topic) => topic,
                }
            }
            Ok(Err(error)) if tokio::time::Instant::now() >= deadline => return Err(unreachable(error.to_string())),
            Ok(Err(error)) => error.to_string(),
            Err(join) => return Err(unreachable(format!("the metadata request failed: {join}"))),
        };
        tracing::info!(waiting_for = %missing, "waiting for Kafka to check the topics");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::info!(topics = topics.len(), "Kafka topics have the spec's partition counts");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_both_settings_or_none() {
        assert_eq!(Credentials::from_settings(None, None), Ok(None));
        assert!(Credentials::from_settings(Some("order".into()), None).is_err());
        assert!(Credentials::from_settings(None, Some("secret".into())).is_err());
        let both = Credentials::from_settings(Some("order".into()), Some("secret".into())).expect("valid");
        assert!(!format!("{both:?}").contains("secret"), "the password stays out of debug output");
    }

    /// The only test of this binary that sets the process's identity.
    #[test]
    fn every_client_authenticates_as_the_process_once_it_is_set() {
        let order = Credentials { username: "order".into(), password: "secret".into() };
        authenticate_as(Some(order.clone())).expect("first identity");
        authenticate_as(Some(order)).expect("the same again");
        let other = Credentials { username: "user".into(), password: "x".into() };
        assert!(authenticate_as(Some(other)).is_err(), "one identity per process");
        let config = client("127.0.0.1:9092");
        assert_eq!(config.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(config.get("sasl.mechanism"), Some(SASL_MECHANISM));
        assert_eq!(config.get("sasl.username"), Some("order"));
        assert_eq!(config.get("sasl.password"), Some("secret"));
    }
}
