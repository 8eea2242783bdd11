//! The consumer loop: in partition order, partitions in parallel.
//!
//! Messages are dealt to [`WORKERS`] workers by partition number: every
//! message of a partition goes to the same worker, which handles them in
//! order, so each partition (each saga, across topics) keeps its order while
//! several partitions' transactions are in flight at once and PostgreSQL
//! flushes their commits together.
//!
//! For each message: decode, then (in one PostgreSQL transaction) claim the
//! inbox row, run the handler and insert its reply into the outbox; commit;
//! only then store the offset. A worker that finds several messages waiting
//! handles up to `max_batch` of them in one transaction (one commit instead
//! of one each); if that transaction fails, it is rolled back and the same
//! messages are handled one at a time as below, so a batch changes how many
//! commits there are, never what is committed. Transient failures retry in
//! place with exponential backoff (the partition never skips ahead); after
//! the policy's attempt limit, or at once for an undecodable message, the
//! message goes to `<topic><dlq_suffix>` with headers saying why, and the
//! partition moves on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_contract::{Dispatch, RetryPolicy};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use crate::inbox;
use crate::outbox;
use saga_process::shutdown::Shutdown;

/// Dead-letter headers (see docs/runtime.md).
pub mod dlq_headers {
    /// `undecodable`, `retries-exhausted` or `permanent`.
    pub const REASON: &str = "dlq-reason";
    pub const ERROR: &str = "dlq-error";
    pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
    pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
    pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
    pub const ATTEMPTS: &str = "dlq-attempts";
    pub const CONSUMER_GROUP: &str = "dlq-consumer-group";
    pub const FAILED_AT: &str = "dlq-failed-at";
}

/// Backoff before attempt `attempt + 1` (attempt counts from 1): doubles,
/// capped, with up to 20% jitter so replicas do not retry in lockstep.
pub fn backoff(retry: &RetryPolicy, attempt: u32) -> Duration {
    let base = retry.initial_backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(retry.max_backoff);
    let jitter = rand::random_range(0..=base.as_millis() as u64 / 5);
    base + Duration::from_millis(jitter)
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    /// Group id as the spec names it; the topic prefix is prepended.
    pub group_id: String,
    /// Logical topics (the prefix is prepended to subscribe).
    pub topics: Vec<String>,
    pub topic_prefix: String,
    pub dlq_suffix: String,
    pub retry: RetryPolicy,
    /// Most messages a worker handles in one transaction (1: no batching);
    /// the spec's `delivery` policy sets it per consumer group.
    pub max_batch: usize,
}

/// One received message; `topic` is the logical name (prefix removed).
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why processing a message failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Retrying cannot help (undecodable bytes): dead-letter at once.
    #[error("undecodable: {0}")]
    Undecodable(String),
    /// May succeed later (database down, state not there yet): retry.
    #[error("transient: {0}")]
    Transient(String),
}

/// What a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Handled,
    /// Its event id was in the inbox: nothing changed.
    Duplicate,
    /// Not subscribed here.
    Ignored,
}

/// Processes messages; implemented by `TxConsumer` for the saga services
/// and by tests directly.
pub trait Processor: Send + Sync + 'static {
    fn process(&self, message: &Received) -> impl Future<Output = Result<Processed, Failure>> + Send;

    /// Processes `messages` in order as one unit: all of them or, on `Err`,
    /// none (the worker then processes them one at a time with
    /// [`Processor::process`]). The default does not batch.
    fn process_batch(&self, messages: &[Received]) -> impl Future<Output = Result<(), Failure>> + Send {
        let count = messages.len();
        async move { Err(Failure::Transient(format!("this processor does not batch ({count} messages)"))) }
    }
}

/// Decode, inbox, handle and outbox in one transaction: the consumer of a
/// saga service whose handler `H` handles the inbound events `E` (generated
/// from the spec, see `saga_contract::Dispatch`).
pub struct TxConsumer<H, E> {
    pool: PgPool,
    handler: H,
    events: std::marker::PhantomData<fn() -> E>,
}

impl<H, E> TxConsumer<H, E> {
    pub fn new(pool: PgPool, handler: H) -> Self {
        TxConsumer { pool, handler, events: std::marker::PhantomData }
    }
}

impl<H, E> Processor for TxConsumer<H, E>
where
    H: Send + Sync + 'static,
    E: Dispatch<H, Ctx = PgConnection>,
{
    async fn process(&self, message: &Received) -> Result<Processed, Failure> {
        let Some(event) = E::decode(&message.topic, &message.payload).map_err(Failure::Undecodable)? else {
            return Ok(Processed::Ignored);
        };
        let mut tx = self.pool.begin().await.map_err(database)?;
        let outcome = self.handle(&mut tx, message, event).await?;
        if outcome.processed == Processed::Handled {
            tx.commit().await.map_err(database)?;
        }
        outcome.log_committed();
        Ok(outcome.processed)
    }

    async fn process_batch(&self, messages: &[Received]) -> Result<(), Failure> {
        // Decode all first: an undecodable message fails the batch before
        // any transaction starts, and is dead-lettered on its own.
        let mut events = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(event) = E::decode(&message.topic, &message.payload).map_err(Failure::Undecodable)? {
                events.push((message, event));
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(database)?;
        let mut outcomes = Vec::with_capacity(events.len());
        for (message, event) in events {
            // Later messages see what earlier ones wrote: same transaction.
            outcomes.push(self.handle(&mut tx, message, event).await?);
        }
        tx.commit().await.map_err(database)?;
        outcomes.iter().for_each(Outcome::log_committed);
        Ok(())
    }
}

/// What handling one event did, logged once its transaction committed.
struct Outcome {
    processed: Processed,
    reply: Option<String>,
    span: tracing::Span,
}

impl Outcome {
    fn log_committed(&self) {
        let _entered = self.span.enter();
        match self.processed {
            Processed::Handled => tracing::info!(reply = self.reply.as_deref(), "event handled"),
            Processed::Duplicate => tracing::info!("duplicate event ignored"),
            Processed::Ignored => {}
        }
    }
}

impl<H, E> TxConsumer<H, E>
where
    H: Send + Sync + 'static,
    E: Dispatch<H, Ctx = PgConnection>,
{
    /// Inbox claim, handler and outbox insert for one decoded event, in the
    /// caller's transaction. A duplicate leaves the transaction unchanged.
    async fn handle(&self, conn: &mut PgConnection, message: &Received, event: E) -> Result<Outcome, Failure> {
        let meta = event.meta();
        let span = tracing::info_span!(
            "event",
            saga_key = %meta.saga_key,
            event_id = %meta.event_id,
            event_type = meta.event_type,
            trace_id = meta.traceparent.as_deref().and_then(saga_process::trace::trace_id).unwrap_or(""),
        );
        let source = inbox::Source { topic: &message.topic, partition: message.partition, offset: message.offset };
        async {
            if !inbox::claim(&mut *conn, meta.event_id, meta.event_type, source).await.map_err(database)? {
                return Ok((Processed::Duplicate, None));
            }
            let reply = event
                .dispatch(&self.handler, &mut *conn)
                .await
                .map_err(|e| Failure::Transient(format!("handler: {e}")))?;
            if let Some(reply) = &reply {
                outbox::insert(&mut *conn, reply).await.map_err(database)?;
            }
            Ok((Processed::Handled, reply.map(|r| r.event_type)))
        }
        .instrument(span.clone())
        .await
        .map(|(processed, reply)| Outcome { processed, reply, span })
    }
}

fn database(error: sqlx::Error) -> Failure {
    Failure::Transient(format!("database: {error}"))
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Workers per service instance. One worker serialised every message of the
/// service behind one commit's fsync; three keep a few transactions in flight
/// (within the default pool of 10 connections, leaving room for gRPC calls,
/// the relay and the sweeper) and divide the spec's 6 partitions evenly.
pub const WORKERS: usize = 3;

/// Messages a worker may have queued before the receiving loop waits for it.
const WORKER_QUEUE: usize = 64;

/// The worker of a partition: by partition number alone, whatever the topic.
/// The saga topics have the same partition count and the producers the same
/// key hash, so one order's events land on the same partition number in every
/// topic: one worker then sees a saga's events across topics in arrival order,
/// as the single loop did. (Dealt by topic too, the order service saw a
/// `payment.completed` before the `stock.reduction.success` it follows,
/// ignored it as illegal in `created`, and the saga timed out.)
fn worker_of(partition: i32) -> usize {
    partition.rem_euclid(WORKERS as i32) as usize
}

/// Runs the loop until `shutdown`; the messages in flight are finished (or
/// left uncommitted, to be redelivered) and stored offsets are committed.
pub async fn run<P: Processor>(config: ConsumerConfig, processor: P, shutdown: Shutdown) -> Result<(), ConsumerError> {
    let group = format!("{}{}", config.topic_prefix, config.group_id);
    let consumer: Arc<StreamConsumer> = Arc::new(crate::kafka::consumer(&config.brokers, &group)?);
    // Dead letters are rare: the default batching delay is fine for them.
    let producer = crate::kafka::producer(&config.brokers, crate::kafka::DEFAULT_LINGER_MS)?;
    let topics: Vec<String> = config.topics.iter().map(|t| format!("{}{t}", config.topic_prefix)).collect();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    tracing::info!(%group, topics = ?topics, workers = WORKERS, "consumer started");
    let config = Arc::new(config);
    let processor = Arc::new(processor);
    let mut queues = Vec::with_capacity(WORKERS);
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (sender, receiver) = tokio::sync::mpsc::channel::<OwnedMessage>(WORKER_QUEUE);
        queues.push(sender);
        workers.push(tokio::spawn(work(
            receiver,
            config.clone(),
            group.clone(),
            processor.clone(),
            producer.clone(),
            consumer.clone(),
            shutdown.clone(),
        )));
    }
    loop {
        let received = tokio::select! {
            () = shutdown.wait() => break,
            m = consumer.recv() => m,
        };
        let message = match received {
            Ok(m) => m.detach(),
            Err(error) => {
                tracing::warn!(%error, "Kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let queue = &queues[worker_of(message.partition())];
        let sent = tokio::select! {
            () = shutdown.wait() => break,
            sent = queue.send(message) => sent,
        };
        if sent.is_err() {
            // A worker only stops at shutdown; its partitions' offsets stay
            // unstored and their messages are redelivered after the restart.
            break;
        }
    }
    drop(queues);
    for worker in workers {
        if let Err(error) = worker.await {
            tracing::error!(%error, "consumer worker failed");
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
    tracing::info!(%group, "consumer stopped");
    Ok(())
}

/// One worker: its partitions' messages in order, several in one
/// transaction when they are already waiting; each offset is stored only
/// after its message reached a final outcome.
async fn work<P: Processor>(
    mut queue: tokio::sync::mpsc::Receiver<OwnedMessage>,
    config: Arc<ConsumerConfig>,
    group: String,
    processor: Arc<P>,
    producer: FutureProducer,
    consumer: Arc<StreamConsumer>,
    shutdown: Shutdown,
) {
    let max_batch = config.max_batch.max(1);
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(max_batch);
    while let Some(first) = queue.recv().await {
        // Never wait for a batch to fill: take what is queued right now, so
        // a quiet system keeps one message per transaction and its latency.
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        if shutdown.is_requested() {
            // Queued but not started: left unstored, redelivered after the restart.
            break;
        }
        let received: Vec<Received> = batch.iter().map(|m| to_received(m, &config.topic_prefix)).collect();
        let together = match received.len() {
            1 => false,
            n => match processor.process_batch(&received).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(%error, messages = n, "batch rolled back; handling its messages one at a time");
                    false
                }
            },
        };
        for (message, received) in batch.iter().zip(&received) {
            if !together && !deliver(&config, &group, &*processor, &producer, message, received, &shutdown).await {
                // Shutdown during a retry backoff: the offset stays unstored,
                // so the message is redelivered after the restart; later
                // messages of its partitions must not be handled before it.
                return;
            }
            // `rd_kafka_offset_store` stores offset + 1 itself (the next
            // message to read): passing the message's own offset is correct;
            // adding 1 here would skip a message after a restart.
            if let Err(error) = consumer.store_offset(message.topic(), message.partition(), message.offset()) {
                tracing::warn!(%error, "cannot store offset");
            }
        }
        batch.clear();
    }
}

fn to_received(message: &OwnedMessage, prefix: &str) -> Received {
    let topic = message.topic().strip_prefix(prefix).unwrap_or(message.topic()).to_owned();
    let headers = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
        .unwrap_or_default();
    Received {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
    }
}

/// Processes one message to a final outcome (handled or dead-lettered).
/// `false` when shutdown interrupted it before that.
async fn deliver<P: Processor>(
    config: &ConsumerConfig,
    group: &str,
    processor: &P,
    producer: &FutureProducer,
    message: &OwnedMessage,
    received: &Received,
    shutdown: &Shutdown,
) -> bool {
    let mut attempt = 0u32;
    let (reason, error) = loop {
        attempt += 1;
        match processor.process(received).await {
            Ok(_) => return true,
            Err(Failure::Undecodable(e)) => break ("undecodable", e),
            Err(Failure::Transient(e)) if attempt >= config.retry.max_attempts => break ("retries-exhausted", e),
            Err(Failure::Transient(e)) => {
                let backoff = backoff(&config.retry, attempt);
                tracing::warn!(error = %e, attempt, ?backoff, topic = %received.topic, partition = received.partition,
                    offset = received.offset, "processing failed; retrying in place");
                tokio::select! {
                    () = shutdown.wait() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    };
    tracing::error!(reason, %error, attempts = attempt, topic = %received.topic, partition = received.partition,
        offset = received.offset, "dead-lettering message");
    let dlq_topic = format!("{}{}{}", config.topic_prefix, received.topic, config.dlq_suffix);
    let mut backoff = Duration::from_millis(200);
    loop {
        match dead_letter(producer, &dlq_topic, group, message, received, reason, &error, attempt).await {
            Ok(()) => return true,
            Err(e) => {
                // Never move on without the dead letter written: that would lose the message.
                tracing::error!(error = %e, %dlq_topic, "cannot write dead letter; retrying");
                tokio::select! {
                    () = shutdown.wait() => return false,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    producer: &FutureProducer,
    dlq_topic: &str,
    group: &str,
    message: &OwnedMessage,
    received: &Received,
    reason: &str,
    error: &str,
    attempts: u32,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &received.headers {
        if !k.starts_with("dlq-") {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
    }
    let error: String = error.chars().take(2000).collect();
    let partition = received.partition.to_string();
    let offset = received.offset.to_string();
    let attempts = attempts.to_string();
    let failed_at = chrono::Utc::now().to_rfc3339();
    for (k, v) in [
        (dlq_headers::REASON, reason),
        (dlq_headers::ERROR, error.as_str()),
        (dlq_headers::ORIGINAL_TOPIC, received.topic.as_str()),
        (dlq_headers::ORIGINAL_PARTITION, partition.as_str()),
        (dlq_headers::ORIGINAL_OFFSET, offset.as_str()),
        (dlq_headers::ATTEMPTS, attempts.as_str()),
        (dlq_headers::CONSUMER_GROUP, group),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_number_has_one_worker_whatever_the_topic() {
        // The spec's 6 partitions use every worker, each the same share.
        let mut load = [0usize; WORKERS];
        for partition in 0..6 {
            load[worker_of(partition)] += 1;
        }
        assert_eq!(load, [6 / WORKERS; WORKERS]);
        assert_eq!(worker_of(4), worker_of(4 + WORKERS as i32));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let retry = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        let b1 = backoff(&retry, 1);
        assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(120), "{b1:?}");
        let b3 = backoff(&retry, 3);
        assert!(b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(480), "{b3:?}");
        let b10 = backoff(&retry, 10);
        assert!(b10 >= Duration::from_millis(1000) && b10 <= Duration::from_millis(1200), "{b10:?}");
    }
}
