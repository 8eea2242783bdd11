//! `cargo xtask dlq`: list dead letters and redrive them to their topic.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::stack::StackConfig;
use crate::stack::config::services;
use anyhow::{Context, bail};
use clap::Subcommand;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use saga_generated::topology::{DLQ_SUFFIX, TOPICS};
use saga_process::local::BackendService;
use sqlx::Connection;

/// Consumer group that remembers how far each dead-letter topic was redriven.
const REDRIVE_GROUP: &str = "saga.dlq-redrive";
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show every dead-letter topic: how many messages, and the latest ones with why they failed.
    List {
        /// How many of the newest messages to show per topic.
        #[arg(long, default_value_t = 10)]
        show: usize,
        /// Topic prefix of the services (their TOPIC_PREFIX).
        #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
        prefix: String,
    },
    /// Re-produce the dead letters of <TOPIC> (e.g. order-events) to <TOPIC>, once each.
    Redrive {
        /// The original topic, e.g. `order-events` (its dead letters are in `order-events.dlq`).
        topic: String,
        /// Print what would be redriven; produce and commit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Topic prefix of the services (their TOPIC_PREFIX).
        #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
        prefix: String,
    },
}

pub async fn run(config: &StackConfig, command: DlqCommand) -> anyhow::Result<()> {
    let brokers = config.kafka_brokers();
    match command {
        DlqCommand::List { show, prefix } => {
            for topic in TOPICS {
                let dlq = format!("{prefix}{}", topic.dlq);
                let messages = read(&brokers, &dlq, None)?;
                println!("{dlq}: {} message(s)", messages.len());
                for m in messages.iter().rev().take(show) {
                    println!("  {}", describe(m));
                }
            }
            for service in services() {
                let rows = failed_outbox_rows(config, service).await?;
                println!("{} outbox: {} failed row(s)", service.name, rows.len());
                for row in rows.iter().take(show) {
                    println!(
                        "  #{} {} {} key={} failed {} ({} later event(s) of its saga wait): {}",
                        row.id,
                        row.event_type,
                        row.event_id,
                        row.partition_key,
                        row.failed_at.to_rfc3339(),
                        row.waiting,
                        row.failure
                    );
                }
            }
        }
        DlqCommand::Redrive { topic, dry_run, prefix } => {
            if !TOPICS.iter().any(|t| t.name == topic) {
                let known: Vec<&str> = TOPICS.iter().map(|t| t.name).collect();
                bail!("unknown topic {topic:?}; the saga's topics are {known:?}");
            }
            let dlq = format!("{prefix}{topic}{DLQ_SUFFIX}");
            let group = format!("{prefix}{REDRIVE_GROUP}");
            let messages = read(&brokers, &dlq, Some(&group))?;
            if messages.is_empty() {
                println!("{dlq}: nothing to redrive");
                return Ok(());
            }
            let target = format!("{prefix}{topic}");
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()
                .context("Kafka producer")?;
            for m in &messages {
                println!("{} {}", if dry_run { "would redrive" } else { "redrive" }, describe(m));
                if !dry_run {
                    redrive(&producer, &target, &dlq, m).await?;
                }
            }
            if dry_run {
                println!("dry run: {} message(s) would go to {target}; nothing produced or committed", messages.len());
            } else {
                commit(&brokers, &group, &messages)?;
                println!("redriven {} message(s) from {dlq} to {target}", messages.len());
            }
        }
    }
    Ok(())
}

/// Outbox rows of `service` the relay marked failed (they can never be published).
async fn failed_outbox_rows(
    config: &StackConfig,
    service: BackendService,
) -> anyhow::Result<Vec<saga_runtime::outbox::FailedRow>> {
    let mut conn = sqlx::PgConnection::connect(&config.database_url(service))
        .await
        .with_context(|| format!("{} database", service.name))?;
    let rows = saga_runtime::outbox::failed_rows(&mut conn).await.context("failed outbox rows")?;
    conn.close().await?;
    Ok(rows)
}

/// One line per kind of message that did not go through: the dead letters
/// held on each DLQ topic, and the failed outbox rows of each service.
/// What cannot be read is said so, never an error: `status` runs on a
/// stopped stack too.
pub async fn summary(config: &StackConfig) -> Vec<String> {
    let brokers = config.kafka_brokers();
    let held =
        tokio::task::spawn_blocking(move || crate::stack::kafka::dlq_held(&brokers)).await.ok().and_then(Result::ok);
    let dead: Vec<String> = TOPICS
        .iter()
        .map(|t| match held.as_ref().and_then(|h| h.get(t.dlq)) {
            Some(n) => format!("{} {n}", t.dlq),
            None => format!("{} unavailable", t.dlq),
        })
        .collect();
    let mut failed = Vec::new();
    for service in services() {
        let rows = tokio::time::timeout(TIMEOUT, failed_outbox_rows(config, service)).await;
        failed.push(match rows {
            Ok(Ok(rows)) => format!("{} {}", service.name, rows.len()),
            _ => format!("{} unavailable", service.name),
        });
    }
    vec![format!("dead letters: {}", dead.join(", ")), format!("failed outbox rows: {}", failed.join(", "))]
}

/// Reads `topic` from the group's committed position (or the start) to its current end.
pub(crate) fn read(brokers: &str, topic: &str, group: Option<&str>) -> anyhow::Result<Vec<OwnedMessage>> {
    let group_id = group.map(str::to_owned).unwrap_or_else(|| format!("saga.dlq-list-{}", uuid::Uuid::new_v4()));
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group_id)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .context("Kafka consumer")?;
    let mut out = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).context("metadata")?;
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(()) };
        if meta.error().is_some() {
            bail!("topic {topic} does not exist");
        }
        let partitions: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
        let committed: BTreeMap<i32, i64> = match group {
            Some(_) => {
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition(topic, *p);
                }
                let result = consumer.committed_offsets(tpl, TIMEOUT).context("committed offsets")?;
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
            let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT).context("watermarks")?;
            let start = committed.get(&partition).copied().unwrap_or(low).max(low);
            if start >= high {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
            consumer.assign(&tpl)?;
            drop(tpl);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        let last = m.offset() + 1 >= high;
                        out.push(m.detach());
                        if last {
                            break;
                        }
                    }
                    Some(Err(e)) => bail!("reading {topic}/{partition}: {e}"),
                    None if std::time::Instant::now() > deadline => bail!("timed out reading {topic}/{partition}"),
                    None => {}
                }
            }
        }
        Ok(())
    })();
    let _ = consumer.unassign();
    result.map(|()| out)
}

pub(crate) fn header(m: &OwnedMessage, name: &str) -> String {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "-".into())
}

fn describe(m: &OwnedMessage) -> String {
    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_else(|| "-".into());
    let error: String = header(m, "dlq-error").chars().take(160).collect();
    format!(
        "{}/{}@{} key={key} type={} reason={} attempts={} group={} from={}/{}@{} at={} error={error}",
        m.topic(),
        m.partition(),
        m.offset(),
        header(m, "event-type"),
        header(m, "dlq-reason"),
        header(m, "dlq-attempts"),
        header(m, "dlq-consumer-group"),
        header(m, "dlq-original-topic"),
        header(m, "dlq-original-partition"),
        header(m, "dlq-original-offset"),
        header(m, "dlq-failed-at"),
    )
}

async fn redrive(producer: &FutureProducer, target: &str, dlq: &str, m: &OwnedMessage) -> anyhow::Result<()> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        for h in original.iter().filter(|h| !h.key.starts_with("dlq-")) {
            headers = headers.insert(Header { key: h.key, value: h.value });
        }
    }
    let from = format!("{dlq}/{}@{}", m.partition(), m.offset());
    headers = headers.insert(Header { key: "dlq-redriven-from", value: Some(from.as_str()) });
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(target).payload(m.payload().unwrap_or_default()).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).context("re-producing")?;
    Ok(())
}

/// Remembers the redrive: the group's position moves past every redriven message.
fn commit(brokers: &str, group: &str, messages: &[OwnedMessage]) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .context("Kafka consumer")?;
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in messages {
        let entry = next.entry((m.topic().to_owned(), m.partition())).or_default();
        *entry = (*entry).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in &next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    let committed = consumer.commit(&tpl, CommitMode::Sync).context("committing the redrive position");
    drop(tpl);
    committed
}
