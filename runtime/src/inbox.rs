//! Inbox: the ids of events already handled, written in the handler's
//! transaction so a redelivered event changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Where a message came from, and when, for the inbox row.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The message's Kafka timestamp (its producer's `CreateTime`).
    pub produced_at: Option<DateTime<Utc>>,
    /// When the consumer received it. With `produced_at`, the row's
    /// `processed_at` (its transaction's start) and the transaction's commit
    /// time, it splits a delivery into the hops `cargo xtask bench` reports.
    pub received_at: Option<DateTime<Utc>>,
}

/// [`claim`]'s statement (`cargo xtask bench` runs its very text in its pgbench bound).
pub const CLAIM: &str = "INSERT INTO inbox (event_id, event_type, topic, partition, \"offset\", produced_at, received_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING";

/// Records `event_id` as handled in the caller's transaction. `false` when it
/// was handled before: the caller must roll back and skip it. A concurrent
/// delivery of the same event waits on the primary key until the first
/// transaction ends, so exactly one of them handles it.
pub async fn claim(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
    source: Source<'_>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(CLAIM)
        .bind(event_id)
        .bind(event_type)
        .bind(source.topic)
        .bind(source.partition)
        .bind(source.offset)
        .bind(source.produced_at)
        .bind(source.received_at)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// One consumer's handling of an event, as its inbox row and PostgreSQL keep it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Delivery {
    pub event_id: Uuid,
    /// The handling transaction (the row's `xmin`: inbox rows are never updated).
    pub xid: i64,
    /// When that transaction committed (`None` unless the server keeps commit times).
    pub committed_at: Option<DateTime<Utc>>,
    pub produced_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    /// When that transaction began.
    pub processed_at: DateTime<Utc>,
}

/// How this database's consumer handled each of `event_ids` it handled
/// (`cargo xtask bench` splits a saga's latency into hops with them).
pub async fn deliveries(conn: &mut PgConnection, event_ids: &[Uuid]) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, xmin::text::bigint AS xid, pg_xact_commit_timestamp(xmin) AS committed_at, produced_at, \
         received_at, processed_at FROM inbox WHERE event_id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_all(conn)
    .await
}
