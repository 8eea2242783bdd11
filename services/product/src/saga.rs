//! The product service's part of the saga: reserve all items of an order or
//! none, price it from the catalogue, and release a reservation exactly once (after a
//! failed payment or shipment, or a cancellation).

use std::collections::BTreeMap;

use saga_generated::handlers::{
    ProductHandler, ProductOnOrderCancelled, ProductOnOrderCreated, ProductOnPaymentFail, ProductOnShipmentFailed,
};
use saga_generated::types::{OrderItem, StockFailure};
use saga_generated::{
    Envelope, Money, OrderCancelled, OrderCreated, PaymentFail, ShipmentFailed, StockReductionFail,
    StockReductionSuccess, StockReleased,
};
use saga_runtime::caught_up::{self, CaughtUpClock};
use sqlx::{PgConnection, Row};

use crate::sql;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("order {0}: amount overflows")]
    Overflow(Uuid),
}

/// An outage of the database is waited out; an amount that overflows is a permanent verdict.
impl saga_contract::Classify for StockError {
    fn class(&self) -> saga_contract::FailureClass {
        match self {
            StockError::Db(e) => saga_runtime::db::class_of(e),
            StockError::Overflow(_) => saga_contract::FailureClass::Permanent,
        }
    }
}

/// The product service's saga handler. `owner_clock` is the order
/// service's caught-up clock as this service reads it: a reservation asked
/// for an order the order service has already given up on is shed.
#[derive(Clone)]
pub struct ProductSaga {
    pub owner_clock: CaughtUpClock,
}

/// Records that the order's stock was not reserved, and why; the failure reply.
async fn reject(
    conn: &mut PgConnection,
    event: &Envelope<OrderCreated>,
    reason: StockFailure,
    product_id: Option<Uuid>,
) -> Result<ProductOnOrderCreated, StockError> {
    sqlx::query(sql::REJECT)
        .bind(event.order_id)
        .bind(event.payload.user_id)
        .bind(reason.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(ProductOnOrderCreated::StockReductionFail(StockReductionFail { reason, product_id }))
}

impl ProductHandler for ProductSaga {
    type Ctx = PgConnection;
    type Error = StockError;

    async fn on_order_created(
        &self,
        conn: &mut PgConnection,
        event: Envelope<OrderCreated>,
    ) -> Result<ProductOnOrderCreated, Self::Error> {
        let order_id = event.order_id;
        let existing: Option<String> =
            sqlx::query_scalar(sql::RESERVATION_STATUS).bind(order_id).fetch_optional(&mut *conn).await?;
        if let Some(status) = existing {
            // Already reserved, rejected, or cancelled before it arrived: nothing more to do.
            tracing::info!(%status, "order already known to the product service");
            return Ok(ProductOnOrderCreated::NoReply);
        }
        // Shed the work of an order the order service has given up on: a
        // reservation now would only be released again by its cancellation.
        if caught_up::is_past(&self.owner_clock, event.deadline) {
            tracing::warn!(deadline = ?event.deadline, "order past its deadline: reservation shed");
            return reject(conn, &event, StockFailure::DeadlinePassed, None).await;
        }
        // Sum per product (an order may list one twice); BTreeMap orders the
        // row locks by id, so concurrent reservations cannot deadlock.
        let mut wanted: BTreeMap<Uuid, i64> = BTreeMap::new();
        for item in &event.payload.items {
            *wanted.entry(item.product_id).or_default() += i64::from(item.quantity);
        }
        let ids: Vec<Uuid> = wanted.keys().copied().collect();
        let rows = sqlx::query(sql::LOCK_STOCK).bind(&ids).fetch_all(&mut *conn).await?;
        let mut stock: BTreeMap<Uuid, (i64, i64)> = BTreeMap::new();
        for row in rows {
            let id: Uuid = row.try_get("product_id")?;
            stock.insert(id, (row.try_get("available")?, row.try_get("price_minor")?));
        }
        let failure = wanted.iter().find_map(|(id, qty)| match stock.get(id) {
            None => Some((StockFailure::UnknownProduct, *id)),
            Some((available, _)) if available < qty || *qty <= 0 => Some((StockFailure::InsufficientStock, *id)),
            Some(_) => None,
        });
        if let Some((reason, product_id)) = failure {
            tracing::info!(reason = reason.as_str(), %product_id, "stock not reserved");
            return reject(conn, &event, reason, Some(product_id)).await;
        }
        // The total comes from our prices now, never from the client.
        let mut total = Money::ZERO;
        for (id, qty) in &wanted {
            let (_, price) = stock[id];
            total = Money(price)
                .checked_mul(*qty)
                .and_then(|line| total.checked_add(line))
                .ok_or(StockError::Overflow(order_id))?;
        }
        sqlx::query(sql::RESERVE)
            .bind(order_id)
            .bind(event.payload.user_id)
            .bind(total.minor())
            .execute(&mut *conn)
            .await?;
        for (id, qty) in &wanted {
            sqlx::query(sql::TAKE_STOCK).bind(id).bind(qty).execute(&mut *conn).await?;
            sqlx::query(sql::RESERVE_ITEM)
                .bind(order_id)
                .bind(id)
                .bind(qty)
                .bind(stock[id].1)
                .execute(&mut *conn)
                .await?;
        }
        tracing::info!(amount = total.minor(), "stock reserved");
        Ok(ProductOnOrderCreated::StockReductionSuccess(StockReductionSuccess {
            user_id: event.payload.user_id,
            amount: total,
        }))
    }

    async fn on_payment_fail(
        &self,
        conn: &mut PgConnection,
        event: Envelope<PaymentFail>,
    ) -> Result<ProductOnPaymentFail, Self::Error> {
        Ok(match release(conn, event.order_id).await? {
            Some(items) => ProductOnPaymentFail::StockReleased(StockReleased { items }),
            None => ProductOnPaymentFail::NoReply,
        })
    }

    async fn on_shipment_failed(
        &self,
        conn: &mut PgConnection,
        event: Envelope<ShipmentFailed>,
    ) -> Result<ProductOnShipmentFailed, Self::Error> {
        Ok(match release(conn, event.order_id).await? {
            Some(items) => ProductOnShipmentFailed::StockReleased(StockReleased { items }),
            None => ProductOnShipmentFailed::NoReply,
        })
    }

    async fn on_order_cancelled(
        &self,
        conn: &mut PgConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<ProductOnOrderCancelled, Self::Error> {
        // A cancellation that overtakes its order leaves a tombstone, so the
        // order, should it still arrive, reserves nothing.
        sqlx::query(sql::CANCEL).bind(event.order_id).bind(Uuid::nil()).execute(&mut *conn).await?;
        Ok(match release(conn, event.order_id).await? {
            Some(items) => ProductOnOrderCancelled::StockReleased(StockReleased { items }),
            None => ProductOnOrderCancelled::NoReply,
        })
    }
}

/// Gives a reservation back, exactly once: only a `reserved` row moves to
/// `released` (the row lock serialises a concurrent compensation).
async fn release(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Vec<OrderItem>>, StockError> {
    let released = sqlx::query(sql::RELEASE).bind(order_id).fetch_optional(&mut *conn).await?;
    if released.is_none() {
        tracing::info!("nothing reserved to release");
        return Ok(None);
    }
    let rows = sqlx::query(sql::RESERVED_ITEMS).bind(order_id).fetch_all(&mut *conn).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let product_id: Uuid = row.try_get("product_id")?;
        let quantity: i64 = row.try_get("quantity")?;
        sqlx::query(sql::GIVE_BACK_STOCK).bind(product_id).bind(quantity).execute(&mut *conn).await?;
        items.push(OrderItem { product_id, quantity: i32::try_from(quantity).unwrap_or(i32::MAX) });
    }
    tracing::info!(lines = items.len(), "reservation released");
    Ok(Some(items))
}
