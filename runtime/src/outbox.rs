//! Transactional outbox: events are inserted in the transaction of the state
//! change they announce; the relay publishes committed rows and marks them
//! sent only after the broker acknowledged them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_contract::OutboxRecord;
use sqlx::{PgConnection, PgPool, Row};

use saga_process::shutdown::Shutdown;

/// Channel the `outbox_notify` trigger notifies on every insert.
pub const NOTIFY_CHANNEL: &str = "saga_outbox";

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
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Inserts `message` in the caller's transaction. Inserting the same event id
/// twice is a no-op, so a retried handler cannot publish twice.
pub async fn insert(conn: &mut PgConnection, message: &OutboxRecord) -> Result<(), sqlx::Error> {
    let headers: BTreeMap<&str, &str> = message.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let headers = serde_json::to_value(headers).unwrap_or_default();
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, headers) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(message.event_id)
    .bind(&message.topic)
    .bind(&message.partition_key)
    .bind(&message.event_type)
    .bind(&message.payload)
    .bind(headers)
    .execute(conn)
    .await?;
    Ok(())
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Prepended to every topic name (test isolation; empty in production).
    pub topic_prefix: String,
    /// Rows per transaction.
    pub batch_size: i64,
    /// Safety-net poll when no notification arrives (a lost NOTIFY, a
    /// listener reconnect); the wake-up itself is LISTEN/NOTIFY.
    pub poll_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig { topic_prefix: String::new(), batch_size: 100, poll_interval: Duration::from_secs(2) }
    }
}

/// Publishes the outbox of one database.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    config: RelayConfig,
}

impl Relay {
    pub fn new(pool: PgPool, producer: FutureProducer, config: RelayConfig) -> Relay {
        Relay { pool, producer, config }
    }

    /// Runs until `shutdown`; the batch in flight is finished first.
    pub async fn run(self, shutdown: Shutdown) {
        let mut listener = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_requested() {
                break;
            }
            if listener.is_none() {
                listener = match self.listen().await {
                    Ok(l) => Some(l),
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay cannot LISTEN; polling until it can");
                        None
                    }
                };
            }
            match self.publish_batch().await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as i64 >= self.config.batch_size {
                        continue; // more is waiting
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "outbox relay batch failed; retrying");
                    tokio::select! {
                        () = shutdown.wait() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            let poll = self.config.poll_interval;
            match listener.as_mut() {
                Some(l) => tokio::select! {
                    () = shutdown.wait() => break,
                    n = l.recv() => if let Err(error) = n {
                        tracing::warn!(%error, "outbox listener lost; reconnecting");
                        listener = None;
                    },
                    () = tokio::time::sleep(poll) => {}
                },
                None => tokio::select! {
                    () = shutdown.wait() => break,
                    () = tokio::time::sleep(poll) => {}
                },
            }
        }
        tracing::info!("outbox relay stopped");
    }

    async fn listen(&self) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(listener)
    }

    /// Publishes up to one batch; returns how many rows were marked sent.
    pub async fn publish_batch(&self) -> Result<usize, OutboxError> {
        let mut tx = self.pool.begin().await?;
        // The marking commits without waiting for its WAL flush: a crash can
        // lose only the marks, and rows published again are duplicates the
        // consumers' inbox drops. Publishing never waits on an fsync.
        let (_, locked): (String, bool) =
            sqlx::query_as("SELECT set_config('synchronous_commit', 'off', true), pg_try_advisory_xact_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut *tx)
                .await?;
        if !locked {
            // Another relay is publishing; it will also take what woke us.
            return Ok(0);
        }
        let rows = sqlx::query(
            "SELECT id, topic, partition_key, event_type, payload, headers FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Enqueue the whole batch in id order, then await acknowledgements in
        // the same order; the idempotent producer keeps per-partition order.
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let topic: String = row.try_get("topic")?;
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
                Err((error, _)) => {
                    tracing::warn!(%error, "producer queue refused a message; publishing the rest later");
                    break;
                }
            }
        }
        let mut sent = Vec::with_capacity(pending.len());
        for (id, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => sent.push(id),
                Ok(Err((error, _))) => {
                    // Stop at the first failure: later rows are published again
                    // next time (duplicates are dropped by the consumers' inbox),
                    // never marked sent without an acknowledgement.
                    tracing::warn!(%error, outbox_id = id, "broker did not acknowledge; will retry");
                    break;
                }
                Err(_) => break,
            }
        }
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)").bind(&sent).execute(&mut *tx).await?;
        tx.commit().await?;
        if !sent.is_empty() {
            tracing::debug!(published = sent.len(), "outbox batch published");
        }
        Ok(sent.len())
    }
}
