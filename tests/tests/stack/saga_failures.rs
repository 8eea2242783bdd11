//! Failure paths that stop, kill or poison services. Each test runs its own
//! private saga (service processes, databases, prefixed topics), so the
//! stack's shared services are never disturbed.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use saga_generated::types::{OrderItem, StockFailure};
use saga_generated::{
    Envelope, Money, OrderCreated, PaymentCompleted, ShipmentBooked, StockReductionFail, StockReductionSuccess,
};
use saga_tests::saga::{COMPLETED_PATH, PrivateSaga, header, messages_with_key, statuses};

/// Timeouts at 25 %: 7.5 s in `created` (room for a busy product service to
/// reserve first), 15 s in `inventory_reserved`; a sweep every 200 ms.
const SHORT_TIMEOUTS: [(&str, &str); 2] = [("ORDER_TIMEOUT_SCALE_PERCENT", "25"), ("ORDER_SWEEP_INTERVAL_MS", "200")];

#[tokio::test]
async fn a_stuck_saga_times_out_with_compensation_and_the_late_reply_changes_nothing() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &SHORT_TIMEOUTS).await;
    let mut c = saga.clients().await;
    let buyer = c.user(1_000).await;
    let product = c.product(100, 5).await;

    saga.stop("user").await; // graceful: must exit 0 on SIGTERM
    let placed = c.order(&buyer, &[(&product, 2)]).await;
    c.wait_status(&placed.order_id, "inventory_reserved").await;
    let cancelled = c.wait_status(&placed.order_id, "cancelled").await;
    assert_eq!(statuses(&cancelled), ["created", "inventory_reserved", "cancelled"]);
    let last = cancelled.history.last().expect("history");
    assert_eq!((last.event_type.as_str(), last.reason.as_str()), ("order.cancelled", "timed_out"));
    assert_eq!(cancelled.failure_reason, "timed_out");

    // The product service released the reservation (compensation).
    let product_id = product.product_id.clone();
    saga_tests::saga::eventually("stock released after the timeout", || {
        let (mut c, id) = (c.clone(), product_id.clone());
        async move {
            let p = c.get_product(&id).await;
            ((p.stock_available, p.stock_reserved) == (5, 0)).then_some(())
        }
    })
    .await;

    // The user service comes back and sees the stale payment request and the
    // cancellation: whatever their order, no money is lost.
    saga.restart(&stack, "user").await;
    for topic in ["inventory-events", "order-events"] {
        for m in messages_with_key(&saga.brokers, &saga.topic(topic), &placed.order_id) {
            saga_tests::saga::wait_consumed(&saga.brokers, &saga.group("user"), m.topic(), m.partition(), m.offset())
                .await;
        }
    }
    // And the order service saw whatever the user service replied.
    for m in messages_with_key(&saga.brokers, &saga.topic("payment-events"), &placed.order_id) {
        saga_tests::saga::wait_consumed(&saga.brokers, &saga.group("order"), m.topic(), m.partition(), m.offset())
            .await;
    }
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 1_000);
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (5, 0));
    let after = c.get_order(&placed.order_id).await;
    assert_eq!(after.status, "cancelled");
    assert_eq!(after.history, cancelled.history);
    saga.shutdown(&stack).await;
}

/// The platform's own outage must not decide an outcome. The order
/// service's database is away until well past the order's deadline while
/// the reply that moves the order waits in Kafka: its caught-up clock stands
/// still meanwhile, so once the database is back the reply is applied and
/// the order completes instead of timing out (a wall-clock sweeper cancelled
/// it the moment the database returned).
#[tokio::test]
async fn an_outage_past_the_deadline_does_not_cancel_an_order_whose_reply_waits_in_kafka() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &SHORT_TIMEOUTS).await;
    let database = saga.proxy_database(&stack, "order").await;
    let mut c = saga.clients().await;
    let buyer = c.user(1_000).await;
    let product = c.product(100, 5).await;

    // The product service is away when the order is placed, so the saga waits in `created`.
    saga.stop("product").await;
    let placed = c.order(&buyer, &[(&product, 2)]).await;
    let placed_at = tokio::time::Instant::now();
    saga_tests::saga::wait_published(&saga.brokers, &saga.topic("order-events"), &placed.order_id).await;
    database.cut();
    // Meanwhile a request it cannot serve is UNAVAILABLE (the gateway's 503
    // with Retry-After), not an opaque INTERNAL.
    let request = saga_proto::order::GetOrderRequest { order_id: placed.order_id.clone() };
    let refused = c.order.clone().get_order(request).await.expect_err("the order database is away");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    saga.restart(&stack, "product").await;
    saga_tests::saga::wait_published(&saga.brokers, &saga.topic("inventory-events"), &placed.order_id).await;
    // The deadline passes while the order service cannot read its database.
    tokio::time::sleep_until(placed_at + Duration::from_secs(15)).await;
    database.restore();

    let order_id = placed.order_id.clone();
    let ended = saga_tests::saga::eventually("the order to end", || {
        let (mut c, id) = (c.clone(), order_id.clone());
        async move {
            let order = c.get_order(&id).await;
            ["completed", "cancelled"].contains(&order.status.as_str()).then_some(order)
        }
    })
    .await;
    assert_eq!(statuses(&ended), COMPLETED_PATH, "the outage decided the outcome");
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 800);
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (3, 2));
    drop(database);
    saga.shutdown(&stack).await;
}

/// A request that reaches a participant after the order service gave up on
/// its saga is shed, not worked and then undone: the product service
/// reserves nothing and answers `stock.reduction.fail` with
/// `deadline_passed` (the reason the spec declares), and the order stays
/// cancelled with its history untouched.
#[tokio::test]
async fn a_request_whose_saga_the_owner_gave_up_on_is_shed() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &SHORT_TIMEOUTS).await;
    let mut c = saga.clients().await;
    let buyer = c.user(1_000).await;
    let product = c.product(100, 5).await;

    saga.stop("product").await;
    let placed = c.order(&buyer, &[(&product, 2)]).await;
    let cancelled = c.wait_status(&placed.order_id, "cancelled").await;
    // The order service's clock runs on (the product service's silence holds
    // nothing back); the request is shed once it is well past the deadline.
    tokio::time::sleep(saga_runtime::caught_up::SHED_AFTER).await;
    saga.restart(&stack, "product").await;
    for m in messages_with_key(&saga.brokers, &saga.topic("order-events"), &placed.order_id) {
        saga_tests::saga::wait_consumed(&saga.brokers, &saga.group("product"), m.topic(), m.partition(), m.offset())
            .await;
    }

    let replies = messages_with_key(&saga.brokers, &saga.topic("inventory-events"), &placed.order_id);
    let types: Vec<String> = replies.iter().filter_map(|m| header(m, "event-type")).collect();
    assert_eq!(types, ["stock.reduction.fail"], "shed: nothing reserved, so nothing to release");
    let reply = Envelope::<StockReductionFail>::decode(replies[0].payload().expect("payload")).expect("decodes");
    assert_eq!(reply.payload.reason, StockFailure::DeadlinePassed);
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (5, 0));
    let products = sqlx::PgPool::connect(&saga.database_url(&stack, "product")).await.expect("product database");
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, reason FROM reservations WHERE order_id = $1::uuid")
            .bind(&placed.order_id)
            .fetch_one(&products)
            .await
            .expect("the shed reservation");
    assert_eq!((status.as_str(), reason.as_deref()), ("rejected", Some("deadline_passed")));
    products.close().await;

    // The order service saw the reply; the cancelled order stays as it was.
    saga_tests::saga::wait_consumed(
        &saga.brokers,
        &saga.group("order"),
        replies[0].topic(),
        replies[0].partition(),
        replies[0].offset(),
    )
    .await;
    let after = c.get_order(&placed.order_id).await;
    assert_eq!((after.status.as_str(), &after.history), ("cancelled", &cancelled.history));
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 1_000);
    saga.shutdown(&stack).await;
}

#[tokio::test]
async fn a_service_killed_mid_saga_and_restarted_completes_it_once() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let mut c = saga.clients().await;
    let buyer = c.user(10_000).await;
    let product = c.product(700, 10).await;

    // The product service dies with the order just written.
    let first = c.order(&buyer, &[(&product, 1)]).await;
    saga.kill("product").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    saga.restart(&stack, "product").await;
    c.wait_status(&first.order_id, "completed").await;

    // The user service dies before it can pay.
    saga.kill("user").await;
    let second = c.order(&buyer, &[(&product, 2)]).await;
    c.wait_status(&second.order_id, "inventory_reserved").await;
    saga.restart(&stack, "user").await;
    let done = c.wait_status(&second.order_id, "completed").await;
    assert_eq!(statuses(&done), COMPLETED_PATH);

    // Nothing twice: three units reserved, three paid.
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (7, 3));
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 10_000 - 3 * 700);
    saga.shutdown(&stack).await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dlq_and_its_partition_moves_on() {
    let stack = saga_tests::stack();
    let saga = PrivateSaga::start(&stack, &[]).await;
    let mut c = saga.clients().await;
    let buyer = c.user(10_000).await;
    let product = c.product(100, 10).await;
    let warmup = c.order(&buyer, &[(&product, 1)]).await;
    c.wait_status(&warmup.order_id, "completed").await;

    let topic = saga.topic("order-events");
    let created = messages_with_key(&saga.brokers, &topic, &warmup.order_id);
    let partition = created.first().expect("order.created on order-events").partition();
    let producer = saga_tests::producer(&saga.brokers);

    // Garbage, then a valid order.created, on the same partition.
    let poison_key = saga_tests::unique("poison");
    producer
        .send(
            FutureRecord::to(&topic).partition(partition).key(&poison_key).payload(b"definitely not avro".as_slice()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("poison produced");
    let next_order = uuid::Uuid::now_v7();
    let next = Envelope::new(
        next_order,
        OrderCreated {
            user_id: uuid::Uuid::parse_str(&buyer.user_id).expect("uuid"),
            items: vec![OrderItem {
                product_id: uuid::Uuid::parse_str(&product.product_id).expect("uuid"),
                quantity: 3,
            }],
            created_at: chrono_now(),
        },
    );
    let bytes = next.encode().expect("encodes");
    let key = next.partition_key();
    producer
        .send(FutureRecord::to(&topic).partition(partition).key(&key).payload(&bytes), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("next produced");

    // The next message was processed: its three units are reserved.
    let product_id = product.product_id.clone();
    saga_tests::saga::eventually("the message after the poison to be processed", || {
        let (mut c, id) = (c.clone(), product_id.clone());
        async move { (c.get_product(&id).await.stock_reserved == 4).then_some(()) }
    })
    .await;

    // The poison is in the DLQ, with headers saying why and where from.
    let dlq = saga.topic("order-events.dlq");
    let dead = saga_tests::saga::eventually("the poison in the DLQ", || {
        let (brokers, dlq, key) = (saga.brokers.clone(), dlq.clone(), poison_key.clone());
        async move {
            let found = tokio::task::spawn_blocking(move || messages_with_key(&brokers, &dlq, &key)).await.ok()?;
            found
                .into_iter()
                .find(|m| header(m, "dlq-consumer-group").is_some_and(|g| g.ends_with("order_fulfillment.product")))
        }
    })
    .await;
    assert_eq!(header(&dead, "dlq-reason").as_deref(), Some("undecodable"));
    assert_eq!(header(&dead, "dlq-original-topic").as_deref(), Some("order-events"));
    assert_eq!(header(&dead, "dlq-original-partition"), Some(partition.to_string()));
    assert_eq!(header(&dead, "dlq-attempts").as_deref(), Some("1"));
    assert!(header(&dead, "dlq-error").is_some_and(|e| !e.is_empty()));
    assert_eq!(dead.payload(), Some(b"definitely not avro".as_slice()));

    // The order service never saw that order: its replies are retried, then
    // parked in the DLQ (never silently dropped).
    let parked = saga_tests::saga::eventually("the unknown order's reply parked in the DLQ", || {
        let (brokers, dlq, key) = (saga.brokers.clone(), saga.topic("inventory-events.dlq"), next_order.to_string());
        async move {
            let found = tokio::task::spawn_blocking(move || messages_with_key(&brokers, &dlq, &key)).await.ok()?;
            found.into_iter().find(|m| header(m, "dlq-consumer-group").is_some_and(|g| g.ends_with(".order")))
        }
    })
    .await;
    assert_eq!(header(&parked, "dlq-reason").as_deref(), Some("retries-exhausted"));
    assert_eq!(header(&parked, "dlq-attempts").as_deref(), Some("5"));
    saga.shutdown(&stack).await;
}

/// An event of a later version of the saga that no running consumer knows (a
/// new event on a topic they read, published by an upgraded service that
/// registered its schema first) is skipped by every consumer of the topic,
/// not dead-lettered: their own spec subscribes to nothing of the kind. An
/// event nobody registered stays poison (the test above).
#[tokio::test]
async fn an_event_of_a_later_version_that_no_consumer_knows_is_skipped_not_dead_lettered() {
    let stack = saga_tests::stack();
    let saga = PrivateSaga::start(&stack, &[]).await;
    let gift = serde_json::json!({
        "type": "record", "name": "GiftWrapped", "namespace": "platform.saga.order_fulfillment",
        "fields": [{"name": "order_id", "type": "string"}, {"name": "paper", "type": "string"}]
    });
    let fingerprint = saga_wire::canonical::fingerprint(&gift).expect("canonical form");
    let schema = apache_avro::Schema::parse(&gift).expect("a schema");
    let key = uuid::Uuid::now_v7().to_string();
    let value = apache_avro::types::Value::Record(vec![
        ("order_id".into(), apache_avro::types::Value::String(key.clone())),
        ("paper".into(), apache_avro::types::Value::String("red".into())),
    ]);
    let mut bytes = saga_wire::SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(&fingerprint);
    bytes.extend(apache_avro::to_avro_datum(&schema, value).expect("encodes"));

    // What the upgraded publisher does: register, then publish.
    let producer = saga_tests::producer(&saga.brokers);
    let schema_key = saga_runtime::schema_registry::key_of(&fingerprint);
    let schema_topic = saga.topic(saga_generated::topology::SCHEMA_TOPIC);
    let registered = gift.to_string();
    producer
        .send(FutureRecord::to(&schema_topic).key(&schema_key).payload(&registered), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("registered");
    let topic = saga.topic("order-events");
    let delivery = producer
        .send(FutureRecord::to(&topic).key(&key).payload(&bytes), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("published");

    for group in saga_generated::topology::CONSUMER_GROUPS.iter().filter(|g| g.topics.contains(&"order-events")) {
        let group = saga.group(group.service);
        saga_tests::saga::wait_consumed(&saga.brokers, &group, &topic, delivery.partition, delivery.offset).await;
    }
    let dead = messages_with_key(&saga.brokers, &saga.topic("order-events.dlq"), &key);
    assert!(dead.is_empty(), "an event of a later version was dead-lettered: {} message(s)", dead.len());
    saga.shutdown(&stack).await;
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Publishes `envelope` on the private saga's copy of its topic, keyed by the
/// order like the relay does; returns where it landed.
async fn publish<E: saga_generated::Event>(saga: &PrivateSaga, envelope: &Envelope<E>) -> (String, i32, i64) {
    let record = envelope.to_outbox().expect("encode");
    let topic = saga.topic(&record.topic);
    let producer = saga_tests::producer(&saga.brokers);
    let delivery = producer
        .send(FutureRecord::to(&topic).key(&record.partition_key).payload(&record.payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    (topic, delivery.partition, delivery.offset)
}

/// A message a handler rejects for good is dead-lettered at once; once the
/// handler is fixed, `cargo xtask dlq redrive` sends it back and its saga
/// completes, exactly once, even if it is redriven again. (The "bug" is a
/// trigger in the product service's database that refuses one product's
/// reservation: to the handler, a permanent error like any other.)
#[tokio::test]
async fn a_poison_message_redriven_after_the_fix_completes_its_saga_exactly_once() {
    let stack = saga_tests::stack();
    let saga = PrivateSaga::start(&stack, &[]).await;
    let mut c = saga.clients().await;
    let buyer = c.user(1_000).await;
    let product = c.product(100, 5).await;
    let products = sqlx::PgPool::connect(&saga.database_url(&stack, "product")).await.expect("product database");
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION handler_bug() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'handler bug: cannot reserve %', NEW.product_id; END $$; \
         CREATE TRIGGER handler_bug BEFORE INSERT ON reservation_items FOR EACH ROW \
           WHEN (NEW.product_id = '{}') EXECUTE FUNCTION handler_bug();",
        product.product_id
    ))
    .execute(&products)
    .await
    .expect("the bug is deployed");

    let placed = c.order(&buyer, &[(&product, 2)]).await;
    let dlq = saga.topic("order-events.dlq");
    let dead = saga_tests::saga::eventually("the rejected order.created in the DLQ", || {
        let (brokers, dlq, key) = (saga.brokers.clone(), dlq.clone(), placed.order_id.clone());
        async move {
            let found = tokio::task::spawn_blocking(move || messages_with_key(&brokers, &dlq, &key)).await.ok()?;
            found.into_iter().next()
        }
    })
    .await;
    assert_eq!(header(&dead, "dlq-reason").as_deref(), Some("permanent"), "a handler error is no outage");
    assert_eq!(header(&dead, "dlq-attempts").as_deref(), Some("1"), "dead-lettered at once, not retried");
    assert!(header(&dead, "dlq-error").is_some_and(|e| e.contains("handler bug")), "{:?}", header(&dead, "dlq-error"));
    assert_eq!(c.get_order(&placed.order_id).await.status, "created");

    // The fix is deployed, then the dead letters are redriven with the operator's command.
    sqlx::raw_sql("DROP TRIGGER handler_bug ON reservation_items; DROP FUNCTION handler_bug();")
        .execute(&products)
        .await
        .expect("the fix is deployed");
    let redrive = || {
        let output = std::process::Command::new(stack.binary("saga-tools"))
            .args(["dlq", "redrive", "order-events", "--prefix", &saga.prefix])
            .output()
            .expect("xtask runs");
        assert!(output.status.success(), "redrive failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = redrive();
    assert!(first.contains("redriven 1 message(s)"), "{first}");
    let done = c.wait_status(&placed.order_id, "completed").await;
    assert_eq!(statuses(&done), COMPLETED_PATH);

    // Redriving again finds nothing new; a copy re-produced by hand is a duplicate the inbox drops.
    assert!(redrive().contains("nothing to redrive"));
    saga_tests::saga::reproduce_to(&saga_tests::producer(&saga.brokers), &dead, &saga.topic("order-events")).await;
    let copies = messages_with_key(&saga.brokers, &saga.topic("order-events"), &placed.order_id);
    let last = copies.last().expect("the copy on order-events");
    saga_tests::saga::wait_consumed(
        &saga.brokers,
        &saga.group("product"),
        last.topic(),
        last.partition(),
        last.offset(),
    )
    .await;
    // Exactly once: one reservation, one debit, one history.
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (3, 2));
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 800);
    assert_eq!(c.get_order(&placed.order_id).await.history, done.history);
    products.close().await;
    saga.shutdown(&stack).await;
}

#[tokio::test]
async fn a_reply_that_overtakes_the_one_before_it_is_parked_then_applied() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let mut c = saga.clients().await;
    let buyer = c.user(1_000).await;
    let product = c.product(100, 5).await;
    // Only the order service runs: the stock, payment and shipping replies are ours.
    saga.stop("product").await;
    saga.stop("user").await;
    saga.stop("shipping").await;
    let placed = c.order(&buyer, &[(&product, 2)]).await;
    let order_id: uuid::Uuid = placed.order_id.parse().expect("uuid");
    let user_id: uuid::Uuid = buyer.user_id.parse().expect("uuid");

    // shipment.booked, then payment.completed first: the replies travel on different
    // topics, which Kafka does not order against each other.
    let shipped = Envelope::new(order_id, ShipmentBooked { tracking: "PCL-EARLY".into() });
    let (topic, partition, offset) = publish(&saga, &shipped).await;
    saga_tests::saga::wait_consumed(&saga.brokers, &saga.group("order"), &topic, partition, offset).await;
    let paid = Envelope::new(order_id, PaymentCompleted { user_id, amount: Money(200) });
    let (topic, partition, offset) = publish(&saga, &paid).await;
    saga_tests::saga::wait_consumed(&saga.brokers, &saga.group("order"), &topic, partition, offset).await;
    let early = c.get_order(&placed.order_id).await;
    assert_eq!(statuses(&early), ["created"], "the early replies move nothing yet");

    // The stock reply arrives: the order moves on, and both parked replies with it.
    let reserved = Envelope::new(order_id, StockReductionSuccess { user_id, amount: Money(200) });
    publish(&saga, &reserved).await;
    let done = c.wait_status(&placed.order_id, "completed").await;
    assert_eq!(statuses(&done), COMPLETED_PATH);
    assert_eq!(done.history[2].event_id, paid.event_id.to_string());
    assert_eq!(done.history[3].event_id, shipped.event_id.to_string());
    let completed = saga_tests::saga::eventually("order.completed on order-events", || {
        let (brokers, topic, key) = (saga.brokers.clone(), saga.topic("order-events"), placed.order_id.clone());
        async move {
            let messages = messages_with_key(&brokers, &topic, &key);
            let types: Vec<String> = messages.iter().filter_map(|m| header(m, "event-type")).collect();
            types.iter().any(|t| t == "order.completed").then_some(types)
        }
    })
    .await;
    assert_eq!(completed.iter().filter(|t| *t == "order.completed").count(), 1, "{completed:?}");
    saga.shutdown(&stack).await;
}

/// A saga paid but never shipped (the shipping service is down) times out in `paid`: the
/// order is cancelled, the payment refunded and the stock released. When shipping comes
/// back, whichever of the payment and the cancellation it reads first, no parcel stays
/// booked for the cancelled order, and the order's history does not change.
#[tokio::test]
async fn a_saga_waiting_for_shipping_times_out_and_no_parcel_stays_booked() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &SHORT_TIMEOUTS).await;
    let mut c = saga.clients().await;
    let buyer = c.user(1_000).await;
    let product = c.product(100, 5).await;

    saga.stop("shipping").await;
    let placed = c.order(&buyer, &[(&product, 2)]).await;
    c.wait_status(&placed.order_id, "paid").await;
    let cancelled = c.wait_status(&placed.order_id, "cancelled").await;
    assert_eq!(statuses(&cancelled), ["created", "inventory_reserved", "paid", "cancelled"]);
    assert_eq!(cancelled.failure_reason, "timed_out");
    let (user_id, product_id) = (buyer.user_id.clone(), product.product_id.clone());
    saga_tests::saga::eventually("refund and release after the timeout", || {
        let (mut c, user_id, product_id) = (c.clone(), user_id.clone(), product_id.clone());
        async move {
            let p = c.get_product(&product_id).await;
            let balance = c.get_user(&user_id).await.balance_minor;
            (balance == 1_000 && (p.stock_available, p.stock_reserved) == (5, 0)).then_some(())
        }
    })
    .await;

    saga.restart(&stack, "shipping").await;
    for topic in ["payment-events", "order-events"] {
        for m in messages_with_key(&saga.brokers, &saga.topic(topic), &placed.order_id) {
            saga_tests::saga::wait_consumed(
                &saga.brokers,
                &saga.group("shipping"),
                m.topic(),
                m.partition(),
                m.offset(),
            )
            .await;
        }
    }
    let shipping = messages_with_key(&saga.brokers, &saga.topic("shipping-events"), &placed.order_id);
    let kinds: Vec<String> = shipping.iter().filter_map(|m| header(m, "event-type")).collect();
    // Payment first: booked, then cancelled by the compensation. Cancellation first: its
    // tombstone makes the payment book nothing.
    assert!(
        kinds.is_empty() || kinds == ["shipment.booked", "shipment.cancelled"],
        "a parcel stays booked for a cancelled order: {kinds:?}"
    );
    let db = sqlx::PgPool::connect(&saga.database_url(&stack, "shipping")).await.expect("shipping database");
    let status: String = sqlx::query_scalar("SELECT status FROM shipments WHERE order_id = $1::uuid")
        .bind(&placed.order_id)
        .fetch_one(&db)
        .await
        .expect("the order is known to shipping");
    assert_eq!(status, "cancelled");
    for m in &shipping {
        saga_tests::saga::wait_consumed(&saga.brokers, &saga.group("order"), m.topic(), m.partition(), m.offset())
            .await;
    }
    let after = c.get_order(&placed.order_id).await;
    assert_eq!((after.status.as_str(), &after.history), ("cancelled", &cancelled.history));
    saga.shutdown(&stack).await;
}
