//! The order service's part of the saga: the entry command and every saga
//! event applied through the generated status machine, with a history row
//! per transition.

use saga_contract::{Dispatch, EventMeta, Inbound};
use saga_generated::commands::{CreateOrder, OrderCommands};
use saga_generated::events::EventType;
use saga_generated::handlers::{
    HandleError, OrderHandler, OrderInbound, OrderOnPaymentCompleted, OrderOnPaymentFail, OrderOnPaymentRefunded,
    OrderOnStockReductionFail, OrderOnStockReductionSuccess, OrderOnStockReleased, OrderTimeoutReply,
};
use saga_generated::types::CancelReason;
use saga_generated::{
    Envelope, OrderCancelled, OrderCompleted, OrderCreated, OrderStatus, Outbox, OutboxRecord, PaymentCompleted,
    PaymentFail, PaymentRefunded, StockReductionFail, StockReductionSuccess, StockReleased,
};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The event needs an order this database does not have (yet): retried,
    /// then dead-lettered, never dropped.
    #[error("order {0} is unknown here")]
    UnknownOrder(Uuid),
    #[error("order {0} has a status the spec does not know: {1}")]
    BadStatus(Uuid, String),
    #[error("parking an early event failed: {0}")]
    Park(String),
}

/// The spec's timeouts, scaled (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub scale_percent: u32,
}

impl Timeouts {
    /// Milliseconds until `status` times out; `None` for terminal states.
    pub fn after_ms(&self, status: OrderStatus) -> Option<i64> {
        let after = status.timeout()?.after;
        let ms = after.as_millis().saturating_mul(u128::from(self.scale_percent)) / 100;
        Some(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

#[derive(Clone, Copy)]
pub struct OrderSaga {
    pub timeouts: Timeouts,
}

/// A change to apply to an order: the event, and what it tells us.
pub struct Change<'a> {
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub event_type: EventType,
    pub reason: Option<&'a str>,
    pub total_minor: Option<i64>,
}

impl OrderSaga {
    /// Moves the order's status by `change` through the status machine and
    /// writes the history row. Returns the new status, or `None` when the
    /// event moves nothing (it is only recorded in the log).
    pub async fn apply(&self, conn: &mut PgConnection, change: Change<'_>) -> Result<Option<OrderStatus>, OrderError> {
        let current: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
            .bind(change.order_id)
            .fetch_optional(&mut *conn)
            .await?;
        let current = current.ok_or(OrderError::UnknownOrder(change.order_id))?;
        let from: OrderStatus = current.parse().map_err(|_| OrderError::BadStatus(change.order_id, current.clone()))?;
        if !OrderStatus::is_trigger(change.event_type) {
            tracing::info!(status = %from, "event recorded; it moves no status");
            return Ok(None);
        }
        let to = match from.on_event(change.event_type) {
            Ok(to) => to,
            Err(illegal) => {
                // A reply after the saga ended (e.g. after a timeout cancelled
                // it): the compensations of order.cancelled undo its effect,
                // so the order keeps its terminal status.
                tracing::warn!(%illegal, "event does not apply in this status; ignored");
                return Ok(None);
            }
        };
        self.transition(
            conn,
            change.order_id,
            from,
            to,
            change.event_id,
            change.event_type.as_str(),
            change.reason,
            change.total_minor,
        )
        .await?;
        Ok(Some(to))
    }

    /// Writes a transition: status, deadline of the new status, history row.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition(
        &self,
        conn: &mut PgConnection,
        order_id: Uuid,
        from: OrderStatus,
        to: OrderStatus,
        event_id: Uuid,
        event_type: &str,
        reason: Option<&str>,
        total_minor: Option<i64>,
    ) -> Result<(), OrderError> {
        let failure = if to.is_terminal() && to != OrderStatus::Completed { reason } else { None };
        sqlx::query(
            "UPDATE orders SET status = $2, updated_at = now(), \
             deadline_at = CASE WHEN $3::bigint IS NULL THEN NULL ELSE now() + $3::bigint * interval '1 millisecond' END, \
             total_minor = coalesce($4, total_minor), failure_reason = coalesce($5, failure_reason) \
             WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(to.as_str())
        .bind(self.timeouts.after_ms(to))
        .bind(total_minor)
        .bind(failure)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(order_id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(event_id)
        .bind(event_type)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
        tracing::info!(%from, %to, event_type, "order status changed");
        Ok(())
    }
}

impl OrderHandler for OrderSaga {
    type Ctx = PgConnection;
    type Error = Box<OrderError>;

    async fn on_stock_reduction_success(
        &self,
        conn: &mut PgConnection,
        event: Envelope<StockReductionSuccess>,
    ) -> Result<OrderOnStockReductionSuccess, Self::Error> {
        let change = Change {
            order_id: event.order_id,
            event_id: event.event_id,
            event_type: EventType::StockReductionSuccess,
            reason: None,
            total_minor: Some(event.payload.amount.minor()),
        };
        self.apply(conn, change).await?;
        Ok(OrderOnStockReductionSuccess::NoReply)
    }

    async fn on_stock_reduction_fail(
        &self,
        conn: &mut PgConnection,
        event: Envelope<StockReductionFail>,
    ) -> Result<OrderOnStockReductionFail, Self::Error> {
        let change = Change {
            order_id: event.order_id,
            event_id: event.event_id,
            event_type: EventType::StockReductionFail,
            reason: Some(event.payload.reason.as_str()),
            total_minor: None,
        };
        self.apply(conn, change).await?;
        Ok(OrderOnStockReductionFail::NoReply)
    }

    async fn on_stock_released(
        &self,
        conn: &mut PgConnection,
        event: Envelope<StockReleased>,
    ) -> Result<OrderOnStockReleased, Self::Error> {
        let change = Change {
            order_id: event.order_id,
            event_id: event.event_id,
            event_type: EventType::StockReleased,
            reason: None,
            total_minor: None,
        };
        self.apply(conn, change).await?;
        Ok(OrderOnStockReleased::NoReply)
    }

    async fn on_payment_completed(
        &self,
        conn: &mut PgConnection,
        event: Envelope<PaymentCompleted>,
    ) -> Result<OrderOnPaymentCompleted, Self::Error> {
        let change = Change {
            order_id: event.order_id,
            event_id: event.event_id,
            event_type: EventType::PaymentCompleted,
            reason: None,
            total_minor: None,
        };
        Ok(match self.apply(conn, change).await? {
            Some(OrderStatus::Completed) => {
                OrderOnPaymentCompleted::OrderCompleted(OrderCompleted { completed_at: now_micros() })
            }
            _ => OrderOnPaymentCompleted::NoReply,
        })
    }

    async fn on_payment_fail(
        &self,
        conn: &mut PgConnection,
        event: Envelope<PaymentFail>,
    ) -> Result<OrderOnPaymentFail, Self::Error> {
        let change = Change {
            order_id: event.order_id,
            event_id: event.event_id,
            event_type: EventType::PaymentFail,
            reason: Some(event.payload.reason.as_str()),
            total_minor: None,
        };
        self.apply(conn, change).await?;
        Ok(OrderOnPaymentFail::NoReply)
    }

    async fn on_payment_refunded(
        &self,
        conn: &mut PgConnection,
        event: Envelope<PaymentRefunded>,
    ) -> Result<OrderOnPaymentRefunded, Self::Error> {
        let change = Change {
            order_id: event.order_id,
            event_id: event.event_id,
            event_type: EventType::PaymentRefunded,
            reason: None,
            total_minor: None,
        };
        self.apply(conn, change).await?;
        Ok(OrderOnPaymentRefunded::NoReply)
    }

    async fn on_timeout(
        &self,
        _conn: &mut PgConnection,
        order_id: Uuid,
        from: OrderStatus,
        to: OrderStatus,
    ) -> Result<OrderTimeoutReply, Self::Error> {
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

/// The transaction of a CreateOrder call, which is also the outbox the
/// generated command helper writes `order.created` into.
pub struct CommandTx {
    pub tx: Transaction<'static, Postgres>,
    pub idempotency_key: String,
    /// Canonical text of (user, items), to recognise a reused key.
    pub fingerprint: String,
    pub traceparent: String,
}

impl Outbox for CommandTx {
    type Error = sqlx::Error;
    async fn insert(&mut self, record: OutboxRecord) -> Result<(), sqlx::Error> {
        saga_runtime::outbox::insert(&mut self.tx, &record).await
    }
}

impl OrderCommands for OrderSaga {
    type Ctx = CommandTx;
    type Error = OrderError;

    async fn create_order(
        &self,
        ctx: &mut CommandTx,
        order_id: Uuid,
        command: CreateOrder,
    ) -> Result<OrderCreated, OrderError> {
        // Items are validated by the API; this only writes them.
        sqlx::query(
            "INSERT INTO orders (order_id, user_id, status, idempotency_key, request_hash, traceparent, deadline_at) \
             VALUES ($1, $2, $3, $4, $5, $6, now() + $7::bigint * interval '1 millisecond')",
        )
        .bind(order_id)
        .bind(command.user_id)
        .bind(OrderStatus::INITIAL.as_str())
        .bind(&ctx.idempotency_key)
        .bind(&ctx.fingerprint)
        .bind(&ctx.traceparent)
        .bind(self.timeouts.after_ms(OrderStatus::INITIAL))
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

/// The order service's inbound events as its consumer runs them: a reply
/// that overtook the one before it is parked instead of handled, and parked
/// replies that apply once the status moved are handled in the same
/// transaction (see `arrived_early`).
pub struct OrderEvent(pub OrderInbound);

impl Inbound for OrderEvent {
    fn decode(topic: &str, payload: &[u8]) -> Result<Option<Self>, String> {
        Ok(<OrderInbound as Inbound>::decode(topic, payload)?.map(OrderEvent))
    }

    fn meta(&self) -> EventMeta {
        self.0.meta()
    }
}

impl Dispatch<OrderSaga> for OrderEvent {
    type Ctx = PgConnection;
    type Error = HandleError<Box<OrderError>>;

    async fn dispatch<'a>(
        self,
        saga: &'a OrderSaga,
        conn: &'a mut PgConnection,
    ) -> Result<Option<OutboxRecord>, Self::Error> {
        let event = self.0;
        let order_id = event.saga_key();
        if saga.arrived_early(conn, order_id, event.event_type()).await.map_err(handler_error)? {
            saga.park(conn, &event).await.map_err(handler_error)?;
            return Ok(None);
        }
        let reply = event.handle(saga, conn).await?;
        // The status may have moved: parked events that apply now are applied
        // in this same transaction, their replies written to the outbox.
        while let Some(parked) = saga.take_applicable_parked(conn, order_id).await.map_err(handler_error)? {
            if let Some(record) = parked.handle(saga, conn).await? {
                saga_runtime::outbox::insert(conn, &record).await.map_err(|e| handler_error(OrderError::Db(e)))?;
            }
        }
        Ok(reply)
    }
}

fn handler_error(error: OrderError) -> HandleError<Box<OrderError>> {
    HandleError::Handler(Box::new(error))
}

impl OrderSaga {
    /// True when `event_type` moves a status the order has not reached yet:
    /// the order is still running and the event is a trigger that its
    /// current status does not accept.
    async fn arrived_early(
        &self,
        conn: &mut PgConnection,
        order_id: Uuid,
        event_type: EventType,
    ) -> Result<bool, OrderError> {
        if !OrderStatus::is_trigger(event_type) {
            return Ok(false);
        }
        let Some(status) = self.status(conn, order_id).await? else { return Ok(false) };
        Ok(!status.is_terminal() && status.on_event(event_type).is_err())
    }

    async fn status(&self, conn: &mut PgConnection, order_id: Uuid) -> Result<Option<OrderStatus>, OrderError> {
        let current: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
        current.map(|s| s.parse().map_err(|_| OrderError::BadStatus(order_id, s.clone()))).transpose()
    }

    async fn park(&self, conn: &mut PgConnection, event: &OrderInbound) -> Result<(), OrderError> {
        let copy = match event {
            OrderInbound::StockReductionSuccess(e) => e.to_outbox(),
            OrderInbound::StockReductionFail(e) => e.to_outbox(),
            OrderInbound::StockReleased(e) => e.to_outbox(),
            OrderInbound::PaymentCompleted(e) => e.to_outbox(),
            OrderInbound::PaymentFail(e) => e.to_outbox(),
            OrderInbound::PaymentRefunded(e) => e.to_outbox(),
        }
        .map_err(|e| OrderError::Park(e.to_string()))?;
        sqlx::query(
            "INSERT INTO parked_events (event_id, order_id, event_type, topic, payload) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(copy.event_id)
        .bind(event.saga_key())
        .bind(&copy.event_type)
        .bind(&copy.topic)
        .bind(&copy.payload)
        .execute(&mut *conn)
        .await?;
        tracing::info!(event_type = copy.event_type, "event arrived before the status it needs; parked");
        Ok(())
    }

    /// Removes and returns the oldest parked event the order's status now accepts.
    async fn take_applicable_parked(
        &self,
        conn: &mut PgConnection,
        order_id: Uuid,
    ) -> Result<Option<OrderInbound>, OrderError> {
        let Some(status) = self.status(conn, order_id).await? else { return Ok(None) };
        let parked: Vec<(Uuid, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT event_id, event_type, topic, payload FROM parked_events WHERE order_id = $1 ORDER BY parked_at",
        )
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await?;
        for (event_id, event_type, topic, payload) in parked {
            let event = OrderInbound::decode(&topic, &payload)
                .map_err(|e| OrderError::Park(e.to_string()))?
                .ok_or_else(|| OrderError::Park(format!("parked {event_type} is not an order-service event")))?;
            if status.on_event(event.event_type()).is_err() {
                continue;
            }
            sqlx::query("DELETE FROM parked_events WHERE event_id = $1").bind(event_id).execute(&mut *conn).await?;
            tracing::info!(event_type, "parked event applied");
            return Ok(Some(event));
        }
        Ok(None)
    }
}
