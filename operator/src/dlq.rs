//! Dead letters: reading a DLQ topic, describing its messages, and putting one back on the
//! topic it came from.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_generated::topology::{DLQ_SUFFIX, TOPICS};
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The header a redriven message carries: the dead letter it came from. Not a
/// `dlq-` header, so a redriven message that fails again keeps it in the DLQ.
pub const REDRIVEN_FROM: &str = "redriven-from";

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("timed out reading {0}")]
    Timeout(String),
    #[error("{topic} has no message at partition {partition}, offset {offset}")]
    NoMessage { topic: String, partition: i32, offset: i64 },
}

/// One dead letter, with the headers the consumer wrote when it gave up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The saga key.
    pub key: Option<String>,
    pub event_type: String,
    /// `retries-exhausted`, `undecodable` or `permanent`.
    pub reason: String,
    pub attempts: String,
    /// The consumer group that gave up.
    pub group: String,
    /// Where it was read from: `topic/partition@offset`.
    pub original: String,
    pub failed_at: Option<String>,
    pub error: String,
    /// Every header, as text.
    pub headers: Vec<(String, String)>,
}

impl DeadLetter {
    pub fn of(m: &OwnedMessage) -> DeadLetter {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (h.key.to_owned(), h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            event_type: header(m, "event-type"),
            reason: header(m, "dlq-reason"),
            attempts: header(m, "dlq-attempts"),
            group: header(m, "dlq-consumer-group"),
            original: format!(
                "{}/{}@{}",
                header(m, "dlq-original-topic"),
                header(m, "dlq-original-partition"),
                header(m, "dlq-original-offset")
            ),
            failed_at: Some(header(m, "dlq-failed-at")).filter(|t| t != "-"),
            error: header(m, "dlq-error"),
            headers,
        }
    }

    /// One line, for a terminal.
    pub fn describe(&self) -> String {
        let error: String = self.error.chars().take(160).collect();
        format!(
            "{}/{}@{} key={} type={} reason={} attempts={} group={} from={} at={} error={error}",
            self.topic,
            self.partition,
            self.offset,
            self.key.as_deref().unwrap_or("-"),
            self.event_type,
            self.reason,
            self.attempts,
            self.group,
            self.original,
            self.failed_at.as_deref().unwrap_or("-"),
        )
    }
}

/// The value of header `name`, or `-`.
pub fn header(m: &OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "-".into())
}

/// The dead-letter topic of each saga topic, with the services' prefix: (topic, its DLQ).
pub fn topics(prefix: &str) -> Vec<(String, String)> {
    TOPICS.iter().map(|t| (format!("{prefix}{}", t.name), format!("{prefix}{}{DLQ_SUFFIX}", t.name))).collect()
}

/// The prefix of the throwaway consumer groups that read dead letters: the
/// console's principal may use these groups, and no service's.
pub use saga_generated::topology::CONSOLE_GROUP_PREFIX as GROUP_PREFIX;

fn consumer(brokers: &str, group: &str) -> Result<BaseConsumer, KafkaError> {
    saga_runtime::kafka::client(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
}

/// Reads `topic` from the group's committed position (or the start) to its current end.
/// Blocking: call it from `spawn_blocking` in async code.
pub fn read(brokers: &str, topic: &str, group: Option<&str>) -> Result<Vec<OwnedMessage>, DlqError> {
    let group_id =
        group.map(str::to_owned).unwrap_or_else(|| format!("{GROUP_PREFIX}dlq-list-{}", uuid::Uuid::new_v4()));
    let consumer = consumer(brokers, &group_id)?;
    let mut out = Vec::new();
    let result = (|| -> Result<(), DlqError> {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(()) };
        if meta.error().is_some() {
            return Err(DlqError::NoTopic(topic.to_owned()));
        }
        let partitions: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
        let committed: BTreeMap<i32, i64> = match group {
            Some(_) => {
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition(topic, *p);
                }
                let result = consumer.committed_offsets(tpl, TIMEOUT)?;
                let map = result
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect();
                // Dropped before the consumer: it refers into the client.
                drop(result);
                map
            }
            None => BTreeMap::new(),
        };
        for partition in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
            let start = committed.get(&partition).copied().unwrap_or(low).max(low);
            if start >= high {
                continue;
            }
            out.extend(read_range(&consumer, topic, partition, start, high)?);
        }
        Ok(())
    })();
    let _ = consumer.unassign();
    result.map(|()| out)
}

/// The message at `offset` of `topic`/`partition`. Blocking.
pub fn read_one(brokers: &str, topic: &str, partition: i32, offset: i64) -> Result<OwnedMessage, DlqError> {
    let consumer = consumer(brokers, &format!("{GROUP_PREFIX}dlq-read-{}", uuid::Uuid::new_v4()))?;
    let missing = || DlqError::NoMessage { topic: topic.to_owned(), partition, offset };
    let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
    if offset < low || offset >= high {
        return Err(missing());
    }
    let read = read_range(&consumer, topic, partition, offset, offset + 1);
    let _ = consumer.unassign();
    read?.into_iter().find(|m| m.offset() == offset).ok_or_else(missing)
}

/// The messages of `[start, end)` (fewer where the log has gaps).
fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
) -> Result<Vec<OwnedMessage>, DlqError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let last = m.offset() + 1 >= end;
                out.push(m.detach());
                if last {
                    return Ok(out);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if std::time::Instant::now() > deadline => {
                return Err(DlqError::Timeout(format!("{topic}/{partition}")));
            }
            None => {}
        }
    }
}

/// Messages each DLQ topic holds now (high minus low watermark, over its partitions), from
/// one metadata request; a DLQ topic that does not exist is left out. Blocking.
pub fn held(brokers: &str, prefix: &str) -> Result<BTreeMap<String, i64>, DlqError> {
    let consumer: BaseConsumer = saga_runtime::kafka::client(brokers).set("log_level", "0").create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(3))?;
    let mut held = BTreeMap::new();
    for (_, dlq) in topics(prefix) {
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == dlq && t.error().is_none()) else {
            continue;
        };
        let mut count = 0;
        for partition in meta.partitions() {
            let (low, high) = consumer.fetch_watermarks(&dlq, partition.id(), Duration::from_secs(3))?;
            count += high - low;
        }
        held.insert(dlq, count);
    }
    Ok(held)
}

/// The producer redrives are sent with.
pub type Producer = FutureProducer;

/// A producer for redrives: the runtime's (idempotent, acknowledged by every in-sync replica).
pub fn producer(brokers: &str) -> Result<Producer, KafkaError> {
    saga_runtime::kafka::producer(brokers, saga_runtime::kafka::DEFAULT_LINGER_MS)
}

/// Puts dead letter `m` of `dlq` back on `target`: the same key, payload and headers, without
/// the `dlq-` ones, plus [`REDRIVEN_FROM`]. The consumers' inbox makes a second copy harmless.
pub async fn redrive(producer: &FutureProducer, target: &str, dlq: &str, m: &OwnedMessage) -> Result<(), DlqError> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        // The last redrive is the one that counts: an earlier mark is replaced.
        for h in original.iter().filter(|h| !h.key.starts_with("dlq-") && h.key != REDRIVEN_FROM) {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let from = format!("{dlq}/{}@{}", m.partition(), m.offset());
    headers = headers.insert(Header { key: REDRIVEN_FROM, value: Some(from.as_str()) });
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(target).payload(m.payload().unwrap_or_default()).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    Ok(())
}
