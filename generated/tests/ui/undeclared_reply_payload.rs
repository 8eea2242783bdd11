// The reply type is not an open "any event": returning another event's payload, or the reply
// enum of a different subscription, does not type-check.
use saga_generated::handlers::{ProductHandler, ProductOnOrderCancelled, ProductOnOrderCreated, ProductOnPaymentFail, ProductOnShipmentFailed};
use saga_generated::*;

struct Product;

#[derive(Debug, thiserror::Error)]
#[error("x")]
struct E;

impl saga_contract::Classify for E {
    fn class(&self) -> saga_contract::FailureClass {
        saga_contract::FailureClass::Permanent
    }
}

impl ProductHandler for Product {
    type Ctx = ();
    type Error = E;

    async fn on_order_created(&self, _: &mut (), _: Envelope<OrderCreated>) -> Result<ProductOnOrderCreated, E> {
        Ok(ProductOnOrderCreated::NoReply)
    }

    // After payment.fail, product may publish stock.released; order.completed is not allowed,
    // and a bare payload is not the reply enum.
    async fn on_payment_fail(&self, _: &mut (), _: Envelope<PaymentFail>) -> Result<ProductOnPaymentFail, E> {
        Ok(OrderCompleted { completed_at: chrono::Utc::now() })
    }

    async fn on_order_cancelled(&self, _: &mut (), _: Envelope<OrderCancelled>) -> Result<ProductOnOrderCancelled, E> {
        Ok(ProductOnOrderCancelled::NoReply)
    }

    async fn on_shipment_failed(&self, _: &mut (), _: Envelope<ShipmentFailed>) -> Result<ProductOnShipmentFailed, E> {
        Ok(ProductOnShipmentFailed::NoReply)
    }
}

fn main() {}
