//! The consumer loop: in partition order, partitions in parallel.
//!
//! Messages are dealt to a few workers ([`WORKERS`], or `CONSUMER_WORKERS`)
//! by partition number: every message of a partition goes to the same worker, which handles them in
//! order, so each partition (each saga, across topics) keeps its order while
//! several partitions' transactions are in flight at once and PostgreSQL
//! flushes their commits together.
//!
//! For each message ([`transactional`]): decode, then (in one PostgreSQL
//! transaction) claim the inbox row, run the handler and insert its reply
//! into the outbox; commit; only then store the offset. A worker that finds
//! several messages waiting handles up to `max_batch` of them in one
//! transaction; if that transaction fails, the same messages are handled one
//! at a time, so a batch changes how many commits there are, never what is
//! committed.
//!
//! A failure is handled by its class ([`Failure`], [`worker`]): an outage of
//! the database or the broker is waited out however long it lasts, the
//! partition holding its place; a state that is not there yet is retried by
//! the spec's policy, then dead-lettered; a message that is itself wrong
//! (undecodable, or a handler's permanent verdict) is dead-lettered at once
//! ([`dead_letter`]) and the partition moves on.
//!
//! The receiving loop never stops polling, so the group never takes a
//! waiting worker for a dead member: when a worker falls behind (it is slow,
//! or waiting out an outage) its messages wait in the loop, and past
//! [`WAITING_AT_MOST`] the loop pauses that worker's partitions and resumes
//! them once the worker caught up.

mod dead_letter;
mod ownership;
mod transactional;
mod worker;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, TopicPartitionList};
use saga_contract::{FailureClass, RetryPolicy};
use saga_process::shutdown::Shutdown;
use tokio::sync::mpsc::error::TrySendError;

pub use self::dead_letter::{Reason as DeadLetterReason, dlq_headers};
pub use self::ownership::HANDOVER_WAIT;
use self::ownership::{Epoch, Ownership, RebalanceContext};
pub use self::transactional::TxConsumer;
use self::worker::Worker;
pub use self::worker::backoff;
use crate::health::{Component, Health};

/// The group's consumer, handing partitions over on rebalance ([`ownership`]).
type GroupConsumer = StreamConsumer<RebalanceContext>;

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
    /// Workers the partitions are dealt to ([`WORKERS`] by default; at least 1).
    pub workers: usize,
    /// Static group membership (`group.instance.id`), unique per instance:
    /// the group keeps this consumer's partitions for it while it restarts
    /// (within the session timeout), and after the broker restarts it rejoins
    /// at once instead of waiting for its old membership to expire (10 s of
    /// no traffic in the kill-broker chaos scenario). `None`: dynamic.
    pub instance_id: Option<String>,
}

/// The errors `recv` returns while the broker is away (one per failed
/// connection attempt, queued by librdkafka). They are logged once per
/// outage and taken without waiting: the ones queued during an outage come
/// back all at once when it ends, and sleeping after each (as this loop once
/// did, 200 ms) left the consumer reading stale errors for 12 s after the
/// broker was back. Only a flood (a client failing again and again at once)
/// is slowed down.
#[derive(Default)]
struct ReceiveErrors {
    since: Option<tokio::time::Instant>,
    /// Errors in the current second, and when it started.
    in_window: u32,
    window: Option<tokio::time::Instant>,
}

impl ReceiveErrors {
    const FLOOD: u32 = 200;

    /// Counts an error; `Some(pause)` when the loop should slow down.
    fn record(&mut self, error: &rdkafka::error::KafkaError) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        if self.since.is_none() {
            tracing::warn!(%error, "Kafka receive error; consuming again once the broker answers");
            self.since = Some(now);
        } else {
            tracing::debug!(%error, "Kafka receive error");
        }
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => self.in_window += 1,
            _ => {
                self.window = Some(now);
                self.in_window = 1;
            }
        }
        (self.in_window > Self::FLOOD).then_some(Duration::from_millis(200))
    }

    /// A message arrived: the outage, if any, is over.
    fn ended(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(down_for = ?since.elapsed(), "Kafka consumer receives again");
        }
    }
}

/// A message as the receiving loop took it from librdkafka, and when: how
/// long it then waits for its worker is one hop of a saga's latency
/// (`cargo xtask bench` reports it from the inbox row).
pub(crate) struct Arrived {
    message: OwnedMessage,
    at: DateTime<Utc>,
}

impl Arrived {
    fn now(message: OwnedMessage) -> Arrived {
        Arrived { message, at: Utc::now() }
    }
}

impl std::ops::Deref for Arrived {
    type Target = OwnedMessage;

    fn deref(&self) -> &OwnedMessage {
        &self.message
    }
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
    /// The message's timestamp: when its producer handed it to librdkafka
    /// (Kafka's `CreateTime`, milliseconds), if it has one.
    pub produced_at: Option<DateTime<Utc>>,
    /// When this process's receiving loop took it from librdkafka.
    pub received_at: Option<DateTime<Utc>>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn of(arrived: &Arrived, prefix: &str) -> Received {
        let message = &arrived.message;
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
            produced_at: message.timestamp().to_millis().and_then(DateTime::from_timestamp_millis),
            received_at: Some(arrived.at),
        }
    }
}

/// Why processing a message failed, and so what the worker does with it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The database or the broker is away: waited out, never dead-lettered.
    #[error("infrastructure: {0}")]
    Infrastructure(String),
    /// The state the message needs is not there yet: retried by the spec's
    /// policy, then dead-lettered (`retries-exhausted`).
    #[error("not yet: {0}")]
    NotYet(String),
    /// A race lost to a concurrent transaction: retried by the spec's policy
    /// (counted with `NotYet`), then dead-lettered (`retries-exhausted`).
    #[error("contended: {0}")]
    Contended(String),
    /// The bytes are no event this service knows: dead-lettered at once.
    #[error("undecodable: {0}")]
    Undecodable(String),
    /// The handler's verdict that the event can never be handled:
    /// dead-lettered at once (`permanent`).
    #[error("permanent: {0}")]
    Permanent(String),
}

impl Failure {
    /// A failure of class `class`, described by `error`.
    pub fn classed(class: FailureClass, error: String) -> Failure {
        match class {
            FailureClass::Infrastructure => Failure::Infrastructure(error),
            FailureClass::NotYet => Failure::NotYet(error),
            FailureClass::Contended => Failure::Contended(error),
            FailureClass::Permanent => Failure::Permanent(error),
        }
    }

    /// A handler's error, by the class it says it is.
    pub fn of<E: std::error::Error + saga_contract::Classify>(error: &E) -> Failure {
        Failure::classed(error.class(), format!("handler: {error}"))
    }

    /// An error of the consumer's own database work (transaction, inbox,
    /// outbox), by [`crate::db::class_of`].
    pub fn database(error: sqlx::Error) -> Failure {
        Failure::classed(crate::db::class_of(&error), format!("database: {error}"))
    }
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
        async move { Err(Failure::NotYet(format!("this processor does not batch ({count} messages)"))) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("Kafka error: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Workers per service instance by default (`CONSUMER_WORKERS`). One worker
/// serialised every message of the service behind one commit's fsync; three
/// keep a few transactions in flight and divide the spec's 6 partitions evenly.
pub const WORKERS: usize = 3;

/// Messages a worker's own queue holds.
const WORKER_QUEUE: usize = 64;

/// Messages received for a worker that may wait in the loop, behind its full queue, before
/// its partitions are paused. More than one fetch brings of all of a worker's partitions
/// (`max.partition.fetch.bytes`, about a hundred events each, see `kafka::consumer`), so each
/// of them is among what waits. A pause drops what librdkafka prefetched for the paused
/// partitions and the fetch starts again at resume; pausing as soon as the queue was full,
/// the partition whose data came first in every fetch was the only one ever received: after a
/// broker outage the product service took nothing but order-events for 20 s and more while
/// the payment-events that release reservations waited.
const WAITING_AT_MOST: usize = 1024;

/// How often the receiving loop looks whether a paused worker caught up,
/// when no message arrives to wake it.
const PAUSED_CHECK: Duration = Duration::from_millis(100);

/// How often the receiving loop looks whether the assignment changed; when
/// it did, the partitions of workers that are not behind are resumed again:
/// a partition paused, revoked by a rebalance and assigned back may still be
/// paused, and nothing else would ever resume it. (Resuming on every tick
/// instead cost the broker CPU: each resume restarts the partition's fetch.)
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// The worker of a partition: by partition number alone, whatever the topic.
/// The saga topics have the same partition count and the producers the same
/// key hash, so one order's events land on the same partition number in every
/// topic: one worker then sees a saga's events across topics in arrival order,
/// as the single loop did. (Dealt by topic too, the order service saw a
/// `payment.completed` before the `stock.reduction.success` it follows,
/// ignored it as illegal in `created`, and the saga timed out.)
fn worker_of(partition: i32, workers: usize) -> usize {
    partition.rem_euclid(workers.max(1) as i32) as usize
}

/// Runs the loop until `shutdown`; the messages in flight are finished (or
/// left uncommitted, to be redelivered) and stored offsets are committed.
/// The loop and each worker report to `health`: a worker is failing while a
/// message of its partitions cannot be handled.
pub async fn run<P: Processor>(
    config: ConsumerConfig,
    processor: P,
    shutdown: Shutdown,
    health: Health,
) -> Result<(), ConsumerError> {
    let receiving = health.probe(Component::Consumer);
    let group = format!("{}{}", config.topic_prefix, config.group_id);
    // Dead letters are rare: the default batching delay is fine for them.
    let producer = crate::kafka::producer(&config.brokers, crate::kafka::DEFAULT_LINGER_MS)?;
    let (config, processor) = (Arc::new(config), Arc::new(processor));
    // One probe per worker for the whole run: a consumer started again after a fatal error
    // is the same loop going on, not one that ended.
    let probes = (0..config.workers.max(1)).map(|_| Arc::new(health.probe(Component::Consumer))).collect();
    let parts = Parts { config, processor, producer, group, shutdown, probes };
    loop {
        match consume(&parts).await? {
            Ended::Shutdown => break,
            // librdkafka gives up on a consumer for good after a fatal error (a static member
            // fenced after the group coordinator moved, seen when a Kafka node was killed): a
            // new one rejoins with the same instance id and reads from the committed offsets.
            // What was handled but not committed yet comes again, and the inbox drops it.
            Ended::Fatal(error) => {
                tracing::error!(%error, group = %parts.group, "fatal Kafka consumer error; starting a new consumer");
                tokio::select! {
                    () = parts.shutdown.wait() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    tracing::info!(group = %parts.group, "consumer stopped");
    drop(receiving);
    Ok(())
}

/// What every consumer of one [`run`] shares.
struct Parts<P> {
    config: Arc<ConsumerConfig>,
    processor: Arc<P>,
    producer: rdkafka::producer::FutureProducer,
    group: String,
    shutdown: Shutdown,
    probes: Vec<Arc<crate::health::Probe>>,
}

/// The static member id (`group.instance.id`) of instance `id` reading `topics`: the id,
/// and a digest of the topics. A version that reads other topics joins as a new member
/// (and the one it replaces leaves at the end of its session). Rejoining under its old id
/// it would keep its old partitions without a rebalance, the broker keeping the topics it
/// first subscribed to (KAFKA-12759), and a topic new to the group would go to nobody:
/// the rollout chaos scenario found the order service, redeployed for the shipping step,
/// never assigned `shipping-events`, with 735 orders left in `paid`.
fn static_member(id: &str, topics: &[String]) -> String {
    use sha2::Digest as _;
    let mut sorted: Vec<&str> = topics.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let digest = sha2::Sha256::digest(sorted.join(",").as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{id}-{short}")
}

/// Why one consumer stopped.
enum Ended {
    Shutdown,
    /// librdkafka's fatal error: this consumer cannot go on.
    Fatal(rdkafka::error::KafkaError),
}

/// One consumer and its workers, until shutdown or a fatal error.
async fn consume<P: Processor>(parts: &Parts<P>) -> Result<Ended, ConsumerError> {
    let Parts { config, processor, producer, group, shutdown, probes } = parts;
    let ownership = Arc::new(Ownership::default());
    let context = RebalanceContext { ownership: ownership.clone() };
    let topics: Vec<String> = config.topics.iter().map(|t| format!("{}{t}", config.topic_prefix)).collect();
    let member = config.instance_id.as_deref().map(|id| static_member(id, &topics));
    let consumer: Arc<GroupConsumer> =
        Arc::new(crate::kafka::consumer(&config.brokers, group, member.as_deref(), context)?);
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    tracing::info!(%group, topics = ?topics, workers = probes.len(), "consumer started");
    let mut queues = Vec::with_capacity(probes.len());
    let mut workers = Vec::with_capacity(probes.len());
    for probe in probes {
        let (sender, receiver) = tokio::sync::mpsc::channel::<(Arrived, Epoch)>(WORKER_QUEUE);
        queues.push(sender);
        let worker = Worker {
            config: config.clone(),
            group: group.clone(),
            processor: processor.clone(),
            producer: producer.clone(),
            consumer: consumer.clone(),
            ownership: ownership.clone(),
            shutdown: shutdown.clone(),
            probe: probe.clone(),
        };
        workers.push(tokio::spawn(worker.run(receiver)));
    }
    let mut flow = Flow::new(queues, ownership.clone());
    let mut reconciled = tokio::time::Instant::now();
    let mut errors = ReceiveErrors::default();
    let mut ended = Ended::Shutdown;
    loop {
        if flow.feed(consumer.as_ref()).is_err() {
            // A worker only stops at shutdown; its partitions' offsets stay
            // unstored and their messages are redelivered after the restart.
            break;
        }
        if reconciled.elapsed() >= RECONCILE_EVERY {
            flow.reconcile(consumer.as_ref());
            reconciled = tokio::time::Instant::now();
        }
        let tick = if flow.any_paused() { PAUSED_CHECK } else { RECONCILE_EVERY };
        let received = tokio::select! {
            () = shutdown.wait() => break,
            m = consumer.recv() => m,
            () = tokio::time::sleep(tick) => continue,
        };
        match received {
            Ok(m) => {
                errors.ended();
                if flow.deal(consumer.as_ref(), Arrived::now(m.detach())).is_err() {
                    break;
                }
            }
            Err(error @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                // Nothing of this consumer's may be started or retried any more.
                ownership.revoke_all();
                ended = Ended::Fatal(error);
                break;
            }
            Err(error) => {
                if let Some(pause) = errors.record(&error) {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    drop(flow);
    for worker in workers {
        if let Err(error) = worker.await {
            tracing::error!(%error, "consumer worker failed");
        }
    }
    // The final commit, and the close when the last handle drops, wait for the broker: on a
    // thread of their own, so that a runtime of one thread goes on serving the rest of the
    // stop meanwhile (a close during the group's first join has waited without end).
    let commit = matches!(ended, Ended::Shutdown);
    let closed = tokio::task::spawn_blocking(move || {
        if commit {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => tracing::warn!(%error, "final offset commit failed"),
            }
        }
        drop(consumer);
    });
    if let Err(error) = closed.await {
        tracing::error!(%error, "closing the consumer failed");
    }
    Ok(ended)
}

/// A worker's queue has closed: it stopped (only at shutdown).
#[derive(Debug)]
struct WorkerGone;

/// Deals received messages to the workers' queues without ever blocking the
/// receiving loop: a message for a worker whose queue is full waits here, and
/// once [`WAITING_AT_MOST`] wait, that worker's partitions are paused until it
/// has caught up.
struct Flow {
    queues: Vec<tokio::sync::mpsc::Sender<(Arrived, Epoch)>>,
    /// Per worker, messages received for it that its queue had no room for.
    waiting: Vec<VecDeque<(Arrived, Epoch)>>,
    /// Tells which assignment a received message belongs to.
    ownership: Arc<Ownership>,
    paused: Vec<bool>,
    /// The assignment at the last reconcile.
    assignment: Vec<(String, i32)>,
}

impl Flow {
    fn new(queues: Vec<tokio::sync::mpsc::Sender<(Arrived, Epoch)>>, ownership: Arc<Ownership>) -> Flow {
        let n = queues.len();
        Flow {
            queues,
            ownership,
            waiting: (0..n).map(|_| VecDeque::new()).collect(),
            paused: vec![false; n],
            assignment: Vec::new(),
        }
    }

    fn any_paused(&self) -> bool {
        self.paused.iter().any(|p| *p)
    }

    /// Hands a received message to its worker, or keeps it (behind the ones
    /// already waiting, in the order received) when its queue is full; pauses
    /// the worker's partitions once too many wait.
    fn deal(&mut self, consumer: &impl Partitions, message: Arrived) -> Result<(), WorkerGone> {
        let w = worker_of(message.partition(), self.queues.len());
        // Received after its partition was revoked (the rebalance ran in this `recv`): the
        // next owner reads it from the committed offset.
        let Some(epoch) = self.ownership.epoch(message.topic(), message.partition()) else { return Ok(()) };
        let message = (message, epoch);
        if self.waiting[w].is_empty() {
            match self.queues[w].try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(message)) => self.waiting[w].push_back(message),
                Err(TrySendError::Closed(_)) => return Err(WorkerGone),
            }
        } else {
            self.waiting[w].push_back(message);
        }
        if self.waiting[w].len() >= WAITING_AT_MOST {
            self.pause(consumer, w);
        }
        Ok(())
    }

    /// Moves waiting messages into queues that have room again, and resumes
    /// the partitions of a worker with nothing left waiting.
    fn feed(&mut self, consumer: &impl Partitions) -> Result<(), WorkerGone> {
        for w in 0..self.queues.len() {
            while let Some(message) = self.waiting[w].pop_front() {
                match self.queues[w].try_send(message) {
                    Ok(()) => {}
                    Err(TrySendError::Full(message)) => {
                        self.waiting[w].push_front(message);
                        break;
                    }
                    Err(TrySendError::Closed(_)) => return Err(WorkerGone),
                }
            }
            if self.paused[w] && self.waiting[w].is_empty() {
                self.set_paused(consumer, w, false);
            }
        }
        Ok(())
    }

    fn pause(&mut self, consumer: &impl Partitions, w: usize) {
        self.set_paused(consumer, w, true);
    }

    /// After a rebalance, resumes the assigned partitions of every worker
    /// that is not behind (see [`RECONCILE_EVERY`]).
    fn reconcile(&mut self, consumer: &impl Partitions) {
        let Some(now) = consumer.assigned() else { return };
        if now == self.assignment {
            return;
        }
        self.assignment = now;
        for w in 0..self.queues.len() {
            if !self.paused[w] {
                self.set_paused(consumer, w, false);
            }
        }
    }

    /// Pauses or resumes every partition of worker `w` in the current assignment.
    fn set_paused(&mut self, consumer: &impl Partitions, w: usize, paused: bool) {
        let Some(assignment) = consumer.assigned() else { return };
        let workers = self.queues.len();
        let mine: Vec<(String, i32)> = assignment.into_iter().filter(|(_, p)| worker_of(*p, workers) == w).collect();
        match consumer.set_paused(&mine, paused) {
            Ok(()) if self.paused[w] != paused => {
                self.paused[w] = paused;
                tracing::debug!(worker = w, partitions = mine.len(), paused, "worker flow control");
            }
            Ok(()) => {}
            Err(error) => tracing::warn!(%error, worker = w, paused, "cannot pause or resume partitions"),
        }
    }
}

/// What the flow control needs of the consumer: its assignment, and pausing and resuming
/// partitions of it. A trait so the dealing, pausing and resuming are tested without a broker.
trait Partitions {
    /// The assigned partitions, sorted; `None` (logged) when they cannot be read.
    fn assigned(&self) -> Option<Vec<(String, i32)>>;
    /// Pauses (or resumes) these partitions.
    fn set_paused(&self, partitions: &[(String, i32)], paused: bool) -> Result<(), rdkafka::error::KafkaError>;
}

impl Partitions for GroupConsumer {
    fn assigned(&self) -> Option<Vec<(String, i32)>> {
        match self.assignment() {
            Ok(assignment) => {
                let mut now: Vec<(String, i32)> =
                    assignment.elements().iter().map(|p| (p.topic().to_owned(), p.partition())).collect();
                now.sort();
                Some(now)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the consumer's assignment");
                None
            }
        }
    }

    fn set_paused(&self, partitions: &[(String, i32)], paused: bool) -> Result<(), rdkafka::error::KafkaError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        if paused { self.pause(&list) } else { self.resume(&list) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_member_id_changes_with_the_topics_read_and_only_with_them() {
        let topics = |names: &[&str]| names.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let before = static_member("order-host-50051", &topics(&["inventory-events", "payment-events"]));
        assert!(before.starts_with("order-host-50051-"), "{before}");
        // A restart of the same version keeps its membership, whatever the order.
        assert_eq!(before, static_member("order-host-50051", &topics(&["payment-events", "inventory-events"])));
        // The next version reads another topic: a new member.
        let after =
            static_member("order-host-50051", &topics(&["inventory-events", "payment-events", "shipping-events"]));
        assert_ne!(before, after);
        assert_ne!(before, static_member("order-host-50052", &topics(&["inventory-events", "payment-events"])));
    }

    #[test]
    fn a_partition_number_has_one_worker_whatever_the_topic() {
        // The spec's 6 partitions use every worker, each the same share, with the
        // default count and with a worker per partition.
        for workers in [WORKERS, 6] {
            let mut load = vec![0usize; workers];
            for partition in 0..6 {
                load[worker_of(partition, workers)] += 1;
            }
            assert_eq!(load, vec![6 / workers; workers]);
            assert_eq!(worker_of(4, workers), worker_of(4 + workers as i32, workers));
        }
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

    #[test]
    fn a_failure_takes_the_class_its_error_says() {
        assert!(matches!(Failure::classed(FailureClass::Infrastructure, "x".into()), Failure::Infrastructure(_)));
        assert!(matches!(Failure::classed(FailureClass::NotYet, "x".into()), Failure::NotYet(_)));
        assert!(matches!(Failure::classed(FailureClass::Contended, "x".into()), Failure::Contended(_)));
        assert!(matches!(Failure::classed(FailureClass::Permanent, "x".into()), Failure::Permanent(_)));
        assert!(matches!(Failure::database(sqlx::Error::PoolTimedOut), Failure::Infrastructure(_)));
        assert!(matches!(Failure::database(sqlx::Error::RowNotFound), Failure::Permanent(_)));
    }

    /// The consumer as the flow control sees it: an assignment, and what is paused.
    #[derive(Default)]
    struct FakePartitions {
        assignment: Vec<(String, i32)>,
        paused: std::sync::Mutex<std::collections::BTreeSet<(String, i32)>>,
        /// Every pause (true) or resume (false) asked for, with the partitions.
        calls: std::sync::Mutex<Vec<(bool, Vec<i32>)>>,
    }

    impl FakePartitions {
        fn of(partitions: &[i32]) -> FakePartitions {
            FakePartitions {
                assignment: partitions.iter().map(|p| ("t".to_owned(), *p)).collect(),
                ..Default::default()
            }
        }

        fn paused(&self) -> Vec<i32> {
            self.paused.lock().expect("lock").iter().map(|(_, p)| *p).collect()
        }
    }

    impl Partitions for FakePartitions {
        fn assigned(&self) -> Option<Vec<(String, i32)>> {
            Some(self.assignment.clone())
        }

        fn set_paused(&self, partitions: &[(String, i32)], paused: bool) -> Result<(), rdkafka::error::KafkaError> {
            let mut set = self.paused.lock().expect("lock");
            for partition in partitions {
                if paused {
                    set.insert(partition.clone())
                } else {
                    set.remove(partition)
                };
            }
            self.calls.lock().expect("lock").push((paused, partitions.iter().map(|(_, p)| *p).collect()));
            Ok(())
        }
    }

    fn message(partition: i32, offset: i64) -> Arrived {
        Arrived::now(OwnedMessage::new(
            None,
            None,
            "t".to_owned(),
            rdkafka::Timestamp::NotAvailable,
            partition,
            offset,
            None,
        ))
    }

    /// A flow over queues of `capacity` per worker, owning partitions `owned` of topic `t`.
    fn flow(capacity: usize, owned: &[i32]) -> (Flow, Vec<tokio::sync::mpsc::Receiver<(Arrived, Epoch)>>) {
        let ownership = Arc::new(Ownership::default());
        let mut list = TopicPartitionList::new();
        for p in owned {
            list.add_partition("t", *p);
        }
        ownership.assigned(&list);
        let (senders, receivers) = (0..WORKERS).map(|_| tokio::sync::mpsc::channel(capacity)).unzip();
        (Flow::new(senders, ownership), receivers)
    }

    fn offsets(queue: &mut tokio::sync::mpsc::Receiver<(Arrived, Epoch)>) -> Vec<i64> {
        std::iter::from_fn(|| queue.try_recv().ok()).map(|(m, _)| m.offset()).collect()
    }

    #[test]
    fn messages_a_full_queue_cannot_take_wait_and_reach_it_in_the_order_received() {
        let consumer = FakePartitions::of(&[0, 1]);
        let (mut flow, mut queues) = flow(2, &[0, 1]);
        for offset in 0..5 {
            flow.deal(&consumer, message(0, offset)).expect("dealt");
        }
        flow.deal(&consumer, message(1, 0)).expect("dealt");
        let (w0, w1) = (worker_of(0, WORKERS), worker_of(1, WORKERS));
        assert_eq!(offsets(&mut queues[w0]), [0, 1], "the queue holds two; three wait");
        assert_eq!(offsets(&mut queues[w1]), [0], "another worker's partition is not held up");
        flow.feed(&consumer).expect("fed");
        assert_eq!(offsets(&mut queues[w0]), [2, 3]);
        flow.deal(&consumer, message(0, 5)).expect("dealt behind the ones waiting");
        flow.feed(&consumer).expect("fed");
        assert_eq!(offsets(&mut queues[w0]), [4, 5]);
        assert!(consumer.paused().is_empty(), "a few waiting messages pause nothing");
    }

    #[test]
    fn a_worker_far_behind_has_its_partitions_paused_until_it_caught_up() {
        let partitions = [0, 1, 3];
        let consumer = FakePartitions::of(&partitions);
        let (mut flow, mut queues) = flow(1, &partitions);
        let slow = worker_of(0, WORKERS);
        let of_slow: Vec<i32> = partitions.iter().copied().filter(|p| worker_of(*p, WORKERS) == slow).collect();
        for offset in 0..=WAITING_AT_MOST as i64 {
            flow.deal(&consumer, message(0, offset)).expect("dealt");
        }
        assert_eq!(consumer.paused(), of_slow, "only the slow worker's partitions are paused");
        assert!(flow.any_paused());
        // The worker catches up one message at a time; its partitions stay paused while any wait.
        let mut handled = Vec::new();
        while flow.waiting[slow].len() > 1 {
            handled.extend(offsets(&mut queues[slow]));
            flow.feed(&consumer).expect("fed");
            assert_eq!(consumer.paused(), of_slow);
        }
        handled.extend(offsets(&mut queues[slow]));
        flow.feed(&consumer).expect("fed");
        assert!(consumer.paused().is_empty(), "resumed once nothing waits");
        assert!(!flow.any_paused());
        handled.extend(offsets(&mut queues[slow]));
        assert_eq!(handled, (0..=WAITING_AT_MOST as i64).collect::<Vec<_>>(), "every message, in order");
    }

    #[test]
    fn a_message_of_a_partition_not_owned_is_left_to_its_next_owner() {
        let consumer = FakePartitions::of(&[0]);
        let (mut flow, mut queues) = flow(8, &[0]);
        flow.deal(&consumer, message(3, 7)).expect("dropped, not an error");
        assert!(offsets(&mut queues[worker_of(3, WORKERS)]).is_empty());
    }

    #[test]
    fn a_worker_whose_queue_is_gone_ends_the_loop() {
        let consumer = FakePartitions::of(&[0]);
        let (mut flow, queues) = flow(8, &[0]);
        drop(queues);
        assert!(flow.deal(&consumer, message(0, 0)).is_err());
    }

    #[test]
    fn a_new_assignment_resumes_the_workers_not_behind_and_leaves_the_others_paused() {
        let consumer = FakePartitions::of(&[0, 1]);
        let (mut flow, _queues) = flow(1, &[0, 1]);
        let slow = worker_of(0, WORKERS);
        for offset in 0..=WAITING_AT_MOST as i64 {
            flow.deal(&consumer, message(0, offset)).expect("dealt");
        }
        flow.reconcile(&consumer);
        let calls = consumer.calls.lock().expect("lock").clone();
        let resumed: Vec<i32> = calls.iter().filter(|(paused, _)| !paused).flat_map(|(_, p)| p.clone()).collect();
        assert_eq!(resumed, [1], "the worker not behind is resumed, the slow one is not");
        assert!(flow.paused[slow]);
        // The same assignment again: nothing to do (each resume restarts a fetch).
        let before = consumer.calls.lock().expect("lock").len();
        flow.reconcile(&consumer);
        assert_eq!(consumer.calls.lock().expect("lock").len(), before);
    }

    /// Errors queued during an outage are taken without waiting; only a flood slows the loop.
    #[test]
    fn receive_errors_slow_the_loop_only_in_a_flood() {
        let mut errors = ReceiveErrors::default();
        let error = rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::AllBrokersDown);
        for _ in 0..ReceiveErrors::FLOOD {
            assert_eq!(errors.record(&error), None);
        }
        assert_eq!(errors.record(&error), Some(Duration::from_millis(200)), "the 201st in one second");
        errors.ended();
        assert!(errors.since.is_none(), "a message ends the outage");
    }
}
