//! The saga's writer schemas on a compacted topic of its own Kafka: a schema
//! registry that needs no service of its own, in the spirit of Confluent's
//! `_schemas` topic.
//!
//! A service registers every version of every event it publishes, keyed by
//! fingerprint (16 hex digits), before its relay publishes anything
//! ([`register`]); compaction keeps one record per fingerprint for ever. A
//! consumer that meets a fingerprint its build does not know reads the topic
//! up to its end ([`catch_up`]) and learns what is new there
//! (`saga_wire::learned`): a newer writer's schema then decodes, resolved to
//! the consumer's own by Avro's rules. So a publisher of a newer schema may be
//! deployed before the consumers of its events.
//!
//! Only the saga's services may write the topic (their grants, from the
//! spec), and what is read is checked before it is learned: the fingerprint
//! must be the schema's own, and a history takes a learned schema only under
//! its own record name.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use saga_wire::SchemaHistory;
use tokio::sync::Mutex;

/// How long a registration or a catch-up may take before it is an outage.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the schema topic {topic} did not answer within {within:?}")]
    Timeout { topic: String, within: Duration },
}

/// The registry key of a fingerprint: its bytes in hex, as `.avro/index.json` writes them.
pub fn key_of(fingerprint: &[u8; 8]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fingerprint a registry key names, if it is one.
fn fingerprint_of_key(key: &[u8]) -> Option<[u8; 8]> {
    let key = std::str::from_utf8(key).ok().filter(|k| k.len() == 16)?;
    let mut fingerprint = [0u8; 8];
    for (i, byte) in fingerprint.iter_mut().enumerate() {
        *byte = u8::from_str_radix(key.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(fingerprint)
}

/// Registers every version of `histories` on `topic`, signed in as `client`
/// says, and waits until the broker has acknowledged each (all in-sync
/// replicas): only then may the service publish with them. A version
/// registered before is written again; compaction keeps one.
pub async fn register(
    client: ClientConfig,
    topic: &str,
    histories: impl IntoIterator<Item = &'static SchemaHistory>,
) -> Result<usize, RegistryError> {
    let producer: FutureProducer = client
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", KAFKA_TIMEOUT.as_millis().to_string())
        .set("log_level", "4")
        .create()?;
    let versions: Vec<_> = histories.into_iter().flat_map(|h| h.versions()).collect();
    let sends = versions.iter().map(|version| {
        let key = key_of(&version.fingerprint);
        let producer = &producer;
        async move {
            let record = FutureRecord::to(topic).key(&key).payload(version.json);
            producer.send(record, KAFKA_TIMEOUT).await.map_err(|(error, _)| error)
        }
    });
    for sent in futures::future::join_all(sends).await {
        sent?;
    }
    Ok(versions.len())
}

/// Reads the schema topic and learns what is registered there.
pub struct SchemaReader {
    topic: String,
    consumer: Arc<StreamConsumer>,
    /// The next offset to read; a catch-up holds it, so two never race.
    next: Mutex<i64>,
}

impl SchemaReader {
    /// A reader of `topic` from its start, signed in as `client` says, under
    /// `group`. It assigns itself the one partition and keeps its position
    /// in memory: it never joins the group or commits to it, but librdkafka
    /// wants a group for an assignment and the broker checks the grant on it.
    /// Every process reads the whole topic once.
    pub fn new(client: ClientConfig, topic: &str, group: &str) -> Result<SchemaReader, RegistryError> {
        let consumer: StreamConsumer = client
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("log_level", "3")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        Ok(SchemaReader { topic: topic.to_owned(), consumer: Arc::new(consumer), next: Mutex::new(0) })
    }

    /// Reads the topic up to its end as of now and learns every schema not
    /// learned before. Returns how many were new. A record that does not
    /// check out is skipped with a warning: it cannot make an event decode as
    /// anything but its own schema.
    pub async fn catch_up(&self) -> Result<usize, RegistryError> {
        let timeout = || RegistryError::Timeout { topic: self.topic.clone(), within: KAFKA_TIMEOUT };
        let mut next = self.next.lock().await;
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let (_, high) = tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, 0, KAFKA_TIMEOUT))
            .await
            .map_err(|_| timeout())??;
        let mut new = 0;
        while *next < high {
            let message = tokio::time::timeout(KAFKA_TIMEOUT, self.consumer.recv()).await.map_err(|_| timeout())??;
            *next = message.offset() + 1;
            let (Some(key), Some(json)) = (message.key(), message.payload()) else { continue };
            let Some(fingerprint) = fingerprint_of_key(key) else {
                tracing::warn!(offset = message.offset(), "a schema registered under no fingerprint: skipped");
                continue;
            };
            if saga_wire::learned::learned(&fingerprint).is_some() {
                continue;
            }
            let learned = std::str::from_utf8(json)
                .map_err(|e| e.to_string())
                .and_then(|json| saga_wire::learned::learn(fingerprint, json).map_err(|e| e.to_string()));
            match learned {
                Ok(learned) => {
                    new += 1;
                    tracing::info!(schema = %learned.name, fingerprint = %key_of(&fingerprint), "writer schema learned");
                }
                Err(error) => {
                    tracing::warn!(offset = message.offset(), %error, "a registered schema does not check out: skipped")
                }
            }
        }
        Ok(new)
    }
}

/// Where this process looks unknown fingerprints up, once [`install`]ed.
static READER: OnceLock<SchemaReader> = OnceLock::new();

/// Makes [`catch_up`] use `reader`. The first call wins: a process is one
/// service of one saga.
pub fn install(reader: SchemaReader) {
    let _ = READER.set(reader);
}

/// [`SchemaReader::catch_up`] of the [`install`]ed reader: 0 when none is.
pub async fn catch_up() -> Result<usize, RegistryError> {
    match READER.get() {
        Some(reader) => reader.catch_up().await,
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_fingerprint_in_hex_and_back() {
        let fingerprint = [0x00, 0x1f, 0xa0, 0xff, 0x10, 0x01, 0x7e, 0x80];
        assert_eq!(key_of(&fingerprint), "001fa0ff10017e80");
        assert_eq!(fingerprint_of_key(key_of(&fingerprint).as_bytes()), Some(fingerprint));
        assert_eq!(fingerprint_of_key(b"001fa0ff10017e8"), None, "too short");
        assert_eq!(fingerprint_of_key(b"001fa0ff10017e8g"), None, "not hex");
    }
}
