// product may reply to order.created only with stock.reduction.success or .fail;
// payment.completed is the user service's event.
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

    async fn on_order_created(&self, _: &mut (), e: Envelope<OrderCreated>) -> Result<ProductOnOrderCreated, E> {
        Ok(ProductOnOrderCreated::PaymentCompleted(PaymentCompleted { user_id: e.payload.user_id, amount: Default::default() }))
    }

    async fn on_payment_fail(&self, _: &mut (), _: Envelope<PaymentFail>) -> Result<ProductOnPaymentFail, E> {
        Ok(ProductOnPaymentFail::NoReply)
    }

    async fn on_order_cancelled(&self, _: &mut (), _: Envelope<OrderCancelled>) -> Result<ProductOnOrderCancelled, E> {
        Ok(ProductOnOrderCancelled::NoReply)
    }

    async fn on_shipment_failed(&self, _: &mut (), _: Envelope<ShipmentFailed>) -> Result<ProductOnShipmentFailed, E> {
        Ok(ProductOnShipmentFailed::NoReply)
    }
}

fn main() {}
