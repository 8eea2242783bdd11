//! Handler traits, dispatch, the status machine, the status owner's machinery and the command
//! helper, driven the way the runtime drives them, over an in-memory stand-in for the
//! database (the real store is tested against PostgreSQL in the end-to-end suite).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use saga_contract::owner::Store;
use saga_contract::{Classify, Dispatch, EventMeta, FailureClass, OutboxRecord, ParkedEvent, Sweep};
use saga_generated::commands::{CommandError, CreateOrder, OrderCommands, run_create_order};
use saga_generated::handlers::{
    HandleError, OrderHandler, OrderInbound, ProductHandler, ProductInbound, ProductOnOrderCancelled,
    ProductOnOrderCreated, ProductOnPaymentFail, ProductOnShipmentFailed, ShippingHandler, ShippingInbound,
    ShippingOnOrderCancelled, ShippingOnPaymentCompleted,
};
use saga_generated::owner::{OrderOverdue, OrderStep, OrderTimeouts, OrderTransition};
use saga_generated::topics::{InventoryEvents, OrderEvents, ShippingEvents, TopicMessage};
use saga_generated::types::{OrderItem, SagaContext, ShippingFailure, StockFailure};
use saga_generated::*;
use uuid::Uuid;

/// A product service whose stock holds `in_stock` units of anything.
struct Product {
    in_stock: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("database unavailable")]
struct Transient;

impl Classify for Transient {
    fn class(&self) -> FailureClass {
        FailureClass::Infrastructure
    }
}

/// Stands in for the database transaction and what it sees.
#[derive(Default)]
struct Tx {
    outbox: Vec<OutboxRecord>,
    log: Vec<String>,
    /// The order service's sagas and their statuses.
    sagas: BTreeMap<Uuid, OrderStatus>,
    /// Deadlines of the sagas that have one.
    deadlines: BTreeMap<Uuid, SystemTime>,
    /// (saga, from, to, event type) per transition.
    history: Vec<(Uuid, Option<OrderStatus>, OrderStatus, String)>,
    parked: Vec<(Uuid, ParkedEvent)>,
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

    async fn on_shipment_failed(
        &self,
        _ctx: &mut Tx,
        _event: Envelope<ShipmentFailed>,
    ) -> Result<ProductOnShipmentFailed, Transient> {
        Ok(ProductOnShipmentFailed::StockReleased(StockReleased { items: vec![] }))
    }
}

/// A shipping service that books parcels of at most `max_units` units: it reads the
/// order's items from the saga context, which no event between the command and it names.
struct Shipping {
    max_units: i32,
}

impl ShippingHandler for Shipping {
    type Ctx = Tx;
    type Error = Transient;

    async fn on_payment_completed(
        &self,
        ctx: &mut Tx,
        event: Envelope<PaymentCompleted>,
        context: Option<SagaContext>,
    ) -> Result<ShippingOnPaymentCompleted, Transient> {
        let Some(context) = context else {
            ctx.log.push(format!("unknown contents for {}", event.order_id));
            return Ok(ShippingOnPaymentCompleted::NoReply);
        };
        let units: i32 = context.items.iter().map(|i| i.quantity).sum();
        ctx.log.push(format!("{units} units for {}", event.order_id));
        Ok(if units <= self.max_units {
            ShippingOnPaymentCompleted::ShipmentBooked(ShipmentBooked { tracking: format!("T{units}") })
        } else {
            ShippingOnPaymentCompleted::ShipmentFailed(ShipmentFailed { reason: ShippingFailure::ParcelTooLarge })
        })
    }

    async fn on_order_cancelled(
        &self,
        _ctx: &mut Tx,
        _event: Envelope<OrderCancelled>,
    ) -> Result<ShippingOnOrderCancelled, Transient> {
        Ok(ShippingOnOrderCancelled::NoReply)
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
    let Err(Failed::Handler(error)) = out else { unreachable!() };
    assert_eq!(error.class(), FailureClass::Infrastructure, "the handler's error says what it is");

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
    assert_eq!(InventoryReserved.on_event(EventType::PaymentCompleted), Ok(Paid));
    assert_eq!(InventoryReserved.on_event(EventType::PaymentFail), Ok(PaymentFailed));
    assert_eq!(Paid.on_event(EventType::ShipmentBooked), Ok(Completed));
    assert_eq!(Paid.on_event(EventType::ShipmentFailed), Ok(ShippingFailed));
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

/// The order service as the generated status-owner code sees it: commands, handlers and a
/// store, here over the in-memory [`Tx`].
struct Orders;

impl AsMut<Tx> for Tx {
    fn as_mut(&mut self) -> &mut Tx {
        self
    }
}

impl OrderCommands for Orders {
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

impl Store<OrderStatus> for Orders {
    type Ctx = Tx;
    type Error = Transient;

    async fn load_for_update(&self, tx: &mut Tx, order_id: Uuid) -> Result<Option<OrderStatus>, Transient> {
        Ok(tx.sagas.get(&order_id).copied())
    }

    async fn write_transition(&self, tx: &mut Tx, t: &OrderTransition<'_>) -> Result<(), Transient> {
        tx.sagas.insert(t.saga_key, t.to);
        tx.history.push((t.saga_key, t.from, t.to, t.event_type.to_owned()));
        match t.deadline {
            Some(deadline) => tx.deadlines.insert(t.saga_key, deadline.into()),
            None => tx.deadlines.remove(&t.saga_key),
        };
        Ok(())
    }

    async fn park(&self, tx: &mut Tx, order_id: Uuid, event: &ParkedEvent) -> Result<(), Transient> {
        tx.parked.push((order_id, event.clone()));
        Ok(())
    }

    async fn parked(&self, tx: &mut Tx, order_id: Uuid) -> Result<Vec<ParkedEvent>, Transient> {
        Ok(tx.parked.iter().filter(|(k, _)| *k == order_id).map(|(_, e)| e.clone()).collect())
    }

    async fn unpark(&self, tx: &mut Tx, event_id: Uuid) -> Result<(), Transient> {
        tx.parked.retain(|(_, e)| e.event_id != event_id);
        Ok(())
    }

    async fn publish(&self, tx: &mut Tx, record: OutboxRecord) -> Result<(), Transient> {
        tx.outbox.push(record);
        Ok(())
    }

    async fn next_overdue(
        &self,
        tx: &mut Tx,
        statuses: &[OrderStatus],
        as_of: SystemTime,
        skip: &[Uuid],
    ) -> Result<Option<OrderOverdue>, Transient> {
        let mut due = tx.sagas.iter().filter(|(k, s)| {
            tx.deadlines.get(k).is_some_and(|d| *d <= as_of) && statuses.contains(s) && !skip.contains(k)
        });
        Ok(due.next().map(|(k, s)| OrderOverdue { saga_key: *k, status: *s, trace: TraceContext::default() }))
    }
}

/// The order service observes most events; it still gets a typed method for each, told what
/// the status machine made of it.
impl OrderHandler for Orders {
    type Ctx = Tx;
    type Error = Transient;

    async fn on_stock_reduction_success(
        &self,
        _: &mut Tx,
        _: Envelope<StockReductionSuccess>,
        _: OrderStep,
    ) -> Result<handlers::OrderOnStockReductionSuccess, Transient> {
        Ok(handlers::OrderOnStockReductionSuccess::NoReply)
    }
    async fn on_stock_reduction_fail(
        &self,
        _: &mut Tx,
        _: Envelope<StockReductionFail>,
        _: OrderStep,
    ) -> Result<handlers::OrderOnStockReductionFail, Transient> {
        Ok(handlers::OrderOnStockReductionFail::NoReply)
    }
    async fn on_stock_released(
        &self,
        tx: &mut Tx,
        _: Envelope<StockReleased>,
        step: OrderStep,
    ) -> Result<handlers::OrderOnStockReleased, Transient> {
        tx.log.push(format!("{step:?}"));
        Ok(handlers::OrderOnStockReleased::NoReply)
    }
    async fn on_payment_completed(
        &self,
        _: &mut Tx,
        _: Envelope<PaymentCompleted>,
        step: OrderStep,
    ) -> Result<handlers::OrderOnPaymentCompleted, Transient> {
        assert!(!matches!(step, OrderStep::Moved { to: OrderStatus::Completed, .. }), "a payment completes nothing");
        Ok(handlers::OrderOnPaymentCompleted::NoReply)
    }
    async fn on_shipment_booked(
        &self,
        _: &mut Tx,
        _: Envelope<ShipmentBooked>,
        step: OrderStep,
    ) -> Result<handlers::OrderOnShipmentBooked, Transient> {
        Ok(match step {
            OrderStep::Moved { to: OrderStatus::Completed, .. } => {
                handlers::OrderOnShipmentBooked::OrderCompleted(OrderCompleted { completed_at: chrono::Utc::now() })
            }
            _ => handlers::OrderOnShipmentBooked::NoReply,
        })
    }
    async fn on_shipment_failed(
        &self,
        _: &mut Tx,
        _: Envelope<ShipmentFailed>,
        _: OrderStep,
    ) -> Result<handlers::OrderOnShipmentFailed, Transient> {
        Ok(handlers::OrderOnShipmentFailed::NoReply)
    }
    async fn on_shipment_cancelled(
        &self,
        _: &mut Tx,
        _: Envelope<ShipmentCancelled>,
        _: OrderStep,
    ) -> Result<handlers::OrderOnShipmentCancelled, Transient> {
        Ok(handlers::OrderOnShipmentCancelled::NoReply)
    }
    async fn on_payment_fail(
        &self,
        _: &mut Tx,
        _: Envelope<PaymentFail>,
        _: OrderStep,
    ) -> Result<handlers::OrderOnPaymentFail, Transient> {
        Ok(handlers::OrderOnPaymentFail::NoReply)
    }
    async fn on_payment_refunded(
        &self,
        _: &mut Tx,
        _: Envelope<PaymentRefunded>,
        _: OrderStep,
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
async fn the_entry_command_records_the_first_status_and_publishes_its_event() {
    let mut tx = Tx::default();
    let cmd =
        CreateOrder { user_id: Uuid::now_v7(), items: vec![OrderItem { product_id: Uuid::now_v7(), quantity: 3 }] };
    let event = run_create_order(&Orders, &mut tx, cmd, TraceContext::default()).await.expect("runs");
    assert_eq!(event.payload.items[0].quantity, 3);
    assert_eq!(tx.sagas.get(&event.order_id), Some(&OrderStatus::Created));
    assert_eq!(tx.history, [(event.order_id, None, OrderStatus::Created, "order.created".to_owned())]);
    assert_eq!(tx.outbox.len(), 1);
    let rec = &tx.outbox[0];
    assert_eq!((rec.topic.as_str(), rec.event_type.as_str()), ("order-events", "order.created"));
    let TopicMessage::OrderEvents(msg) = TopicMessage::decode(&rec.topic, &rec.payload).expect("decodes") else {
        panic!("wrong topic")
    };
    assert_eq!(msg.event_id(), event.event_id);
    // The request carries the deadline the owner holds the saga to: the spec's 30 s in `created`.
    let deadline = event.deadline.expect("order.created carries its deadline");
    assert_eq!(tx.deadlines.get(&event.order_id), Some(&SystemTime::from(deadline)));
    let left = deadline - chrono::Utc::now();
    assert!(left > chrono::TimeDelta::seconds(25) && left <= chrono::TimeDelta::seconds(30), "{left}");
    let OrderEvents::OrderCreated(sent) = msg else { panic!("not order.created") };
    assert_eq!(sent.deadline, event.deadline);
    // The saga context is the command's, and travels in the message.
    let context = SagaContext { items: vec![OrderItem { product_id: event.payload.items[0].product_id, quantity: 3 }] };
    assert_eq!(sent.context, Some(context));

    let empty = CreateOrder { user_id: Uuid::now_v7(), items: vec![] };
    let mut tx = Tx::default();
    let err = run_create_order(&Orders, &mut tx, empty, TraceContext::default()).await;
    assert!(matches!(err, Err(CommandError::Handler(Transient))));
    assert!(tx.history.is_empty() && tx.outbox.is_empty(), "a rejected command records nothing");
}

/// A saga of the order service in `status`.
fn saga_in(tx: &mut Tx, status: OrderStatus) -> Uuid {
    let key = Uuid::now_v7();
    tx.sagas.insert(key, status);
    key
}

fn paid(key: Uuid) -> Vec<u8> {
    let e = Envelope::new(key, PaymentCompleted { user_id: Uuid::now_v7(), amount: Money(1) });
    e.encode().expect("encodes")
}

fn booked(key: Uuid) -> Vec<u8> {
    let e = Envelope::new(key, ShipmentBooked { tracking: "T1".into() });
    e.encode().expect("encodes")
}

fn reserved(key: Uuid) -> Vec<u8> {
    let e = Envelope::new(key, StockReductionSuccess { user_id: Uuid::now_v7(), amount: Money(1) });
    e.encode().expect("encodes")
}

#[tokio::test]
async fn order_moves_its_status_and_replies_to_shipment_booked_with_order_completed() {
    let mut tx = Tx::default();
    let key = saga_in(&mut tx, OrderStatus::InventoryReserved);
    let out = consume::<_, OrderInbound>(&Orders, &mut tx, "payment-events", &paid(key)).await.expect("dispatches");
    assert!(matches!(out, Some((_, None))), "a payment only moves the order to `paid`: {out:?}");
    assert_eq!(tx.sagas[&key], OrderStatus::Paid);
    let out = consume::<_, OrderInbound>(&Orders, &mut tx, "shipping-events", &booked(key)).await.expect("dispatches");
    let Some((_, Some(reply))) = out else { panic!("{out:?}") };
    assert_eq!(reply.event_type, "order.completed");
    assert_eq!(reply.partition_key, key.to_string());
    assert_eq!(tx.sagas[&key], OrderStatus::Completed);
    assert_eq!(
        tx.history,
        [
            (key, Some(OrderStatus::InventoryReserved), OrderStatus::Paid, "payment.completed".to_owned()),
            (key, Some(OrderStatus::Paid), OrderStatus::Completed, "shipment.booked".to_owned()),
        ]
    );
}

#[tokio::test]
async fn the_saga_context_reaches_a_later_step_through_every_reply() {
    // The command sets it; product's and user's replies copy it without naming it.
    let mut tx = Tx::default();
    let items = vec![
        OrderItem { product_id: Uuid::now_v7(), quantity: 4 },
        OrderItem { product_id: Uuid::now_v7(), quantity: 3 },
    ];
    let cmd = CreateOrder { user_id: Uuid::now_v7(), items: items.clone() };
    let created = run_create_order(&Orders, &mut tx, cmd, TraceContext::default()).await.expect("runs");
    let reservation = created.reply(StockReductionSuccess { user_id: created.payload.user_id, amount: Money(7) });
    let payment = reservation.reply(PaymentCompleted { user_id: created.payload.user_id, amount: Money(7) });
    assert_eq!(payment.context, Some(SagaContext { items }));

    for (max_units, expected) in [(7, "shipment.booked"), (6, "shipment.failed")] {
        let mut tx = Tx::default();
        let bytes = payment.encode().expect("encodes");
        let out = consume::<_, ShippingInbound>(&Shipping { max_units }, &mut tx, "payment-events", &bytes)
            .await
            .expect("dispatches");
        let Some((_, Some(reply))) = out else { panic!("{out:?}") };
        assert_eq!(reply.event_type, expected);
        assert_eq!(tx.log, [format!("7 units for {}", payment.order_id)]);
        let context = match ShippingEvents::decode(&reply.payload).expect("decodes") {
            ShippingEvents::ShipmentBooked(e) => e.context,
            ShippingEvents::ShipmentFailed(e) => e.context,
            other => panic!("{other:?}"),
        };
        assert_eq!(context, payment.context, "the reply carries the context on");
    }
}

#[tokio::test]
async fn an_event_of_a_saga_begun_before_the_context_reaches_its_reader_without_one() {
    // Written by a publisher older than `context:`: the handler is told so, and answers.
    let mut tx = Tx::default();
    let key = Uuid::now_v7();
    let out = consume::<_, ShippingInbound>(&Shipping { max_units: 10 }, &mut tx, "payment-events", &paid(key))
        .await
        .expect("handled");
    assert!(matches!(out, Some((_, None))), "{out:?}");
    assert_eq!(tx.log, [format!("unknown contents for {key}")]);
}

#[test]
fn an_event_a_timeout_emits_carries_no_context() {
    let cancelled = Envelope::new(
        Uuid::now_v7(),
        OrderCancelled { reason: types::CancelReason::TimedOut, status_at_cancel: "paid".into() },
    );
    assert_eq!(cancelled.context, None);
}

#[tokio::test]
async fn a_reply_that_overtakes_the_one_before_it_is_parked_then_applied() {
    let mut tx = Tx::default();
    let key = saga_in(&mut tx, OrderStatus::Created);
    let early = consume::<_, OrderInbound>(&Orders, &mut tx, "payment-events", &paid(key)).await.expect("parks");
    assert!(matches!(early, Some((_, None))), "parked, no reply yet: {early:?}");
    assert_eq!((tx.sagas[&key], tx.parked.len(), tx.history.len()), (OrderStatus::Created, 1, 0));

    let early = consume::<_, OrderInbound>(&Orders, &mut tx, "shipping-events", &booked(key)).await.expect("parks");
    assert!(matches!(early, Some((_, None))), "parked, no reply yet: {early:?}");
    assert_eq!((tx.sagas[&key], tx.parked.len(), tx.history.len()), (OrderStatus::Created, 2, 0));

    let out = consume::<_, OrderInbound>(&Orders, &mut tx, "inventory-events", &reserved(key)).await.expect("runs");
    assert!(matches!(out, Some((_, None))), "stock.reduction.success has no reply: {out:?}");
    assert_eq!(tx.sagas[&key], OrderStatus::Completed, "both parked replies were applied in the same transaction");
    assert!(tx.parked.is_empty());
    let steps: Vec<_> = tx.history.iter().map(|(_, from, to, event)| (*from, *to, event.as_str())).collect();
    assert_eq!(
        steps,
        [
            (Some(OrderStatus::Created), OrderStatus::InventoryReserved, "stock.reduction.success"),
            (Some(OrderStatus::InventoryReserved), OrderStatus::Paid, "payment.completed"),
            (Some(OrderStatus::Paid), OrderStatus::Completed, "shipment.booked"),
        ]
    );
    let published: Vec<_> = tx.outbox.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(published, ["order.completed"], "the parked event's reply is published");
}

#[tokio::test]
async fn an_event_the_spec_neither_accepts_nor_parks_is_unanswered_and_permanent() {
    // A second stock reply (another event id) in `inventory_reserved`: no transition takes
    // it, `status.parks` does not list it, the saga has not ended. `verify` proves the saga
    // never gets here; if it did, the message is dead-lettered at once, and nothing changes.
    let mut tx = Tx::default();
    let key = saga_in(&mut tx, OrderStatus::InventoryReserved);
    let out = consume::<_, OrderInbound>(&Orders, &mut tx, "inventory-events", &reserved(key)).await;
    let Err(Failed::Handler(error)) = out else { panic!("{out:?}") };
    assert!(
        matches!(error, HandleError::Unanswered { status: "inventory_reserved", event: "stock.reduction.success" }),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::Permanent);
    assert_eq!((tx.sagas[&key], tx.parked.len(), tx.history.len()), (OrderStatus::InventoryReserved, 0, 0));
}

#[tokio::test]
async fn a_parked_event_that_no_longer_decodes_stays_parked_and_fails_nothing() {
    let mut tx = Tx::default();
    let key = saga_in(&mut tx, OrderStatus::Created);
    let junk = ParkedEvent {
        event_id: Uuid::now_v7(),
        event_type: "payment.completed".into(),
        topic: "payment-events".into(),
        payload: b"written by a schema nobody knows any more".to_vec(),
    };
    tx.parked.push((key, junk.clone()));
    let out = consumer_result(&mut tx, "inventory-events", &reserved(key)).await;
    assert!(out.is_ok(), "the event in hand is applied: {out:?}");
    assert_eq!(tx.sagas[&key], OrderStatus::InventoryReserved);
    assert_eq!(tx.parked, [(key, junk)], "kept for an operator to see");
}

async fn consumer_result(
    tx: &mut Tx,
    topic: &str,
    bytes: &[u8],
) -> Result<Option<(EventMeta, Option<OutboxRecord>)>, Failed<HandleError<Transient>>> {
    consume::<_, OrderInbound>(&Orders, tx, topic, bytes).await
}

#[tokio::test]
async fn events_after_the_end_or_that_move_nothing_change_nothing() {
    let mut tx = Tx::default();
    let key = saga_in(&mut tx, OrderStatus::Cancelled);
    let late = consume::<_, OrderInbound>(&Orders, &mut tx, "payment-events", &paid(key)).await.expect("runs");
    assert!(matches!(late, Some((_, None))), "no order.completed for a cancelled order: {late:?}");
    assert_eq!((tx.sagas[&key], tx.history.len(), tx.parked.len()), (OrderStatus::Cancelled, 0, 0));

    let released = Envelope::new(key, StockReleased { items: vec![] }).encode().expect("encodes");
    consume::<_, OrderInbound>(&Orders, &mut tx, "inventory-events", &released).await.expect("runs");
    assert_eq!(tx.log, [format!("{:?}", OrderStep::Recorded { status: OrderStatus::Cancelled })]);
    assert!(tx.history.is_empty());

    let unknown = Uuid::now_v7();
    let out = consume::<_, OrderInbound>(&Orders, &mut tx, "payment-events", &paid(unknown)).await;
    assert!(matches!(out, Err(Failed::Handler(HandleError::UnknownSaga(k))) if k == unknown), "{out:?}");
    let Err(Failed::Handler(error)) = out else { unreachable!() };
    assert_eq!(error.class(), FailureClass::NotYet, "a saga not known yet may still be on its way");
}

#[tokio::test]
async fn overdue_sagas_time_out_one_at_a_time_as_the_spec_says() {
    let mut tx = Tx::default();
    let created = saga_in(&mut tx, OrderStatus::Created);
    let reserved = saga_in(&mut tx, OrderStatus::InventoryReserved);
    let on_time = saga_in(&mut tx, OrderStatus::Created);
    let ended = saga_in(&mut tx, OrderStatus::Completed);
    // Deadlines are judged at `as_of`, the sweeper's caught-up clock, not at the wall clock.
    let as_of = SystemTime::now() - Duration::from_secs(60);
    let past = as_of - Duration::from_secs(1);
    tx.deadlines =
        [(created, past), (reserved, past), (ended, past), (on_time, as_of + Duration::from_millis(1))].into();
    let mut resolved = Vec::new();
    while let Some(key) = OrderTimeouts(Orders).sweep_one(&mut tx, as_of, &[]).await.expect("runs") {
        resolved.push(key);
    }
    resolved.sort();
    let mut expected = vec![created, reserved];
    expected.sort();
    assert_eq!(resolved, expected, "terminal statuses never time out");
    assert_eq!(
        [tx.sagas[&created], tx.sagas[&reserved], tx.sagas[&on_time], tx.sagas[&ended]],
        [OrderStatus::Cancelled, OrderStatus::Cancelled, OrderStatus::Created, OrderStatus::Completed]
    );
    let cancelled: Vec<_> = tx.outbox.iter().map(|r| (r.event_type.as_str(), r.partition_key.clone())).collect();
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled.contains(&("order.cancelled", created.to_string())));
    assert!(tx.history.iter().all(|(_, _, to, event)| *to == OrderStatus::Cancelled && event == "order.cancelled"));

    // A saga passed over (it failed before) is left for later.
    let again = saga_in(&mut tx, OrderStatus::Created);
    tx.deadlines.insert(again, past);
    assert_eq!(OrderTimeouts(Orders).sweep_one(&mut tx, as_of, &[again]).await.expect("runs"), None);
    assert_eq!(tx.sagas[&again], OrderStatus::Created);
}

#[test]
fn topology_lists_what_the_runtime_needs() {
    let names: Vec<_> = topology::TOPICS.iter().map(|t| (t.name, t.partitions, t.dlq)).collect();
    assert_eq!(
        names,
        [
            ("order-events", 6, "order-events.dlq"),
            ("inventory-events", 6, "inventory-events.dlq"),
            ("payment-events", 6, "payment-events.dlq"),
            ("shipping-events", 6, "shipping-events.dlq")
        ]
    );
    let user = topology::consumer_group("user").expect("user consumes");
    assert_eq!(user.group_id, "order_fulfillment.user");
    assert_eq!(user.topics, ["order-events", "inventory-events", "shipping-events"], "spec order");
    assert_eq!(user.retry.max_attempts, 3);
    assert!(topology::SUBSCRIPTIONS.iter().any(|s| s.service == "product" && s.event_type == "payment.fail"));
    let services = [
        topology::ORDER_SERVICE.name,
        topology::PRODUCT_SERVICE.name,
        topology::USER_SERVICE.name,
        topology::SHIPPING_SERVICE.name,
    ];
    assert_eq!(services, topology::SERVICES, "one identity per service, in spec order");
    assert_eq!((topology::USER_SERVICE.ordinal, topology::USER_SERVICE.consumer_group), (2, user));
    assert_eq!(topology::ORDER_SERVICE.dlq_suffix, topology::DLQ_SUFFIX);
}

#[test]
fn observed_events_are_not_status_triggers() {
    assert!(OrderStatus::is_trigger(EventType::PaymentFail));
    assert!(!OrderStatus::is_trigger(EventType::StockReleased));
    assert!(!OrderStatus::is_trigger(EventType::PaymentRefunded));
}
