//! What is specific to orders in the saga. The generated status-owner code
//! (`saga_generated::owner`) runs the entry command, every inbound event and
//! every timeout through the status machine, parks replies that overtook the
//! one before them and writes a history row per transition; this file is its
//! store (the SQL of orders, their history and parked events), the columns an
//! order keeps from the events (total, failure reason) and its replies.

use saga_contract::owner::Store;
use saga_contract::{OutboxRecord, ParkedEvent};
use saga_generated::commands::{CreateOrder, OrderCommands};
use saga_generated::handlers::{
    OrderHandler, OrderInbound, OrderOnPaymentCompleted, OrderOnPaymentFail, OrderOnPaymentRefunded,
    OrderOnShipmentBooked, OrderOnShipmentCancelled, OrderOnShipmentFailed, OrderOnStockReductionFail,
    OrderOnStockReductionSuccess, OrderOnStockReleased, OrderTimeoutReply,
};
use saga_generated::owner::{OrderCause, OrderOverdue, OrderStep, OrderTransition};
use saga_generated::status::StatusMigration;
use saga_generated::types::CancelReason;
use saga_generated::{
    Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderStatus, PaymentCompleted, PaymentFail,
    PaymentRefunded, ShipmentBooked, ShipmentCancelled, ShipmentFailed, StockReductionFail, StockReductionSuccess,
    StockReleased, TraceContext,
};
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
        let rows = order_store::migrate_status(&mut tx, migration.from, migration.to.as_str(), deadline).await?;
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

fn kept_from(cause: OrderCause<'_>) -> (Option<i64>, Option<&'static str>) {
    match cause {
        OrderCause::Event(OrderInbound::StockReductionSuccess(e)) => (Some(e.payload.amount.minor()), None),
        OrderCause::Event(OrderInbound::StockReductionFail(e)) => (None, Some(e.payload.reason.as_str())),
        OrderCause::Event(OrderInbound::PaymentFail(e)) => (None, Some(e.payload.reason.as_str())),
        OrderCause::Event(OrderInbound::ShipmentFailed(e)) => (None, Some(e.payload.reason.as_str())),
        OrderCause::Timeout => (None, Some(CancelReason::TimedOut.as_str())),
        OrderCause::Started | OrderCause::Seeded | OrderCause::Event(_) => (None, None),
    }
}

impl Store<OrderStatus> for OrderSaga {
    type Ctx = PgConnection;
    type Error = OrderError;

    async fn load_for_update(
        &self,
        conn: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<Option<OrderStatus>, OrderError> {
        let status = order_store::lock_status(conn, order_id).await?;
        status.map(|s| parse_status(order_id, s)).transpose()
    }

    fn timeout(&self, status: OrderStatus) -> Option<std::time::Duration> {
        self.timeouts.after(status)
    }

    async fn write_transition(&self, conn: &mut PgConnection, t: &OrderTransition<'_>) -> Result<(), OrderError> {
        let (total_minor, reason) = kept_from(t.cause);
        let failure = if t.to.is_terminal() && t.to != OrderStatus::Completed { reason } else { None };
        let transition = order_store::Transition {
            order_id: t.saga_key,
            from: t.from.map(OrderStatus::as_str),
            to: t.to.as_str(),
            deadline: t.deadline,
            total_minor,
            failure_reason: failure,
            event_id: t.event_id,
            event_type: t.event_type,
            reason,
        };
        let written = order_store::write_transition(conn, &transition).await?;
        tracing::info!(from = t.from.map(OrderStatus::as_str), to = %t.to, event_type = t.event_type, "order status changed");
        if let Some(written) = written {
            if let Some(from) = t.from {
                record_step(from, t.to, written.in_from_seconds, written.since_created_seconds);
            }
            let (feed, change) = (self.feed.clone(), written.change);
            // Outside a gathered transaction (a test driving the store) nobody
            // would know when to send it: it is not sent.
            saga_runtime::db::after_commit(move || feed.publish(change));
        }
        Ok(())
    }

    async fn park(&self, conn: &mut PgConnection, order_id: Uuid, event: &ParkedEvent) -> Result<(), OrderError> {
        let parked = order_store::Parked {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            topic: event.topic.clone(),
            payload: event.payload.clone(),
        };
        order_store::park(conn, order_id, &parked).await?;
        tracing::info!(event_type = event.event_type, "event arrived before the status it needs; parked");
        Ok(())
    }

    async fn parked(&self, conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<ParkedEvent>, OrderError> {
        let rows = order_store::parked(conn, order_id).await?;
        Ok(rows
            .into_iter()
            .map(|p| ParkedEvent { event_id: p.event_id, event_type: p.event_type, topic: p.topic, payload: p.payload })
            .collect())
    }

    async fn unpark(&self, conn: &mut PgConnection, event_id: Uuid) -> Result<(), OrderError> {
        order_store::unpark(conn, event_id).await?;
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
        let statuses: Vec<String> = statuses.iter().map(|s| s.as_str().to_owned()).collect();
        // SKIP LOCKED: a saga whose event is being applied right now is left
        // alone; if that event ends it, its deadline is gone by the next sweep.
        let row =
            order_store::next_overdue(conn, &statuses, skip, chrono::DateTime::<chrono::Utc>::from(as_of)).await?;
        row.map(|o| {
            let trace = TraceContext { traceparent: o.traceparent, tracestate: None };
            Ok(OrderOverdue { saga_key: o.order_id, status: parse_status(o.order_id, o.status)?, trace })
        })
        .transpose()
    }
}

/// Orders only observe most events: the status machine and the store did
/// the work. A booked shipment that completes the order is answered with
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
        _: OrderStep,
    ) -> Result<OrderOnPaymentCompleted, OrderError> {
        Ok(OrderOnPaymentCompleted::NoReply)
    }

    async fn on_shipment_booked(
        &self,
        _: &mut PgConnection,
        _: Envelope<ShipmentBooked>,
        step: OrderStep,
    ) -> Result<OrderOnShipmentBooked, OrderError> {
        Ok(match step {
            OrderStep::Moved { to: OrderStatus::Completed, .. } => {
                OrderOnShipmentBooked::OrderCompleted(OrderCompleted { completed_at: now_micros() })
            }
            _ => OrderOnShipmentBooked::NoReply,
        })
    }

    async fn on_shipment_failed(
        &self,
        _: &mut PgConnection,
        _: Envelope<ShipmentFailed>,
        _: OrderStep,
    ) -> Result<OrderOnShipmentFailed, OrderError> {
        Ok(OrderOnShipmentFailed::NoReply)
    }

    async fn on_shipment_cancelled(
        &self,
        _: &mut PgConnection,
        _: Envelope<ShipmentCancelled>,
        _: OrderStep,
    ) -> Result<OrderOnShipmentCancelled, OrderError> {
        Ok(OrderOnShipmentCancelled::NoReply)
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
        let items: Vec<(Uuid, i32)> = command.items.iter().map(|i| (i.product_id, i.quantity)).collect();
        let order = order_store::NewOrder {
            order_id,
            user_id: command.user_id,
            status: OrderStatus::INITIAL.as_str(),
            idempotency_key: &ctx.idempotency_key,
            request_hash: &ctx.fingerprint,
            traceparent: &ctx.traceparent,
            items: &items,
        };
        order_store::insert_order(&mut ctx.tx, &order).await?;
        Ok(OrderCreated { user_id: command.user_id, items: command.items, created_at: now_micros() })
    }
}
