//! Dead letters: reading a DLQ topic, describing its messages, checking each against the
//! topic it says it came from, and putting it back there.
//!
//! A dead letter is a copy, and anyone who may write a DLQ topic (every consumer of its
//! source topic may: it dead-letters there) can write one that never was on the source
//! topic. So a letter's own bytes are never what a redrive sends: [`check`] re-reads the
//! record at the letter's `dlq-original-*` position on the source topic, and only a letter
//! whose source record is byte-identical (key and value) is [`Verdict::Genuine`]; its
//! redrive republishes the source record. Anything else is [`Verdict::Forged`] or, when the
//! source has passed its retention, [`Verdict::Unverifiable`]: refused unless an admin
//! overrides that one letter (the console audits the override).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_generated::topology::{DLQ_SUFFIX, TOPICS};
use saga_runtime::consumer::dlq_headers;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
            reason: header(m, dlq_headers::REASON),
            attempts: header(m, dlq_headers::ATTEMPTS),
            group: header(m, dlq_headers::CONSUMER_GROUP),
            original: format!(
                "{}/{}@{}",
                header(m, dlq_headers::ORIGINAL_TOPIC),
                header(m, dlq_headers::ORIGINAL_PARTITION),
                header(m, dlq_headers::ORIGINAL_OFFSET)
            ),
            failed_at: Some(header(m, dlq_headers::FAILED_AT)).filter(|t| t != "-"),
            error: header(m, dlq_headers::ERROR),
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

/// Puts dead letter `letter` of `dlq` back on `target`, sending `record`: the source
/// topic's own record for a genuine letter ([`Checked::source`]), the letter itself only
/// for an override an admin made. The same key, payload and headers, without the `dlq-`
/// ones, plus [`REDRIVEN_FROM`] naming the letter. The consumers' inbox makes a second copy
/// harmless.
pub async fn redrive(
    producer: &FutureProducer,
    target: &str,
    dlq: &str,
    letter: &OwnedMessage,
    record: &OwnedMessage,
) -> Result<(), DlqError> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        // The last redrive is the one that counts: an earlier mark is replaced.
        for h in original.iter().filter(|h| !h.key.starts_with("dlq-") && h.key != REDRIVEN_FROM) {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let from = format!("{dlq}/{}@{}", letter.partition(), letter.offset());
    headers = headers.insert(Header { key: REDRIVEN_FROM, value: Some(from.as_str()) });
    let mut payload: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(target).payload(record.payload().unwrap_or_default()).headers(headers);
    if let Some(key) = record.key() {
        payload = payload.key(key);
    }
    producer.send(payload, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    Ok(())
}

/// What the source topic says of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The source topic holds this very record (key and value) where the letter says.
    Genuine,
    /// The source topic holds something else there, or nothing, or the letter names a
    /// topic its DLQ is not the twin of: these bytes were never published by their
    /// publisher.
    Forged,
    /// The source record has passed the topic's retention: nothing left to compare with.
    Unverifiable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Genuine => "genuine",
            Verdict::Forged => "forged",
            Verdict::Unverifiable => "unverifiable",
        }
    }
}

/// A verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub verdict: Verdict,
    /// What was compared, for the operator.
    pub why: String,
}

/// A dead letter with its provenance.
#[derive(Debug, Clone)]
pub struct Checked {
    pub letter: OwnedMessage,
    pub provenance: Provenance,
    /// The source topic's record, when the letter is genuine: what a redrive sends.
    pub source: Option<OwnedMessage>,
}

/// SHA-256 of a message's value, in hex: how an override names the exact bytes an admin saw.
pub fn value_digest(m: &OwnedMessage) -> String {
    Sha256::digest(m.payload().unwrap_or_default()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a letter says it was read: (topic, partition, offset), if its headers say so.
fn original_position(letter: &OwnedMessage) -> Option<(String, i32, i64)> {
    let topic = header(letter, dlq_headers::ORIGINAL_TOPIC);
    let partition = header(letter, dlq_headers::ORIGINAL_PARTITION).parse().ok()?;
    let offset = header(letter, dlq_headers::ORIGINAL_OFFSET).parse().ok()?;
    (topic != "-").then_some((topic, partition, offset))
}

/// Records of the source topic at the same place run this far apart at most and are read
/// in one pass; farther apart, each run is read on its own.
const READ_TOGETHER: i64 = 500;

/// Checks each letter against its source topic (the topic its DLQ topic is the twin of),
/// in the order given; `prefix` is the services' topic prefix (their `TOPIC_PREFIX`: a
/// letter names its topic without it). One consumer reads every source record needed,
/// nearby ones in one pass. Blocking: call it from `spawn_blocking` in async code.
pub fn check(brokers: &str, prefix: &str, letters: Vec<OwnedMessage>) -> Result<Vec<Checked>, DlqError> {
    let consumer = consumer(brokers, &format!("{GROUP_PREFIX}dlq-check-{}", uuid::Uuid::new_v4()))?;
    let result = check_with(&consumer, prefix, &letters);
    let _ = consumer.unassign();
    let verdicts = result?;
    Ok(letters
        .into_iter()
        .zip(verdicts)
        .map(|(letter, (provenance, source))| Checked { letter, provenance, source })
        .collect())
}

/// A letter's provenance and, when genuine, its source record.
type Found = (Provenance, Option<OwnedMessage>);

fn check_with(consumer: &BaseConsumer, prefix: &str, letters: &[OwnedMessage]) -> Result<Vec<Found>, DlqError> {
    let forged = |why: String| (Provenance { verdict: Verdict::Forged, why }, None);
    // Per letter, the source position to compare with, or the verdict already.
    let mut wanted: Vec<Result<(String, i32, i64), Found>> = Vec::new();
    for letter in letters {
        let Some(source_topic) = letter.topic().strip_suffix(DLQ_SUFFIX) else {
            wanted.push(Err(forged(format!("{} is not a dead-letter topic", letter.topic()))));
            continue;
        };
        // The consumer names the topic as the spec does, without the prefix.
        let logical = source_topic.strip_prefix(prefix).unwrap_or(source_topic);
        wanted.push(match original_position(letter) {
            None => Err(forged("the letter names no position it was read at".into())),
            Some((topic, _, _)) if topic != logical => Err(forged(format!(
                "the letter says it was read from {topic}, but {} holds letters of {logical} only",
                letter.topic()
            ))),
            Some((_, partition, offset)) => Ok((source_topic.to_owned(), partition, offset)),
        });
    }
    // The source records, read per partition in runs of nearby offsets.
    let mut by_partition: BTreeMap<(String, i32), Vec<i64>> = BTreeMap::new();
    for (topic, partition, offset) in wanted.iter().flatten() {
        by_partition.entry((topic.clone(), *partition)).or_default().push(*offset);
    }
    let mut records: BTreeMap<(String, i32, i64), OwnedMessage> = BTreeMap::new();
    let mut watermarks: BTreeMap<(String, i32), Option<(i64, i64)>> = BTreeMap::new();
    let mut partitions_of: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for ((topic, partition), mut offsets) in by_partition {
        offsets.sort_unstable();
        offsets.dedup();
        if !partitions_of.contains_key(&topic) {
            let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
            let partitions = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            partitions_of.insert(topic.clone(), partitions);
        }
        // No such partition (or topic): no record is there.
        let marks = match partitions_of[&topic].contains(&partition) {
            true => Some(consumer.fetch_watermarks(&topic, partition, TIMEOUT)?),
            false => None,
        };
        watermarks.insert((topic.clone(), partition), marks);
        let Some((low, high)) = marks else { continue };
        let present: Vec<i64> = offsets.into_iter().filter(|o| (low..high).contains(o)).collect();
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for offset in present {
            match runs.last_mut() {
                Some((_, end)) if offset - *end < READ_TOGETHER => *end = offset + 1,
                _ => runs.push((offset, offset + 1)),
            }
        }
        for (start, end) in runs {
            for m in read_range(consumer, &topic, partition, start, end)? {
                records.insert((topic.clone(), partition, m.offset()), m);
            }
        }
    }
    Ok(letters
        .iter()
        .zip(wanted)
        .map(|(letter, wanted)| {
            let (topic, partition, offset) = match wanted {
                Ok(position) => position,
                Err(verdict) => return verdict,
            };
            let at = format!("{topic}/{partition}@{offset}");
            match watermarks.get(&(topic.clone(), partition)).copied().flatten() {
                None => forged(format!("{topic} has no partition {partition}")),
                Some((low, _)) if offset < low => (
                    Provenance {
                        verdict: Verdict::Unverifiable,
                        why: format!("{at} has passed the topic's retention (its log now starts at {low})"),
                    },
                    None,
                ),
                // Several letters may name one record (each group that gave up on it wrote one).
                Some(_) => match records.get(&(topic, partition, offset)).cloned() {
                    None => forged(format!("{at} holds no record")),
                    Some(source) if source.key() != letter.key() => {
                        forged(format!("the record at {at} has another key"))
                    }
                    Some(source) if source.payload() != letter.payload() => {
                        forged(format!("the record at {at} has another value"))
                    }
                    Some(source) => (
                        Provenance { verdict: Verdict::Genuine, why: format!("the same key and value as {at}") },
                        Some(source),
                    ),
                },
            }
        })
        .collect())
}

/// Dead letters in the order they should go back, oldest first per saga key. A DLQ
/// partition holds the letters of its keys from the same partition of the source topic
/// (the same key, the same partition count), each group's letters among the others': they
/// go back in the order their source records were published, then as they were
/// dead-lettered. Across partitions and topics, the letter written first goes first, so a
/// saga's letters on different topics keep their order too.
pub fn oldest_first(letters: Vec<OwnedMessage>) -> Vec<OwnedMessage> {
    let mut queues: BTreeMap<(String, i32), VecDeque<OwnedMessage>> = BTreeMap::new();
    for m in letters {
        queues.entry((m.topic().to_owned(), m.partition())).or_default().push_back(m);
    }
    for queue in queues.values_mut() {
        queue.make_contiguous().sort_by_key(|m| (original_position(m).map(|(_, _, offset)| offset), m.offset()));
    }
    let written = |m: &OwnedMessage| m.timestamp().to_millis().unwrap_or(0);
    let mut out = Vec::new();
    // Merge: the queue whose next letter was written first goes next.
    while let Some(queue) = queues.values_mut().filter(|q| !q.is_empty()).min_by_key(|q| q.front().map(written)) {
        out.extend(queue.pop_front());
    }
    out
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn letter(topic: &str, partition: i32, offset: i64, original: i64, written: i64) -> OwnedMessage {
        let original = original.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: dlq_headers::ORIGINAL_TOPIC, value: Some("order-events") })
            .insert(Header { key: dlq_headers::ORIGINAL_PARTITION, value: Some(&partition.to_string()) })
            .insert(Header { key: dlq_headers::ORIGINAL_OFFSET, value: Some(&original) });
        OwnedMessage::new(
            None,
            Some(b"key".to_vec()),
            topic.to_owned(),
            Timestamp::CreateTime(written),
            partition,
            offset,
            Some(headers),
        )
    }

    fn order(letters: &[OwnedMessage]) -> Vec<(String, i32, i64)> {
        letters.iter().map(|m| (m.topic().to_owned(), m.partition(), m.offset())).collect()
    }

    #[test]
    fn letters_go_back_in_the_order_their_records_were_published() {
        // Two groups dead-lettered source offsets 5 and 6 of partition 0: group A both
        // first, then group B.
        let dlq = "order-events.dlq";
        let letters = vec![
            letter(dlq, 0, 10, 5, 100),
            letter(dlq, 0, 11, 6, 101),
            letter(dlq, 0, 12, 5, 102),
            letter(dlq, 0, 13, 6, 103),
        ];
        let out = oldest_first(letters.into_iter().rev().collect());
        assert_eq!(out.iter().map(Message::offset).collect::<Vec<_>>(), [10, 12, 11, 13]);
    }

    #[test]
    fn partitions_and_topics_merge_by_the_time_each_letter_was_written() {
        let out = oldest_first(vec![
            letter("order-events.dlq", 1, 0, 0, 300),
            letter("payment-events.dlq", 0, 0, 0, 200),
            letter("order-events.dlq", 0, 0, 0, 100),
            letter("order-events.dlq", 0, 1, 1, 400),
        ]);
        assert_eq!(
            order(&out),
            [
                ("order-events.dlq".to_owned(), 0, 0),
                ("payment-events.dlq".to_owned(), 0, 0),
                ("order-events.dlq".to_owned(), 1, 0),
                ("order-events.dlq".to_owned(), 0, 1),
            ]
        );
    }

    #[test]
    fn a_digest_names_the_exact_value() {
        let m = OwnedMessage::new(Some(b"abc".to_vec()), None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert_eq!(value_digest(&m), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
