//! `cargo xtask dlq`: list dead letters and redrive them to their topic.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_generated::topology::{DLQ_SUFFIX, TOPICS};
use saga_operator::dlq::{Checked, DeadLetter, Verdict, check, read};
use saga_process::local::BackendService;
use saga_stack::StackConfig;
use saga_stack::config::services;
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
                let newest: Vec<OwnedMessage> = messages.iter().rev().take(show).cloned().collect();
                for checked in check(&brokers, &prefix, newest)? {
                    println!(
                        "  [{}] {}",
                        checked.provenance.verdict.as_str(),
                        DeadLetter::of(&checked.letter).describe()
                    );
                    if checked.provenance.verdict != Verdict::Genuine {
                        println!("    {}", checked.provenance.why);
                    }
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
            let producer = saga_operator::dlq::producer(&brokers).context("Kafka producer")?;
            let checked = check(&brokers, &prefix, saga_operator::dlq::oldest_first(messages.clone()))?;
            let mut refused = 0;
            for Checked { letter, provenance, source } in &checked {
                let Some(source) = source else {
                    // Only what the source topic holds goes back: the console can override one letter.
                    refused += 1;
                    println!(
                        "refuse ({}) {}: {}",
                        provenance.verdict.as_str(),
                        DeadLetter::of(letter).describe(),
                        provenance.why
                    );
                    continue;
                };
                println!("{} {}", if dry_run { "would redrive" } else { "redrive" }, DeadLetter::of(letter).describe());
                if !dry_run {
                    saga_operator::dlq::redrive(&producer, &target, &dlq, letter, source)
                        .await
                        .context("re-producing")?;
                }
            }
            let sent = checked.len() - refused;
            if dry_run {
                println!(
                    "dry run: {sent} message(s) would go to {target}, {refused} refused; nothing produced or committed"
                );
            } else {
                commit(&brokers, &group, &messages)?;
                println!("redriven {sent} message(s) from {dlq} to {target}, {refused} refused");
            }
            if refused > 0 {
                bail!(
                    "{refused} dead letter(s) refused: the source topic does not hold them as they are (forged, or \
                     past its retention); an admin can override one letter in the console, audited"
                );
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
        tokio::task::spawn_blocking(move || saga_operator::dlq::held(&brokers, "")).await.ok().and_then(Result::ok);
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

/// Remembers the redrive: the group's position moves past every redriven message.
fn commit(brokers: &str, group: &str, messages: &[OwnedMessage]) -> anyhow::Result<()> {
    let consumer: BaseConsumer = saga_runtime::kafka::client(brokers)
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
