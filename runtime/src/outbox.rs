//! Transactional outbox: events are inserted in the transaction of the state
//! change they announce; the relay publishes committed rows and marks them
//! sent only after the broker acknowledged them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_contract::OutboxRecord;
use saga_process::metrics::{OUTBOX_BACKLOG, OUTBOX_PUBLISH_LATENCY, OUTBOX_PUBLISHED};
use saga_process::shutdown::Shutdown;
use sqlx::{PgConnection, PgPool, Row};

use crate::health::{Component, Health};

/// Bumped each time a transaction of this process that inserted outbox rows
/// committed; every relay of the process waits on it. [`insert`] asks for
/// the bump once its transaction commits (`db::after_commit`, gathered by
/// the consumers, the sweeper and the order service's `CreateOrder`); a
/// caller that commits outside `db::AfterCommit::gather` calls [`committed`].
///
/// An in-process wake-up rather than a `NOTIFY` trigger on the outbox (as
/// before, `migrations/runtime/0002_outbox_notify.sql`, dropped by
/// `1000003`): PostgreSQL serializes the commits of all transactions that
/// notify, cluster-wide, through their WAL flush (see `db::AfterCommit`).
/// Rows inserted by another process are published at the relay's next poll
/// ([`RelayConfig::poll_interval`]) or when something of its own wakes it.
static COMMITTED: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Wakes this process's relays: call it after committing a transaction that
/// inserted outbox rows outside `db::AfterCommit::gather`.
pub fn committed() {
    COMMITTED.send_modify(|n| *n = n.wrapping_add(1));
}

/// How soon a relay that found another one publishing tries again: the
/// other one may have selected its batch before our rows committed.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// Key of the advisory lock only one relay per database holds while it
/// publishes a batch: two relay instances then never publish the same key's
/// events out of order (row locks alone would let the second relay skip
/// ahead to a later event of a saga whose earlier event the first one holds).
pub const RELAY_LOCK_KEY: i64 = 0x5a6a_0001;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("Kafka error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the producer dropped a message before the broker acknowledged it")]
    Canceled,
}

/// [`insert`]'s statement (`cargo xtask bench` runs its very text in its pgbench bound).
pub const INSERT: &str = "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, headers) \
                          VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING";

/// The relay's marking of a batch as published, with where the broker put each row.
/// `published_at` is the marking's own time, after the acknowledgements (the relay's
/// transaction began before it selected the rows, so `now()` would precede the publish).
/// The relay runs it with `plan_cache_mode = force_custom_plan`: its prepared statement's
/// generic plan, chosen while the outbox was nearly empty, joined the ids by a sequential
/// scan of the whole outbox, and kept doing so as published rows piled up (1.6 ms a
/// marking at 9,000 rows in the order service's outbox, the costliest statement of a saga;
/// BENCHMARKS.md). Planned for the ids it is given, it looks them up in the primary key.
pub const MARK_PUBLISHED: &str = "UPDATE outbox o SET published_at = clock_timestamp(), published_partition = s.partition, \
                                  published_offset = s.at \
                                  FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS s(id, partition, at) \
                                  WHERE o.id = s.id";

/// Inserts `message` in the caller's transaction. Inserting the same event id
/// twice is a no-op, so a retried handler cannot publish twice. Once the
/// transaction commits, this process's relays wake (see [`COMMITTED`]).
pub async fn insert(conn: &mut PgConnection, message: &OutboxRecord) -> Result<(), sqlx::Error> {
    let headers: BTreeMap<&str, &str> = message.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let headers = serde_json::to_value(headers).unwrap_or_default();
    sqlx::query(INSERT)
        .bind(message.event_id)
        .bind(&message.topic)
        .bind(&message.partition_key)
        .bind(&message.event_type)
        .bind(&message.payload)
        .bind(headers)
        .execute(conn)
        .await?;
    crate::db::after_commit(committed);
    Ok(())
}

/// An event as its writer's outbox keeps it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Written {
    pub event_id: uuid::Uuid,
    pub partition_key: String,
    pub event_type: String,
    /// When the transaction that inserted it began.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When the relay marked it published, after the broker's acknowledgement.
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The events this database wrote with any of `keys` as their partition key
/// (`cargo xtask bench` splits a saga's latency into hops with them).
pub async fn written_with_keys(conn: &mut PgConnection, keys: &[String]) -> Result<Vec<Written>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, partition_key, event_type, created_at, published_at FROM outbox \
         WHERE partition_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(conn)
    .await
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Prepended to every topic name (test isolation; empty in production).
    pub topic_prefix: String,
    /// Rows per transaction.
    pub batch_size: i64,
    /// Safety-net poll: the wake-up itself is [`committed`], from the
    /// transactions of this process; rows another process inserts wait for it.
    pub poll_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { topic_prefix: String::new(), batch_size: 100, poll_interval: Duration::from_secs(2) }
    }
}

/// Publishes the outbox of one database.
pub struct Relay {
    /// Its connection between batches, outside the pool (see `Shelf`).
    shelf: crate::db::Shelf,
    producer: FutureProducer,
    /// To make a new producer when the one in hand is in a fatal state.
    brokers: String,
    linger_ms: u32,
    config: RelayConfig,
}

impl Relay {
    /// A relay publishing to `brokers` with an idempotent producer
    /// (`crate::kafka::producer`).
    pub fn new(pool: PgPool, brokers: &str, linger_ms: u32, config: RelayConfig) -> Result<Relay, OutboxError> {
        let producer = crate::kafka::producer(brokers, linger_ms)?;
        let shelf = crate::db::Shelf::new(&pool, crate::db::PoolName::Work);
        Ok(Relay { shelf, producer, brokers: brokers.to_owned(), linger_ms, config })
    }

    /// Runs until `shutdown`; the batch in flight is finished first. Reports
    /// to `health` whether it can publish.
    pub async fn run(mut self, shutdown: Shutdown, health: Health) {
        let probe = health.probe(Component::Relay);
        let mut woken = COMMITTED.subscribe();
        let mut backoff = Duration::from_millis(100);
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_requested() {
                break;
            }
            // Whatever committed before this point is in the batch below.
            woken.borrow_and_update();
            let mut wait = self.config.poll_interval;
            let published = {
                // In flight until it returns: a batch frozen on a lock reports no error.
                let _attempt = probe.attempt();
                self.publish().await
            };
            match published {
                Ok(Batch::Busy) => wait = BUSY_RETRY,
                Ok(Batch::Published(n)) => {
                    backoff = Duration::from_millis(100);
                    if let Some(since) = failing_since.take() {
                        tracing::info!(down_for = ?since.elapsed(), "outbox relay publishes again");
                        probe.working();
                    }
                    if n as i64 >= self.config.batch_size {
                        continue; // more is waiting
                    }
                }
                Err(error) => {
                    // Logged once per outage; health says how long it lasts.
                    if failing_since.is_none() {
                        tracing::warn!(%error, "outbox relay cannot publish; retrying until it can");
                        failing_since = Some(tokio::time::Instant::now());
                    }
                    probe.failing(&error);
                    self.renew_fatal_producer();
                    tokio::select! {
                        () = shutdown.wait() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    // Capped low: while the broker is away each try waits for
                    // its batch's delivery timeout anyway; once it is back the
                    // backlog should go out at once.
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
            tokio::select! {
                () = shutdown.wait() => break,
                // The sender is static: it never closes.
                _ = woken.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// An idempotent producer that hit a fatal error (e.g. a sequence gap
    /// the broker cannot accept) refuses every message from then on: make
    /// a new one. Rows are marked sent only after an acknowledgement, so
    /// nothing is lost; the inbox drops any duplicate.
    fn renew_fatal_producer(&mut self) {
        use rdkafka::producer::Producer;
        let Some((code, reason)) = self.producer.client().fatal_error() else { return };
        tracing::warn!(?code, %reason, "the relay's producer is in a fatal state; making a new one");
        match crate::kafka::producer(&self.brokers, self.linger_ms) {
            Ok(producer) => self.producer = producer,
            Err(error) => tracing::warn!(%error, "cannot make a new producer yet"),
        }
    }

    /// Publishes up to one batch; returns how many rows were marked sent
    /// (none when another relay of the database is publishing).
    /// `Err` when the broker did not acknowledge a row: the rows before it
    /// are marked sent all the same, the rest wait for the next try.
    pub async fn publish_batch(&self) -> Result<usize, OutboxError> {
        match self.publish().await? {
            Batch::Published(n) => Ok(n),
            Batch::Busy => Ok(0),
        }
    }

    async fn publish(&self) -> Result<Batch, OutboxError> {
        let mut conn = self.shelf.take().await?;
        let published = self.publish_on(&mut conn).await;
        // Every other way out of `publish_on` ends its transaction; after a
        // database error the connection may be broken or still in one: it is
        // closed, and the next batch takes a new one.
        if !matches!(published, Err(OutboxError::Db(_))) {
            conn.keep();
        }
        published
    }

    async fn publish_on(&self, conn: &mut PgConnection) -> Result<Batch, OutboxError> {
        use sqlx::Connection as _;
        let mut tx = conn.begin().await?;
        // The marking commits without waiting for its WAL flush: a crash can
        // lose only the marks, and rows published again are duplicates the
        // consumers' inbox drops. Publishing never waits on an fsync.
        // Its statements are planned for their parameters each time (see
        // [`MARK_PUBLISHED`]).
        let (_, _, locked): (String, String, bool) = sqlx::query_as(
            "SELECT set_config('synchronous_commit', 'off', true), \
             set_config('plan_cache_mode', 'force_custom_plan', true), pg_try_advisory_xact_lock($1)",
        )
        .bind(RELAY_LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            // Another relay is publishing; it may have selected its batch
            // before what woke us committed: try again shortly.
            tx.rollback().await?;
            return Ok(Batch::Busy);
        }
        // Rows behind a failed row of their saga key wait: a saga's events
        // are never published out of order.
        let rows = sqlx::query(
            "SELECT id, topic, partition_key, event_type, payload, headers, created_at FROM outbox o \
             WHERE published_at IS NULL AND failed_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox f \
               WHERE f.failed_at IS NOT NULL AND f.published_at IS NULL AND f.partition_key = o.partition_key) \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            // Ended here, not left open: it holds the advisory lock.
            tx.rollback().await?;
            return Ok(Batch::Published(0));
        }
        // Enqueue the whole batch in id order, then await acknowledgements in
        // the same order; the idempotent producer keeps per-partition order.
        let mut pending = Vec::with_capacity(rows.len());
        let mut refused_at_enqueue = None;
        // Topic and insert time of each row, for the metrics once it is published.
        let mut written = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let topic: String = row.try_get("topic")?;
            let created_at: chrono::DateTime<chrono::Utc> = row.try_get("created_at")?;
            written.insert(id, (topic.clone(), created_at));
            let key: String = row.try_get("partition_key")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let headers_json: serde_json::Value = row.try_get("headers")?;
            let topic = format!("{}{}", self.config.topic_prefix, topic);
            let mut headers = OwnedHeaders::new();
            if let serde_json::Value::Object(map) = &headers_json {
                for (k, v) in map {
                    if let Some(v) = v.as_str() {
                        headers = headers.insert(Header { key: k, value: Some(v) });
                    }
                }
            }
            let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push((id, delivery)),
                Err((error, _)) if never_publishable(&error) => {
                    refused_at_enqueue = Some(Stop::Refused(id, error));
                    break;
                }
                Err((error, _)) => {
                    // The producer's queue is full: publish what is enqueued,
                    // the rest next time.
                    tracing::debug!(%error, "producer queue refused a message; publishing the rest later");
                    break;
                }
            }
        }
        // Each published row, with the partition and offset the broker acknowledged it at.
        let mut sent = Vec::with_capacity(pending.len());
        let mut partitions = Vec::with_capacity(pending.len());
        let mut offsets = Vec::with_capacity(pending.len());
        let mut stopped = None;
        for (id, delivery) in pending {
            // Stop at the first failure: later rows are published again next
            // time (duplicates are dropped by the consumers' inbox), never
            // marked sent without an acknowledgement.
            let stop = match delivery.await {
                Ok(Ok(delivered)) => {
                    sent.push(id);
                    partitions.push(delivered.partition);
                    offsets.push(delivered.offset);
                    continue;
                }
                Ok(Err((error, _))) => Stop::Failed(OutboxError::Kafka(error)),
                Err(_) => Stop::Failed(OutboxError::Canceled),
            };
            stopped = Some(stop);
            break;
        }
        let stopped = stopped.or(refused_at_enqueue);
        sqlx::query(MARK_PUBLISHED).bind(&sent).bind(&partitions).bind(&offsets).execute(&mut *tx).await?;
        if let Some(Stop::Refused(id, error)) = &stopped {
            sqlx::query("UPDATE outbox SET failed_at = now(), failure = $2 WHERE id = $1")
                .bind(id)
                .bind(error.to_string())
                .execute(&mut *tx)
                .await?;
            tracing::error!(outbox_id = id, %error,
                "the broker can never accept this outbox row; marked failed, later events of its saga wait");
        }
        tx.commit().await?;
        if !sent.is_empty() {
            tracing::debug!(published = sent.len(), "outbox batch published");
        }
        let now = chrono::Utc::now();
        for (topic, created_at) in sent.iter().filter_map(|id| written.remove(id)) {
            metrics::counter!(OUTBOX_PUBLISHED, "topic" => topic).increment(1);
            let latency = (now - created_at).to_std().unwrap_or_default();
            metrics::histogram!(OUTBOX_PUBLISH_LATENCY).record(latency.as_secs_f64());
        }
        match stopped {
            Some(Stop::Failed(error)) => Err(error),
            Some(Stop::Refused(..)) => Ok(Batch::Published(sent.len() + 1)),
            None => Ok(Batch::Published(sent.len())),
        }
    }
}

/// What one try of the relay did.
enum Batch {
    /// Published (or marked failed) this many rows.
    Published(usize),
    /// Another relay of the database holds the publishing lock.
    Busy,
}

/// Why a batch stopped before its end.
enum Stop {
    /// The producer can never send this row (see [`never_publishable`]).
    Refused(i64, KafkaError),
    /// It may accept it later: the batch is tried again.
    Failed(OutboxError),
}

/// The producer's own refusal, when it is about this one message and no
/// retry can fix it: larger than any message the producer may send. (The
/// broker's refusals come for a whole batch of rows of several sagas, so
/// they do not say which row is at fault: they are retried, and the relay's
/// health shows them.)
fn never_publishable(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(error.rdkafka_error_code(), Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize))
}

/// An outbox row the relay marked failed: it can never be published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedRow {
    pub id: i64,
    pub event_id: uuid::Uuid,
    pub topic: String,
    pub partition_key: String,
    pub event_type: String,
    pub failed_at: chrono::DateTime<chrono::Utc>,
    pub failure: String,
    /// Later rows of the same saga key, waiting behind it.
    pub waiting: i64,
}

/// The rows of this database's outbox that are marked failed, oldest first.
pub async fn failed_rows(conn: &mut PgConnection) -> Result<Vec<FailedRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.id, f.event_id, f.topic, f.partition_key, f.event_type, f.failed_at, coalesce(f.failure, '') AS failure, \
           (SELECT count(*) FROM outbox w WHERE w.partition_key = f.partition_key AND w.published_at IS NULL \
              AND w.failed_at IS NULL) AS waiting \
         FROM outbox f WHERE f.failed_at IS NOT NULL AND f.published_at IS NULL ORDER BY f.id",
    )
    .fetch_all(conn)
    .await
}
/// How often the outbox backlog gauge is sampled.
const BACKLOG_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Keeps the outbox backlog gauge current until `shutdown`: rows neither published nor
/// failed (the partial index on unpublished rows answers it).
pub async fn report_backlog(pool: PgPool, shutdown: Shutdown) {
    loop {
        let backlog: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL AND failed_at IS NULL")
                .fetch_one(&pool)
                .await;
        if let Ok(rows) = backlog {
            metrics::gauge!(OUTBOX_BACKLOG).set(rows as f64);
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(BACKLOG_REPORT_EVERY) => {}
        }
    }
}
