//! The order service's tables (`migrations/order/`: `orders`, `order_items`,
//! `order_status_history`, `parked_events`) and the only code that knows
//! their SQL. The order service writes and reads orders through it, the
//! operator crate reads a saga's history and the overview through it, and
//! the benchmark and the chaos suite count orders through it and run the
//! very statements of a saga ([`sql`]).
//!
//! Every query is checked against the schema at compile time
//! (`sqlx::query!` and friends). Builds are offline: the checked
//! descriptions are committed in `.sqlx/` beside this file and
//! `.cargo/config.toml` sets `SQLX_OFFLINE`, so no build needs a database.
//! `docs/development.md` says how to regenerate them after a change of a
//! query or of the order migrations; the `order_store_offline` test fails
//! while they are stale.
//!
//! The order as a client sees it is built here only ([`OrderColumns`],
//! [`status_change`]): for `GetOrder`/`ListOrders`/`CreateOrder` and for the
//! change feed alike.

use chrono::{DateTime, Utc};
use saga_proto::order::{Order, OrderChanged, OrderItem, StatusChange};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Where the checked descriptions of this crate's queries are committed
/// (`query-<hash>.json`, one per query, written by `cargo sqlx prepare`).
pub const OFFLINE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.sqlx");

/// This crate's source and statement files, as text: every committed
/// description must be of a query written here (each inline query is a raw
/// string, so its text is the query's).
pub const SOURCES: &[&str] = &[
    include_str!("lib.rs"),
    sql::EXISTING,
    sql::INSERT_ORDER,
    sql::ORDER,
    sql::LOCK,
    sql::TRANSITION,
    sql::PARKED,
    sql::PARK,
    sql::UNPARK,
    sql::OVERDUE,
];

/// The text of the statements a saga commits in the order database, as the
/// service sends them: the benchmark's pgbench bound runs these same texts.
pub mod sql {
    /// The order an idempotency key already created (`$1` user, `$2` key).
    pub const EXISTING: &str = include_str!("../queries/existing.sql");
    /// A new order's row with its items (`$7` products, `$8` quantities, line by line).
    pub const INSERT_ORDER: &str = include_str!("../queries/insert_order.sql");
    /// The order as a client sees it, with items and history.
    pub const ORDER: &str = include_str!("../queries/order.sql");
    /// Locks a saga and reads its status.
    pub const LOCK: &str = include_str!("../queries/lock.sql");
    /// A transition: the order's row and its history row, in one statement.
    pub const TRANSITION: &str = include_str!("../queries/transition.sql");
    /// The saga's parked events.
    pub const PARKED: &str = include_str!("../queries/parked.sql");
    /// Parks an event.
    pub const PARK: &str = include_str!("../queries/park.sql");
    /// Removes a parked event once applied.
    pub const UNPARK: &str = include_str!("../queries/unpark.sql");
    /// The most overdue saga.
    pub const OVERDUE: &str = include_str!("../queries/overdue.sql");
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("order {0}: its history cannot be read: {1}")]
    History(Uuid, serde_json::Error),
}

/// The columns of `orders` a client sees: what an [`Order`] holds besides
/// its items and history. Every query that shows an order selects them all
/// (the macros refuse one that misses a field), so a new visible column is
/// added here, in those queries and in the proto's `Order`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderColumns {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub total_minor: Option<i64>,
    pub failure_reason: Option<String>,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderColumns {
    /// The order as a client sees it: these columns with `items` and `history`.
    pub fn into_order(self, items: Vec<OrderItem>, history: Vec<StatusChange>) -> Order {
        Order {
            order_id: self.order_id.to_string(),
            user_id: self.user_id.to_string(),
            status: self.status,
            items,
            total_minor: self.total_minor,
            failure_reason: self.failure_reason.unwrap_or_default(),
            idempotency_key: self.idempotency_key,
            created_at: timestamp(self.created_at),
            updated_at: timestamp(self.updated_at),
            history,
        }
    }
}

/// A row of `order_status_history` as a client sees it.
pub fn status_change(
    from_status: Option<String>,
    to_status: String,
    event_id: Uuid,
    event_type: String,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> StatusChange {
    StatusChange {
        from_status: from_status.unwrap_or_default(),
        to_status,
        event_id: event_id.to_string(),
        event_type,
        reason: reason.unwrap_or_default(),
        at: timestamp(at),
    }
}

/// RFC 3339 in UTC, to the microsecond (what PostgreSQL keeps).
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What [`sql::ORDER`] and the list return: an order's columns, items and history.
struct OrderRow {
    order_id: Uuid,
    user_id: Uuid,
    status: String,
    total_minor: Option<i64>,
    failure_reason: Option<String>,
    idempotency_key: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// Items in line order, as two parallel arrays.
    item_products: Vec<Uuid>,
    item_quantities: Vec<i32>,
    /// JSON array of [`HistoryJson`], oldest first; `None` in lists.
    history: Option<String>,
}

/// A row of `order_status_history` as [`sql::ORDER`] aggregates it.
#[derive(serde::Deserialize)]
struct HistoryJson {
    from_status: Option<String>,
    to_status: String,
    event_id: Uuid,
    event_type: String,
    reason: Option<String>,
    at: DateTime<Utc>,
}

impl OrderRow {
    fn into_order(self) -> Result<Order, ReadError> {
        let history: Vec<HistoryJson> = match &self.history {
            Some(json) => serde_json::from_str(json).map_err(|e| ReadError::History(self.order_id, e))?,
            None => Vec::new(),
        };
        let items = self
            .item_products
            .iter()
            .zip(&self.item_quantities)
            .map(|(p, &quantity)| OrderItem { product_id: p.to_string(), quantity })
            .collect();
        let history = history
            .into_iter()
            .map(|h| status_change(h.from_status, h.to_status, h.event_id, h.event_type, h.reason, h.at))
            .collect();
        let columns = OrderColumns {
            order_id: self.order_id,
            user_id: self.user_id,
            status: self.status,
            total_minor: self.total_minor,
            failure_reason: self.failure_reason,
            idempotency_key: self.idempotency_key,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        Ok(columns.into_order(items, history))
    }
}

/// The order with its items and full history (one round trip).
pub async fn order(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Order>, ReadError> {
    let row = sqlx::query_file_as!(OrderRow, "queries/order.sql", order_id).fetch_optional(conn).await?;
    row.map(OrderRow::into_order).transpose()
}

/// A page of a user's orders, newest first (ids are UUIDv7, so keyset paging
/// on the id is stable under inserts): up to `limit` orders with ids below
/// `before`, without their history.
pub async fn orders_of_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    before: Uuid,
    limit: i64,
) -> Result<Vec<Order>, ReadError> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"SELECT o.order_id, o.user_id, o.status, o.total_minor, o.failure_reason, o.idempotency_key,
                  o.created_at, o.updated_at,
                  ARRAY(SELECT i.product_id FROM order_items i WHERE i.order_id = o.order_id ORDER BY i.line_no)
                    AS "item_products!",
                  ARRAY(SELECT i.quantity FROM order_items i WHERE i.order_id = o.order_id ORDER BY i.line_no)
                    AS "item_quantities!",
                  NULL::text AS "history?"
           FROM orders o WHERE o.user_id = $1 AND o.order_id < $2 ORDER BY o.order_id DESC LIMIT $3"#,
        user_id,
        before,
        limit
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(OrderRow::into_order).collect()
}

/// The order (id and request fingerprint) an idempotency key of `user_id` already created.
pub async fn existing(
    conn: &mut PgConnection,
    user_id: Uuid,
    idempotency_key: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let row = sqlx::query_file!("queries/existing.sql", user_id, idempotency_key).fetch_optional(conn).await?;
    Ok(row.map(|r| (r.order_id, r.request_hash)))
}

/// A new order's own rows, in the caller's transaction: the order (its
/// status, deadline and first history row come with its first transition)
/// and its items in line order.
pub struct NewOrder<'a> {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub status: &'a str,
    pub idempotency_key: &'a str,
    /// Canonical text of (user, items), to recognise a reused key.
    pub request_hash: &'a str,
    pub traceparent: &'a str,
    /// (product, quantity) per line.
    pub items: &'a [(Uuid, i32)],
}

pub async fn insert_order(conn: &mut PgConnection, order: &NewOrder<'_>) -> Result<(), sqlx::Error> {
    // The order and its items in one statement, one round trip.
    let (products, quantities): (Vec<Uuid>, Vec<i32>) = order.items.iter().copied().unzip();
    sqlx::query_file!(
        "queries/insert_order.sql",
        order.order_id,
        order.user_id,
        order.status,
        order.idempotency_key,
        order.request_hash,
        order.traceparent,
        &products,
        &quantities
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Locks the saga's row for the caller's transaction and reads its status.
pub async fn lock_status(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_file_scalar!("queries/lock.sql", order_id).fetch_optional(conn).await
}

/// One change of status, as the store writes it.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub order_id: Uuid,
    /// `None` for the first transition.
    pub from: Option<&'a str>,
    pub to: &'a str,
    /// When the saga times out of `to`; `None` for a terminal status.
    pub deadline: Option<DateTime<Utc>>,
    /// The total the event priced; the order keeps its own when `None`.
    pub total_minor: Option<i64>,
    /// Why the order failed; the order keeps its own when `None`.
    pub failure_reason: Option<&'a str>,
    pub event_id: Uuid,
    pub event_type: &'a str,
    /// The history row's reason.
    pub reason: Option<&'a str>,
}

/// What writing a transition gives back.
#[derive(Debug, Clone)]
pub struct Written {
    /// Seconds the order stayed in its old status, and since it was created.
    pub in_from_seconds: f64,
    pub since_created_seconds: f64,
    /// The change as the feed sends it: the history row, its position and
    /// the order as the transition left it.
    pub change: OrderChanged,
}

/// Writes a transition in the caller's transaction: the order's status,
/// deadline and the columns it keeps from the event, then its history row.
/// `None` when there is no such order.
pub async fn write_transition(conn: &mut PgConnection, t: &Transition<'_>) -> Result<Option<Written>, sqlx::Error> {
    // One statement, one round trip: the order's row, then its history row
    // from what the update returned (none when there is no such order). The
    // old row's times come back for the metrics (how long the order stayed
    // in `from`, and since its creation), the new row's columns for the
    // change feed. The history row's position counts the rows before it:
    // they are all visible here, since the order's row is locked (or was
    // inserted) by this transaction and every transition takes that lock
    // first; the statement's own row is not (one snapshot for the whole
    // statement), hence the `+ 1`.
    let written = sqlx::query_file!(
        "queries/transition.sql",
        t.order_id,
        t.from,
        t.to,
        t.deadline,
        t.total_minor,
        t.failure_reason,
        t.event_id,
        t.event_type,
        t.reason
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(written.map(|w| {
        let order = OrderColumns {
            order_id: w.order_id,
            user_id: w.user_id,
            status: w.status,
            total_minor: w.total_minor,
            failure_reason: w.failure_reason,
            idempotency_key: w.idempotency_key,
            created_at: w.created_at,
            updated_at: w.updated_at,
        };
        let history_row = status_change(
            t.from.map(str::to_owned),
            t.to.to_owned(),
            t.event_id,
            t.event_type.to_owned(),
            t.reason.map(str::to_owned),
            w.at,
        );
        let position = u32::try_from(w.position).unwrap_or(u32::MAX);
        Written {
            in_from_seconds: w.in_from_seconds,
            since_created_seconds: w.since_created_seconds,
            change: OrderChanged::after(order.into_order(Vec::new(), Vec::new()), history_row, position),
        }
    }))
}

/// An event kept until a status accepts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    pub event_id: Uuid,
    pub event_type: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Parks an event for the saga (again: a no-op).
pub async fn park(conn: &mut PgConnection, order_id: Uuid, event: &Parked) -> Result<(), sqlx::Error> {
    sqlx::query_file!("queries/park.sql", event.event_id, order_id, event.event_type, event.topic, event.payload)
        .execute(conn)
        .await?;
    Ok(())
}

/// The saga's parked events, oldest first.
pub async fn parked(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<Parked>, sqlx::Error> {
    let rows = sqlx::query_file!("queries/parked.sql", order_id).fetch_all(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| Parked { event_id: r.event_id, event_type: r.event_type, topic: r.topic, payload: r.payload })
        .collect())
}

pub async fn unpark(conn: &mut PgConnection, event_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query_file!("queries/unpark.sql", event_id).execute(conn).await?;
    Ok(())
}

/// A saga past its deadline: id, status, the trace it started with.
#[derive(Debug, Clone, PartialEq)]
pub struct Overdue {
    pub order_id: Uuid,
    pub status: String,
    pub traceparent: Option<String>,
}

/// The most overdue saga in one of `statuses` whose deadline is at or before
/// `as_of` and whose id is not in `skip`, locked; a saga whose row another
/// transaction holds (an event being applied) is skipped.
pub async fn next_overdue(
    conn: &mut PgConnection,
    statuses: &[String],
    skip: &[Uuid],
    as_of: DateTime<Utc>,
) -> Result<Option<Overdue>, sqlx::Error> {
    let row = sqlx::query_file!("queries/overdue.sql", statuses, skip, as_of).fetch_optional(conn).await?;
    Ok(row.map(|r| Overdue { order_id: r.order_id, status: r.status, traceparent: r.traceparent }))
}

/// Moves every order in status `from` to `to` with a history row
/// (`status.migration`) and the new deadline; how many moved.
pub async fn migrate_status(
    conn: &mut PgConnection,
    from: &str,
    to: &str,
    deadline: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    let moved = sqlx::query!(
        r#"WITH moved AS (UPDATE orders SET status = $2, updated_at = now(), deadline_at = $3
             WHERE status = $1 RETURNING order_id)
           INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason)
           SELECT order_id, $1, $2, gen_random_uuid(), 'status.migration', 'the spec removed the state' FROM moved"#,
        from,
        to,
        deadline
    )
    .execute(conn)
    .await?;
    Ok(moved.rows_affected())
}

/// Sagas running (with a deadline), and of them how many have spent more
/// than `share` (0..=1) of the time between entering their status and its
/// deadline by `as_of`.
pub async fn backlog<'e>(
    conn: impl PgExecutor<'e>,
    share: f64,
    as_of: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "running!", count(*) FILTER (WHERE $2 > updated_at + (deadline_at - updated_at) * $1) AS "at_risk!"
           FROM orders WHERE deadline_at IS NOT NULL"#,
        share,
        as_of
    )
    .fetch_one(conn)
    .await?;
    Ok((row.running, row.at_risk))
}

/// A saga as an operator's trace shows it: status, deadline, trace context.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaState {
    pub status: String,
    pub deadline_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
}

pub async fn saga_state<'e>(conn: impl PgExecutor<'e>, order_id: Uuid) -> Result<Option<SagaState>, sqlx::Error> {
    sqlx::query_as!(SagaState, "SELECT status, deadline_at, traceparent FROM orders WHERE order_id = $1", order_id)
        .fetch_optional(conn)
        .await
}

/// A row of the status history, for operators.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub from_status: Option<String>,
    pub to_status: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub at: DateTime<Utc>,
}

/// The saga's status history, oldest first.
pub async fn history<'e>(conn: impl PgExecutor<'e>, order_id: Uuid) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as!(
        HistoryEntry,
        "SELECT from_status, to_status, event_id, event_type, at FROM order_status_history WHERE order_id = $1 ORDER BY id",
        order_id
    )
    .fetch_all(conn)
    .await
}

/// An order's beginning and end as its transactions wrote them, for the
/// benchmark's hops (`tools/src/bench/hops.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub order_id: Uuid,
    /// When `CreateOrder`'s transaction began.
    pub created_at: DateTime<Utc>,
    /// When it committed (`None` unless the server keeps commit times, `track_commit_timestamp`).
    pub created_committed: Option<DateTime<Utc>>,
    /// The last history row's `at`, and the transaction that wrote it.
    pub ended_at: DateTime<Utc>,
    pub ended_xid: i64,
}

/// The [`Timeline`] of each of `order_ids` that has a history.
pub async fn timelines<'e>(conn: impl PgExecutor<'e>, order_ids: &[Uuid]) -> Result<Vec<Timeline>, sqlx::Error> {
    sqlx::query_as!(
        Timeline,
        r#"SELECT o.order_id, o.created_at, pg_xact_commit_timestamp(f.xmin) AS created_committed,
                  l.at AS ended_at, l.xmin::text::bigint AS "ended_xid!"
           FROM orders o
           JOIN LATERAL (SELECT xmin FROM order_status_history h WHERE h.order_id = o.order_id ORDER BY id LIMIT 1) f ON true
           JOIN LATERAL (SELECT at, xmin FROM order_status_history h WHERE h.order_id = o.order_id ORDER BY id DESC LIMIT 1) l ON true
           WHERE o.order_id = ANY($1)"#,
        order_ids
    )
    .fetch_all(conn)
    .await
}

/// The saga's parked events as an operator sees them: id, type, when parked.
pub async fn parked_summary<'e>(
    conn: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Vec<(Uuid, String, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT event_id, event_type, parked_at FROM parked_events WHERE order_id = $1", order_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.event_id, r.event_type, r.parked_at)).collect())
}

/// How many orders are in each status (statuses with none are left out).
pub async fn count_by_status<'e>(conn: impl PgExecutor<'e>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows =
        sqlx::query!(r#"SELECT status, count(*) AS "count!" FROM orders GROUP BY status"#).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Orders not in one of `statuses` (the terminal ones: how many are in flight).
pub async fn count_not_in<'e>(conn: impl PgExecutor<'e>, statuses: &[String]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM orders WHERE status <> ALL($1)"#, statuses)
        .fetch_one(conn)
        .await
}

/// How many orders are in `status`, and the sum of their totals.
pub async fn count_and_total<'e>(conn: impl PgExecutor<'e>, status: &str) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!", coalesce(sum(total_minor), 0)::bigint AS "total!" FROM orders WHERE status = $1"#,
        status
    )
    .fetch_one(conn)
    .await?;
    Ok((row.count, row.total))
}

/// Idempotency keys (per customer) that hold more than one order: 0 unless
/// the key's uniqueness was lost.
pub async fn duplicate_keys<'e>(conn: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (SELECT 1 FROM orders GROUP BY user_id, idempotency_key HAVING count(*) > 1) d"#
    )
    .fetch_one(conn)
    .await
}

/// Per minute of the last `minutes`, how many sagas entered each of
/// `statuses` (minute, status, count), oldest first.
pub async fn entered_per_minute<'e>(
    conn: impl PgExecutor<'e>,
    minutes: i32,
    statuses: &[String],
) -> Result<Vec<(DateTime<Utc>, String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT date_trunc('minute', at) AS "minute!", to_status, count(*) AS "count!" FROM order_status_history
           WHERE at > now() - make_interval(mins => $1) AND to_status = ANY($2) GROUP BY 1, 2 ORDER BY 1"#,
        minutes,
        statuses
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.minute, r.to_status, r.count)).collect())
}

/// Of the sagas that entered one of `statuses` in the last `minutes`: how
/// many, and the median and 99th percentile of the milliseconds from order
/// to that status (`None` when there were none).
pub async fn durations_ms<'e>(
    conn: impl PgExecutor<'e>,
    minutes: i32,
    statuses: &[String],
) -> Result<(i64, Option<f64>, Option<f64>), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "sagas!",
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
           FROM (SELECT extract(epoch FROM h.at - o.created_at)::float8 * 1000 AS ms
                 FROM order_status_history h JOIN orders o USING (order_id)
                 WHERE h.at > now() - make_interval(mins => $1) AND h.to_status = ANY($2)) d"#,
        minutes,
        statuses
    )
    .fetch_one(conn)
    .await?;
    Ok((row.sagas, row.p50, row.p99))
}
