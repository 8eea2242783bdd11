//! Handler traits, dispatch, the status machine and the command helper, driven the way the
//! runtime drives them.

use std::convert::Infallible;

use saga_contract::{Dispatch, EventMeta};
use saga_generated::commands::{CommandError, CreateOrder, OrderCommands, run_create_order};
use saga_generated::handlers::{
    HandleError, OrderHandler, OrderInbound, ProductHandler, ProductInbound, ProductOnOrderCancelled,
    ProductOnOrderCreated, ProductOnPaymentFail,
};
use saga_generated::topics::{InventoryEvents, TopicMessage};
use saga_generated::types::{OrderItem, StockFailure};
use saga_generated::*;
use uuid::Uuid;

/// A product service whose stock holds `in_stock` units of anything.
struct Product {
    in_stock: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("database unavailable")]
struct Transient;

/// Stands in for the database transaction.
#[derive(Default)]
struct Tx {
    outbox: Vec<OutboxRecord>,
    log: Vec<String>,
}

impl Outbox for Tx {
    type Error = Infallible;
    async fn insert(&mut self, record: OutboxRecord) -> Result<(), Infallible> {
        self.outbox.push(record);
        Ok(())
    }
}

impl ProductHandler for Product {
    type Ctx = Tx;
    type Error = Transient;

    async fn on_order_created(
        &self,
        ctx: &mut Tx,
        event: Envelope<OrderCreated>,
    ) -> Result<ProductOnOrderCreated, Transient> {
        ctx.log.push(format!("reserve for {}", event.order_id));
        if self.in_stock < 0 {
            return Err(Transient);
        }
        let wanted: i32 = event.payload.items.iter().map(|i| i.quantity).sum();
        Ok(if wanted <= self.in_stock {
            ProductOnOrderCreated::StockReductionSuccess(StockReductionSuccess {
                user_id: event.payload.user_id,
                amount: Money(250 * i64::from(wanted)),
            })
        } else {
            ProductOnOrderCreated::StockReductionFail(StockReductionFail {
                reason: StockFailure::InsufficientStock,
                product_id: event.payload.items.first().map(|i| i.product_id),
            })
        })
    }

    async fn on_payment_fail(
        &self,
        _ctx: &mut Tx,
        _event: Envelope<PaymentFail>,
    ) -> Result<ProductOnPaymentFail, Transient> {
        Ok(ProductOnPaymentFail::StockReleased(StockReleased { items: vec![] }))
    }

    async fn on_order_cancelled(
        &self,
        _ctx: &mut Tx,
        _event: Envelope<OrderCancelled>,
    ) -> Result<ProductOnOrderCancelled, Transient> {
        Ok(ProductOnOrderCancelled::NoReply)
    }
}

fn order(quantity: i32) -> Envelope<OrderCreated> {
    let item = OrderItem { product_id: Uuid::now_v7(), quantity };
    Envelope::new(
        Uuid::now_v7(),
        OrderCreated {
            user_id: Uuid::now_v7(),
            items: vec![item],
            created_at: chrono::DateTime::from_timestamp_micros(0).expect("epoch"),
        },
    )
}

/// Why consuming a message failed.
#[derive(Debug)]
enum Failed<E> {
    Decode(String),
    Handler(E),
}

/// What the runtime's consumer does with a message: decode it as the
/// service's inbound events `E`, then run handler `H` for it. `Ok(None)`: an
/// event the service does not subscribe to.
async fn consume<H, E: Dispatch<H>>(
    handler: &H,
    ctx: &mut E::Ctx,
    topic: &str,
    bytes: &[u8],
) -> Result<Option<(EventMeta, Option<OutboxRecord>)>, Failed<E::Error>> {
    let Some(event) = E::decode(topic, bytes).map_err(Failed::Decode)? else { return Ok(None) };
    let meta = event.meta();
    let reply = event.dispatch(handler, ctx).await.map_err(Failed::Handler)?;
    Ok(Some((meta, reply)))
}

#[tokio::test]
async fn dispatch_runs_the_handler_and_returns_a_keyed_reply() {
    let event = order(2);
    let bytes = event.encode().expect("encodes");
    let mut tx = Tx::default();
    let out = consume::<_, ProductInbound>(&Product { in_stock: 5 }, &mut tx, "order-events", &bytes)
        .await
        .expect("dispatches");
    let Some((meta, Some(reply))) = out else { panic!("no reply: {out:?}") };
    assert_eq!(meta.event_id, event.event_id);
    assert_eq!(meta.event_type, EventType::OrderCreated.as_str());
    assert_eq!(meta.saga_key, event.order_id);
    assert_eq!(reply.topic, "inventory-events");
    assert_eq!(reply.event_type, "stock.reduction.success");
    assert_eq!(reply.partition_key, event.order_id.to_string());
    let InventoryEvents::StockReductionSuccess(r) = InventoryEvents::decode(&reply.payload).expect("decodes") else {
        panic!("wrong reply")
    };
    assert_eq!(r.order_id, event.order_id, "the reply keeps the saga key");
    assert_eq!(r.trace, event.trace);
    assert_eq!(r.payload.amount, Money(500));
    assert_eq!(tx.log.len(), 1);
}

#[tokio::test]
async fn dispatch_reports_failures_by_kind() {
    let bytes = order(9).encode().expect("encodes");
    let product = |in_stock| Product { in_stock };
    let out = consume::<_, ProductInbound>(&product(1), &mut Tx::default(), "order-events", &bytes).await;
    let Ok(Some((_, Some(reply)))) = out else { panic!("{out:?}") };
    assert_eq!(reply.event_type, "stock.reduction.fail");

    let out = consume::<_, ProductInbound>(&product(-1), &mut Tx::default(), "order-events", &bytes).await;
    assert!(matches!(out, Err(Failed::Handler(HandleError::Handler(Transient)))), "{out:?}");

    let out = consume::<_, ProductInbound>(&product(1), &mut Tx::default(), "order-events", b"junk").await;
    assert!(matches!(&out, Err(Failed::Decode(reason)) if !reason.is_empty()), "{out:?}");
}

#[tokio::test]
async fn events_a_service_does_not_subscribe_to_are_ignored() {
    // product consumes order-events for order.created, but not order.completed.
    let done = Envelope::new(Uuid::now_v7(), OrderCompleted { completed_at: chrono::Utc::now() });
    let bytes = done.encode().expect("encodes");
    assert_eq!(ProductInbound::decode("order-events", &bytes).expect("decodes"), None);
    let out = consume::<_, ProductInbound>(&Product { in_stock: 1 }, &mut Tx::default(), "order-events", &bytes).await;
    assert!(matches!(out, Ok(None)), "{out:?}");
}

#[test]
fn status_machine_follows_the_spec() {
    use OrderStatus::*;
    assert_eq!(OrderStatus::INITIAL, Created);
    assert_eq!(Created.on_event(EventType::StockReductionSuccess), Ok(InventoryReserved));
    assert_eq!(Created.on_event(EventType::StockReductionFail), Ok(InventoryReservedFailed));
    assert_eq!(InventoryReserved.on_event(EventType::PaymentCompleted), Ok(Completed));
    assert_eq!(InventoryReserved.on_event(EventType::PaymentFail), Ok(PaymentFailed));
    let err = Completed.on_event(EventType::PaymentFail).expect_err("terminal");
    assert_eq!(err, IllegalTransition { from: Completed, event: EventType::PaymentFail });
    assert_eq!(err.to_string(), "illegal transition: `order` status `completed` has no transition on `payment.fail`");
    for s in OrderStatus::ALL {
        assert_eq!(s.is_terminal(), s.timeout().is_none(), "{s}");
        assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(*s));
    }
    let t = Created.timeout().expect("created times out");
    assert_eq!((t.after.as_secs(), t.to, t.emits), (30, Cancelled, Some(EventType::OrderCancelled)));
    assert!("shipped".parse::<OrderStatus>().is_err());
}

struct OrderSvc;

impl OrderCommands for OrderSvc {
    type Ctx = Tx;
    type Error = Transient;

    async fn create_order(
        &self,
        _ctx: &mut Tx,
        _order_id: Uuid,
        command: CreateOrder,
    ) -> Result<OrderCreated, Transient> {
        if command.items.is_empty() {
            return Err(Transient);
        }
        Ok(OrderCreated {
            user_id: command.user_id,
            items: command.items,
            created_at: chrono::DateTime::from_timestamp_micros(0).expect("epoch"),
        })
    }
}

#[tokio::test]
async fn the_entry_command_writes_its_event_to_the_outbox() {
    let mut tx = Tx::default();
    let cmd =
        CreateOrder { user_id: Uuid::now_v7(), items: vec![OrderItem { product_id: Uuid::now_v7(), quantity: 3 }] };
    let event = run_create_order(&OrderSvc, &mut tx, cmd, TraceContext::default()).await.expect("runs");
    assert_eq!(event.payload.items[0].quantity, 3);
    assert_eq!(tx.outbox.len(), 1);
    let rec = &tx.outbox[0];
    assert_eq!((rec.topic.as_str(), rec.event_type.as_str()), ("order-events", "order.created"));
    let TopicMessage::OrderEvents(msg) = TopicMessage::decode(&rec.topic, &rec.payload).expect("decodes") else {
        panic!("wrong topic")
    };
    assert_eq!(msg.event_id(), event.event_id);

    let empty = CreateOrder { user_id: Uuid::now_v7(), items: vec![] };
    let err = run_create_order(&OrderSvc, &mut Tx::default(), empty, TraceContext::default()).await;
    assert!(matches!(err, Err(CommandError::Handler(Transient))));
}

/// The order service only observes most events; it still gets a typed method for each.
struct Observer;

impl OrderHandler for Observer {
    type Ctx = Tx;
    type Error = Transient;

    async fn on_stock_reduction_success(
        &self,
        _: &mut Tx,
        _: Envelope<StockReductionSuccess>,
    ) -> Result<handlers::OrderOnStockReductionSuccess, Transient> {
        Ok(handlers::OrderOnStockReductionSuccess::NoReply)
    }
    async fn on_stock_reduction_fail(
        &self,
        _: &mut Tx,
        _: Envelope<StockReductionFail>,
    ) -> Result<handlers::OrderOnStockReductionFail, Transient> {
        Ok(handlers::OrderOnStockReductionFail::NoReply)
    }
    async fn on_stock_released(
        &self,
        _: &mut Tx,
        _: Envelope<StockReleased>,
    ) -> Result<handlers::OrderOnStockReleased, Transient> {
        Ok(handlers::OrderOnStockReleased::NoReply)
    }
    async fn on_payment_completed(
        &self,
        _: &mut Tx,
        _: Envelope<PaymentCompleted>,
    ) -> Result<handlers::OrderOnPaymentCompleted, Transient> {
        Ok(handlers::OrderOnPaymentCompleted::OrderCompleted(OrderCompleted { completed_at: chrono::Utc::now() }))
    }
    async fn on_payment_fail(
        &self,
        _: &mut Tx,
        _: Envelope<PaymentFail>,
    ) -> Result<handlers::OrderOnPaymentFail, Transient> {
        Ok(handlers::OrderOnPaymentFail::NoReply)
    }
    async fn on_payment_refunded(
        &self,
        _: &mut Tx,
        _: Envelope<PaymentRefunded>,
    ) -> Result<handlers::OrderOnPaymentRefunded, Transient> {
        Ok(handlers::OrderOnPaymentRefunded::NoReply)
    }
    async fn on_timeout(
        &self,
        _: &mut Tx,
        _order_id: Uuid,
        from: OrderStatus,
        _to: OrderStatus,
    ) -> Result<handlers::OrderTimeoutReply, Transient> {
        Ok(handlers::OrderTimeoutReply::OrderCancelled(OrderCancelled {
            reason: types::CancelReason::TimedOut,
            status_at_cancel: from.to_string(),
        }))
    }
}

#[tokio::test]
async fn order_replies_to_payment_completed_with_order_completed() {
    let paid = Envelope::new(Uuid::now_v7(), PaymentCompleted { user_id: Uuid::now_v7(), amount: Money(1) });
    let bytes = paid.encode().expect("encodes");
    let out =
        consume::<_, OrderInbound>(&Observer, &mut Tx::default(), "payment-events", &bytes).await.expect("dispatches");
    let Some((_, Some(reply))) = out else { panic!("{out:?}") };
    assert_eq!(reply.event_type, "order.completed");
    assert_eq!(reply.partition_key, paid.order_id.to_string());

    let mut tx = Tx::default();
    let timeout = Observer.on_timeout(&mut tx, paid.order_id, OrderStatus::Created, OrderStatus::Cancelled);
    let rec = timeout.await.expect("runs").into_outbox(paid.order_id, TraceContext::default()).expect("encodes");
    assert_eq!(rec.map(|r| r.event_type), Some("order.cancelled".to_string()));
}

#[test]
fn topology_lists_what_the_runtime_needs() {
    let names: Vec<_> = topology::TOPICS.iter().map(|t| (t.name, t.partitions, t.dlq)).collect();
    assert_eq!(
        names,
        [
            ("order-events", 6, "order-events.dlq"),
            ("inventory-events", 6, "inventory-events.dlq"),
            ("payment-events", 6, "payment-events.dlq")
        ]
    );
    let user = topology::consumer_group("user").expect("user consumes");
    assert_eq!(user.group_id, "order_fulfillment.user");
    assert_eq!(user.topics, ["order-events", "inventory-events"], "spec order");
    assert_eq!(user.retry.max_attempts, 3);
    assert!(topology::SUBSCRIPTIONS.iter().any(|s| s.service == "product" && s.event_type == "payment.fail"));
}

#[tokio::test]
async fn the_timeout_helper_moves_the_status_and_emits_the_spec_event() {
    let key = Uuid::now_v7();
    let out = handlers::run_order_timeout(
        &Observer,
        &mut Tx::default(),
        key,
        OrderStatus::InventoryReserved,
        TraceContext::default(),
    )
    .await
    .expect("runs")
    .expect("inventory_reserved has a timeout");
    assert_eq!(out.to, OrderStatus::Cancelled);
    let reply = out.reply.expect("order.cancelled");
    assert_eq!((reply.event_type.as_str(), reply.partition_key), ("order.cancelled", key.to_string()));
    let mut tx = Tx::default();
    let none = handlers::run_order_timeout(&Observer, &mut tx, key, OrderStatus::Completed, TraceContext::default());
    assert_eq!(none.await.expect("runs"), None, "terminal states never time out");
}

#[test]
fn observed_events_are_not_status_triggers() {
    assert!(OrderStatus::is_trigger(EventType::PaymentFail));
    assert!(!OrderStatus::is_trigger(EventType::StockReleased));
    assert!(!OrderStatus::is_trigger(EventType::PaymentRefunded));
}
