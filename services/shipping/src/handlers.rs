//! The shipping service's part of the saga: book one parcel for a paid order, or refuse
//! an order too large for one parcel; cancel a booked parcel exactly once.
//!
//! The order's items come from the saga context (`context:` in the spec), which the
//! order service's command set and every reply carried here: product and user pass
//! nothing on for this step. A saga begun before the shipping step (its order placed
//! by the previous version) carries no context: its parcel is booked unweighed, as the
//! order would have completed without a shipment at all. The spec says so
//! (`context.without`), and `cargo xtask spec diff` proves the rollout with it.

use saga_generated::Envelope;
use saga_generated::events::{OrderCancelled, PaymentCompleted, ShipmentBooked, ShipmentCancelled, ShipmentFailed};
use saga_generated::handlers::*;
use saga_generated::types::{SagaContext, ShippingFailure};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::sql;

/// Why a handler failed; its class tells the consumer what to do with the message.
#[derive(Debug, thiserror::Error)]
pub enum ShippingError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// An outage of the database is waited out; anything else the database refuses is a
/// permanent verdict on the event (`saga_runtime::db::class_of`).
impl saga_contract::Classify for ShippingError {
    fn class(&self) -> saga_contract::FailureClass {
        match self {
            ShippingError::Db(e) => saga_runtime::db::class_of(e),
        }
    }
}

/// The shipping rules: one parcel per order, of at most `max_parcel_units` units.
#[derive(Debug, Clone)]
pub struct ShippingSaga {
    pub max_parcel_units: i64,
}

/// The largest parcel by default, in units (the sum of an order's quantities).
pub const DEFAULT_MAX_PARCEL_UNITS: i64 = 50;

impl Default for ShippingSaga {
    fn default() -> Self {
        ShippingSaga { max_parcel_units: DEFAULT_MAX_PARCEL_UNITS }
    }
}

/// The carrier's tracking number of an order's parcel: derived from the order, so a
/// redelivered event books the same number.
pub fn tracking_of(order_id: Uuid) -> String {
    let hex = order_id.simple().to_string().to_uppercase();
    format!("PCL-{}", &hex[hex.len() - 16..])
}

/// Units in the parcel of these items; `None` when the items are not known.
pub fn units_of(context: Option<&SagaContext>) -> Option<i64> {
    context.map(|c| c.items.iter().map(|item| i64::from(item.quantity)).sum())
}

/// Each method runs in the consumer's transaction (`conn`), with the inbox row that
/// makes a redelivery change nothing.
impl ShippingHandler for ShippingSaga {
    type Ctx = PgConnection;
    type Error = ShippingError;

    /// The order is paid: book its parcel, or refuse it if it is too large. An order
    /// already known here (booked, refused, or cancelled before its payment came) gets
    /// no second answer.
    async fn on_payment_completed(
        &self,
        conn: &mut PgConnection,
        event: Envelope<PaymentCompleted>,
        context: Option<SagaContext>,
    ) -> Result<ShippingOnPaymentCompleted, ShippingError> {
        let units = units_of(context.as_ref());
        if units.is_none() {
            tracing::warn!("a saga begun before the shipping step: its parcel is booked unweighed");
        }
        if let Some(units) = units.filter(|units| *units > self.max_parcel_units) {
            let decided = sqlx::query(sql::REFUSE)
                .bind(event.order_id)
                .bind(units)
                .bind(ShippingFailure::ParcelTooLarge.as_str())
                .execute(&mut *conn)
                .await?;
            if decided.rows_affected() == 0 {
                tracing::info!("order already known to the shipping service");
                return Ok(ShippingOnPaymentCompleted::NoReply);
            }
            tracing::info!(units, max = self.max_parcel_units, "parcel too large: no shipment");
            return Ok(ShippingOnPaymentCompleted::ShipmentFailed(ShipmentFailed {
                reason: ShippingFailure::ParcelTooLarge,
            }));
        }
        let tracking = tracking_of(event.order_id);
        let booked =
            sqlx::query(sql::BOOK).bind(event.order_id).bind(units).bind(&tracking).execute(&mut *conn).await?;
        if booked.rows_affected() == 0 {
            tracing::info!("order already known to the shipping service");
            return Ok(ShippingOnPaymentCompleted::NoReply);
        }
        tracing::info!(?units, %tracking, "shipment booked");
        Ok(ShippingOnPaymentCompleted::ShipmentBooked(ShipmentBooked { tracking }))
    }

    /// The order was given up on: cancel its parcel, once. A cancellation that comes
    /// before the payment leaves a tombstone, so the payment, should it still come,
    /// books nothing.
    async fn on_order_cancelled(
        &self,
        conn: &mut PgConnection,
        event: Envelope<OrderCancelled>,
    ) -> Result<ShippingOnOrderCancelled, ShippingError> {
        let tombstone = sqlx::query(sql::TOMBSTONE).bind(event.order_id).execute(&mut *conn).await?;
        if tombstone.rows_affected() == 1 {
            tracing::info!("cancelled before any shipment: tombstone left");
            return Ok(ShippingOnOrderCancelled::NoReply);
        }
        let cancelled = sqlx::query(sql::CANCEL).bind(event.order_id).execute(&mut *conn).await?;
        if cancelled.rows_affected() == 0 {
            tracing::info!("nothing booked to cancel");
            return Ok(ShippingOnOrderCancelled::NoReply);
        }
        tracing::info!("shipment cancelled");
        Ok(ShippingOnOrderCancelled::ShipmentCancelled(ShipmentCancelled {}))
    }
}

#[cfg(test)]
mod tests {
    use saga_generated::types::OrderItem;

    use super::*;

    #[test]
    fn a_parcel_holds_the_sum_of_the_quantities() {
        let item = |quantity| OrderItem { product_id: Uuid::nil(), quantity };
        assert_eq!(units_of(Some(&SagaContext { items: vec![item(3), item(4)] })), Some(7));
        assert_eq!(units_of(Some(&SagaContext { items: vec![] })), Some(0));
        assert_eq!(units_of(None), None, "a saga begun before the context");
    }

    #[test]
    fn a_tracking_number_is_the_orders_own() {
        let order = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(tracking_of(order), "PCL-0011223344556677");
        assert_eq!(tracking_of(order), tracking_of(order));
    }
}
