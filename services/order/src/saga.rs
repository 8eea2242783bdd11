//! What is specific to orders in the saga. The generated status-owner code
//! (`saga_generated::owner`) runs the entry command, every inbound event and
//! every timeout through the status machine, parks replies that overtook the
//! one before them and writes a history row per transition; this file is its
//! store (the SQL of orders, their history and parked events), the columns an
//! order keeps from the events (total, failure reason) and its replies.

use chrono::{DateTime, Utc};
use saga_contract::{OutboxRecord, ParkedEvent};
use saga_generated::commands::{CreateOrder, OrderCommands};
use saga_generated::handlers::{
    OrderHandler, OrderInbound, OrderOnPaymentCompleted, OrderOnPaymentFail, OrderOnPaymentRefunded,
    OrderOnStockReductionFail, OrderOnStockReductionSuccess, OrderOnStockReleased, OrderTimeoutReply,
};
use saga_generated::owner::{OrderCause, OrderOverdue, OrderStep, OrderStore, OrderTransition};
use saga_generated::status::StatusMigration;
use saga_generated::types::CancelReason;
use saga_generated::{
    Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderStatus, PaymentCompleted, PaymentFail,
    PaymentRefunded, StockReductionFail, StockReductionSuccess, StockReleased, TraceContext,
};
use saga_proto::order::{OrderChanged, StatusChange};
use saga_runtime::grpc::timestamp;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("order {0} has a status the spec does not know: {1}")]
    BadStatus(Uuid, String),
}

/// An outage of the database is waited out; a status the spec does not know
/// is a permanent verdict on the event (someone wrote the row by hand, or a
/// state was removed from the spec without a migration).
impl saga_contract::Classify for OrderError {
    fn class(&self) -> saga_contract::FailureClass {
        match self {
            OrderError::Db(e) => saga_runtime::db::class_of(e),
            OrderError::BadStatus(..) => saga_contract::FailureClass::Permanent,
        }
    }
}

/// The spec's timeouts, scaled (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub scale_percent: u32,
}

impl Timeouts {
    /// How long a saga may stay in `status`: the spec's timeout, scaled; `None` for terminal states.
    pub fn after(&self, status: OrderStatus) -> Option<std::time::Duration> {
        let after = status.timeout()?.after;
        Some(after.saturating_mul(self.scale_percent) / 100)
    }
}

/// Applies the spec's status migrations (`status.migrations`: a state an
/// earlier spec had, and where its orders go) in one transaction: every order
/// still in a removed state moves to its new state, with a history row
/// (`event_type` `status.migration`) and the new state's deadline. Returns
/// how many orders moved; run at start, before anything is consumed, so no
/// handler ever reads a state the spec does not know. The moves are not told
/// to the change feed: they commit before this instance serves `WatchOrders`,
/// and every call starts with a `resync` (its followers read the order).
pub async fn migrate_statuses(
    pool: sqlx::PgPool,
    timeouts: Timeouts,
    migrations: &[StatusMigration],
) -> Result<u64, sqlx::Error> {
    if migrations.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    // Once, at start, over every order in a removed state: not bound by a request's timeouts.
    saga_runtime::db::lift_timeouts(&mut tx).await?;
    let mut moved = 0;
    for migration in migrations {
        let deadline = timeouts.after(migration.to).map(|after| chrono::Utc::now() + after);
        let rows = sqlx::query(
            "WITH moved AS (UPDATE orders SET status = $2, updated_at = now(), deadline_at = $3 \
               WHERE status = $1 RETURNING order_id) \
             INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason) \
             SELECT order_id, $1, $2, gen_random_uuid(), 'status.migration', 'the spec removed the state' FROM moved",
        )
        .bind(migration.from)
        .bind(migration.to.as_str())
        .bind(deadline)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if rows > 0 {
            tracing::info!(from = migration.from, to = %migration.to, orders = rows, "status migration applied");
        }
        moved += rows;
    }
    tx.commit().await?;
    Ok(moved)
}

#[derive(Debug, Clone)]
pub struct OrderSaga {
    pub timeouts: Timeouts,
    /// Where each committed status change goes (`WatchOrders`).
    pub feed: crate::feed::Feed,
}

impl OrderSaga {
    /// The saga with a feed of its own (nobody watches it until `WatchOrders` is served).
    pub fn new(timeouts: Timeouts) -> OrderSaga {
        OrderSaga { timeouts, feed: crate::feed::Feed::default() }
    }
}

fn parse_status(order_id: Uuid, status: String) -> Result<OrderStatus, OrderError> {
    status.parse().map_err(|_| OrderError::BadStatus(order_id, status))
}

/// What an order keeps from the event behind a transition: the total the
/// product service priced, and why the order failed.
/// The metrics of a change of status (recorded when written: a transaction that then rolls
/// back is counted too, which happens only in an outage).
fn record_step(from: OrderStatus, to: OrderStatus, in_from_seconds: f64, since_created_seconds: f64) {
    use saga_process::metrics::{SAGA_DURATION, SAGA_OUTCOMES, SAGA_STEP_DURATION};
    metrics::histogram!(SAGA_STEP_DURATION, "from" => from.as_str(), "to" => to.as_str()).record(in_from_seconds);
    if to.is_terminal() {
        metrics::counter!(SAGA_OUTCOMES, "status" => to.as_str()).increment(1);
        metrics::histogram!(SAGA_DURATION, "status" => to.as_str()).record(since_created_seconds);
    }
}

/// What a transition's `UPDATE` of the order returns: seconds it stayed in
/// its old status and since its creation, then its total, failure reason and
/// update time.
type Updated = (f64, f64, Option<i64>, Option<String>, DateTime<Utc>);

fn kept_from(cause: OrderCause<'_>) -> (Option<i64>, Option<&'static str>) {
    match cause {
        OrderCause::Event(OrderInbound::StockReductionSuccess(e)) => (Some(e.payload.amount.minor()), None),
        OrderCause::Event(OrderInbound::StockReductionFail(e)) => (None, Some(e.payload.reason.as_str())),
        OrderCause::Event(OrderInbound::PaymentFail(e)) => (None, Some(e.payload.reason.as_str())),
        OrderCause::Timeout => (None, Some(CancelReason::TimedOut.as_str())),
        OrderCause::Started | OrderCause::Seeded | OrderCause::Event(_) => (None, None),
    }
}

impl OrderStore for OrderSaga {
    type Ctx = PgConnection;
    type Error = OrderError;

    async fn load_for_update(
        &self,
        conn: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<Option<OrderStatus>, OrderError> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
        status.map(|s| parse_status(order_id, s)).transpose()
    }

    fn timeout(&self, status: OrderStatus) -> Option<std::time::Duration> {
        self.timeouts.after(status)
    }

    async fn write_transition(&self, conn: &mut PgConnection, t: &OrderTransition<'_>) -> Result<(), OrderError> {
        let (total_minor, reason) = kept_from(t.cause);
        let failure = if t.to.is_terminal() && t.to != OrderStatus::Completed { reason } else { None };
        // The old row's times come back for the metrics (how long the order
        // stayed in `from`, and since its creation), the new row's columns
        // for the change feed.
        let updated: Option<Updated> = sqlx::query_as(
            "UPDATE orders o SET status = $2, updated_at = now(), deadline_at = $3, \
             total_minor = coalesce($4, o.total_minor), failure_reason = coalesce($5, o.failure_reason) \
             FROM (SELECT updated_at, created_at FROM orders WHERE order_id = $1) old \
             WHERE o.order_id = $1 \
             RETURNING extract(epoch FROM now() - old.updated_at)::float8, extract(epoch FROM now() - old.created_at)::float8, \
               o.total_minor, o.failure_reason, o.updated_at",
        )
        .bind(t.order_id)
        .bind(t.to.as_str())
        .bind(t.deadline)
        .bind(total_minor)
        .bind(failure)
        .fetch_optional(&mut *conn)
        .await?;
        if let (Some(from), Some((in_from, since_created, ..))) = (t.from, &updated) {
            record_step(from, t.to, *in_from, *since_created);
        }
        // The row's position in the order's history: the rows before it are
        // all visible here, since the order's row is locked (or was inserted)
        // by this transaction and every transition takes that lock first.
        let (at, position): (DateTime<Utc>, i64) = sqlx::query_as(
            "INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING at, (SELECT count(*) FROM order_status_history h WHERE h.order_id = $1) + 1",
        )
        .bind(t.order_id)
        .bind(t.from.map(OrderStatus::as_str))
        .bind(t.to.as_str())
        .bind(t.event_id)
        .bind(t.event_type)
        .bind(reason)
        .fetch_one(&mut *conn)
        .await?;
        tracing::info!(from = t.from.map(OrderStatus::as_str), to = %t.to, event_type = t.event_type, "order status changed");
        if let Some((_, _, total_minor, failure_reason, updated_at)) = updated {
            let row = StatusChange {
                from_status: t.from.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                to_status: t.to.as_str().to_owned(),
                event_id: t.event_id.to_string(),
                event_type: t.event_type.to_owned(),
                reason: reason.unwrap_or_default().to_owned(),
                at: timestamp(at),
            };
            let change = OrderChanged {
                order_id: t.order_id.to_string(),
                status: row.to_status.clone(),
                resync: false,
                row: Some(row),
                position: u32::try_from(position).unwrap_or(u32::MAX),
                total_minor,
                failure_reason: failure_reason.unwrap_or_default(),
                updated_at: timestamp(updated_at),
            };
            let feed = self.feed.clone();
            // Outside a gathered transaction (a test driving the store) nobody
            // would know when to send it: it is not sent.
            saga_runtime::db::after_commit(move || feed.publish(change));
        }
        Ok(())
    }

    async fn park(&self, conn: &mut PgConnection, order_id: Uuid, event: &ParkedEvent) -> Result<(), OrderError> {
        sqlx::query(
            "INSERT INTO parked_events (event_id, order_id, event_type, topic, payload) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.event_id)
        .bind(order_id)
        .bind(&event.event_type)
        .bind(&event.topic)
        .bind(&event.payload)
        .execute(&mut *conn)
        .await?;
        tracing::info!(event_type = event.event_type, "event arrived before the status it needs; parked");
        Ok(())
    }

    async fn parked(&self, conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<ParkedEvent>, OrderError> {
        let rows: Vec<(Uuid, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT event_id, event_type, topic, payload FROM parked_events WHERE order_id = $1 ORDER BY parked_at",
        )
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(event_id, event_type, topic, payload)| ParkedEvent { event_id, event_type, topic, payload })
            .collect())
    }

    async fn unpark(&self, conn: &mut PgConnection, event_id: Uuid) -> Result<(), OrderError> {
        sqlx::query("DELETE FROM parked_events WHERE event_id = $1").bind(event_id).execute(&mut *conn).await?;
        tracing::info!(%event_id, "parked event applied");
        Ok(())
    }

    async fn publish(&self, conn: &mut PgConnection, record: OutboxRecord) -> Result<(), OrderError> {
        Ok(saga_runtime::outbox::insert(conn, &record).await?)
    }

    async fn next_overdue(
        &self,
        conn: &mut PgConnection,
        statuses: &[OrderStatus],
        as_of: std::time::SystemTime,
        skip: &[Uuid],
    ) -> Result<Option<OrderOverdue>, OrderError> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        // SKIP LOCKED: a saga whose event is being applied right now is left
        // alone; if that event ends it, its deadline is gone by the next sweep.
        let row: Option<(Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT order_id, status, traceparent FROM orders \
             WHERE deadline_at <= $3 AND status = ANY($1) AND order_id <> ALL($2) \
             ORDER BY deadline_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(&statuses)
        .bind(skip)
        .bind(chrono::DateTime::<chrono::Utc>::from(as_of))
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|(order_id, status, traceparent)| {
            let trace = TraceContext { traceparent, tracestate: None };
            Ok(OrderOverdue { order_id, status: parse_status(order_id, status)?, trace })
        })
        .transpose()
    }
}

/// Orders only observe most events: the status machine and the store did
/// the work. A payment that completes the order is answered with
/// `order.completed`.
impl OrderHandler for OrderSaga {
    type Ctx = PgConnection;
    type Error = OrderError;

    async fn on_stock_reduction_success(
        &self,
        _: &mut PgConnection,
        _: Envelope<StockReductionSuccess>,
        _: OrderStep,
    ) -> Result<OrderOnStockReductionSuccess, OrderError> {
        Ok(OrderOnStockReductionSuccess::NoReply)
    }

    async fn on_stock_reduction_fail(
        &self,
        _: &mut PgConnection,
        _: Envelope<StockReductionFail>,
        _: OrderStep,
    ) -> Result<OrderOnStockReductionFail, OrderError> {
        Ok(OrderOnStockReductionFail::NoReply)
    }

    async fn on_stock_released(
        &self,
        _: &mut PgConnection,
        _: Envelope<StockReleased>,
        _: OrderStep,
    ) -> Result<OrderOnStockReleased, OrderError> {
        Ok(OrderOnStockReleased::NoReply)
    }

    async fn on_payment_completed(
        &self,
        _: &mut PgConnection,
        _: Envelope<PaymentCompleted>,
        step: OrderStep,
    ) -> Result<OrderOnPaymentCompleted, OrderError> {
        Ok(match step {
            OrderStep::Moved { to: OrderStatus::Completed, .. } => {
                OrderOnPaymentCompleted::OrderCompleted(OrderCompleted { completed_at: now_micros() })
            }
            _ => OrderOnPaymentCompleted::NoReply,
        })
    }

    async fn on_payment_fail(
        &self,
        _: &mut PgConnection,
        _: Envelope<PaymentFail>,
        _: OrderStep,
    ) -> Result<OrderOnPaymentFail, OrderError> {
        Ok(OrderOnPaymentFail::NoReply)
    }

    async fn on_payment_refunded(
        &self,
        _: &mut PgConnection,
        _: Envelope<PaymentRefunded>,
        _: OrderStep,
    ) -> Result<OrderOnPaymentRefunded, OrderError> {
        Ok(OrderOnPaymentRefunded::NoReply)
    }

    async fn on_timeout(
        &self,
        _: &mut PgConnection,
        order_id: Uuid,
        from: OrderStatus,
        to: OrderStatus,
    ) -> Result<OrderTimeoutReply, OrderError> {
        tracing::warn!(%order_id, %from, %to, "saga timed out; cancelling with compensation");
        Ok(OrderTimeoutReply::OrderCancelled(OrderCancelled {
            reason: CancelReason::TimedOut,
            status_at_cancel: from.as_str().to_owned(),
        }))
    }
}

/// Avro keeps microseconds; truncating keeps an event equal to its decoded copy.
fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// The transaction of a CreateOrder call, with what the request carries
/// beyond the command's fields.
pub struct CommandTx {
    pub tx: Transaction<'static, Postgres>,
    pub idempotency_key: String,
    /// Canonical text of (user, items), to recognise a reused key.
    pub fingerprint: String,
    pub traceparent: String,
}

/// The generated command helper writes the first transition and the event
/// through the store, in this same transaction.
impl AsMut<PgConnection> for CommandTx {
    fn as_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl OrderCommands for OrderSaga {
    type Ctx = CommandTx;
    type Error = OrderError;

    /// Writes the order and its items; its status, deadline and first
    /// history row come from the generated helper through the store.
    async fn create_order(
        &self,
        ctx: &mut CommandTx,
        order_id: Uuid,
        command: CreateOrder,
    ) -> Result<OrderCreated, OrderError> {
        // Items are validated by the API; this only writes them.
        sqlx::query(
            "INSERT INTO orders (order_id, user_id, status, idempotency_key, request_hash, traceparent) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(order_id)
        .bind(command.user_id)
        .bind(OrderStatus::INITIAL.as_str())
        .bind(&ctx.idempotency_key)
        .bind(&ctx.fingerprint)
        .bind(&ctx.traceparent)
        .execute(&mut *ctx.tx)
        .await?;
        for (line_no, item) in command.items.iter().enumerate() {
            sqlx::query("INSERT INTO order_items (order_id, line_no, product_id, quantity) VALUES ($1, $2, $3, $4)")
                .bind(order_id)
                .bind(i32::try_from(line_no).unwrap_or(i32::MAX))
                .bind(item.product_id)
                .bind(item.quantity)
                .execute(&mut *ctx.tx)
                .await?;
        }
        Ok(OrderCreated { user_id: command.user_id, items: command.items, created_at: now_micros() })
    }
}
