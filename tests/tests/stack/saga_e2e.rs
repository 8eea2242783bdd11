//! End-to-end saga tests through gRPC against the running stack's services.
//! Every test uses its own users and products, so they share the stack.

use saga_proto::order::{CreateOrderRequest, OrderItem};
use saga_tests::saga::{COMPLETED_PATH, Clients, header, messages_with_key, messages_with_keys, statuses};

#[tokio::test]
async fn happy_path_completes_with_full_history_and_an_order_completed_event() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let a = c.product(1_250, 10).await;
    let b = c.product(300, 5).await;

    // The caller's trace context (gRPC metadata) travels with every event.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = tonic::Request::new(CreateOrderRequest {
        user_id: buyer.user_id.clone(),
        items: vec![
            OrderItem { product_id: a.product_id.clone(), quantity: 2 },
            OrderItem { product_id: b.product_id.clone(), quantity: 3 },
        ],
        idempotency_key: saga_tests::unique("key"),
    });
    request.metadata_mut().insert("traceparent", traceparent.parse().expect("ascii"));
    let placed = c.order.create_order(request).await.expect("CreateOrder").into_inner().order.expect("order");
    assert_eq!(placed.status, "created");
    let done = c.wait_status(&placed.order_id, "completed").await;

    assert_eq!(statuses(&done), COMPLETED_PATH);
    assert_eq!(done.history[0].event_type, "order.created");
    assert_eq!(done.history[1].event_type, "stock.reduction.success");
    assert_eq!(done.history[2].event_type, "payment.completed");
    assert_eq!(done.history[3].event_type, "shipment.booked");
    // Priced by the product service: 2 x 1250 + 3 x 300.
    assert_eq!(done.total_minor, Some(3_400));
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 10_000 - 3_400);
    let a_now = c.get_product(&a.product_id).await;
    assert_eq!((a_now.stock_available, a_now.stock_reserved), (8, 2));

    let events = messages_with_key(&stack.kafka_brokers(), "order-events", &placed.order_id);
    let types: Vec<String> = events.iter().filter_map(|m| header(m, "event-type")).collect();
    assert!(types.contains(&"order.completed".to_owned()), "order-events of the order: {types:?}");
    let mut all = events;
    for topic in ["inventory-events", "payment-events", "shipping-events"] {
        all.extend(messages_with_key(&stack.kafka_brokers(), topic, &placed.order_id));
    }
    assert!(all.len() >= 5, "the saga's events: {}", all.len());
    for m in &all {
        assert_eq!(header(m, "traceparent").as_deref(), Some(traceparent), "{:?}", header(m, "event-type"));
    }
}

/// What `cargo xtask bench` splits a saga's latency with (its hops): every
/// consumer's inbox row keeps when the event was produced and received, and
/// PostgreSQL keeps each transaction's commit time.
#[tokio::test]
async fn every_handled_event_keeps_when_it_was_produced_received_and_committed() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let a = c.product(500, 10).await;
    let placed = c.order(&buyer, &[(&a, 1)]).await;
    c.wait_status(&placed.order_id, "completed").await;

    let databases: Vec<String> = saga_stack::config::services().iter().map(|s| s.database()).collect();
    let mut events: Vec<uuid::Uuid> = Vec::new();
    let mut pools = Vec::new();
    for database in &databases {
        let pool = sqlx::PgPool::connect(&stack.postgres_admin_url(database)).await.expect("connect");
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM outbox WHERE partition_key = $1")
            .bind(&placed.order_id)
            .fetch_all(&pool)
            .await
            .expect("outbox");
        events.extend(ids);
        pools.push(pool);
    }
    assert!(events.len() >= 5, "the saga's events: {events:?}");
    type Times = (
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    for (database, pool) in databases.iter().zip(&pools) {
        let rows: Vec<Times> = sqlx::query_as(
            "SELECT event_type, produced_at, received_at, processed_at, pg_xact_commit_timestamp(xmin) \
             FROM inbox WHERE event_id = ANY($1)",
        )
        .bind(&events)
        .fetch_all(pool)
        .await
        .expect("inbox");
        assert!(!rows.is_empty(), "{database} handled none of the saga's events");
        for (event, produced, received, processed, committed) in rows {
            let (produced, received, committed) = (
                produced.unwrap_or_else(|| panic!("{database}: {event} without its Kafka timestamp")),
                received.unwrap_or_else(|| panic!("{database}: {event} without its receive time")),
                committed.unwrap_or_else(|| panic!("{database}: {event}'s transaction without its commit time")),
            );
            // The Kafka timestamp is in whole milliseconds, cut down: never after the receipt.
            assert!(produced <= received, "{database}: {event} received at {received}, produced at {produced}");
            assert!(received <= processed, "{database}: {event} handled at {processed}, received at {received}");
            assert!(processed <= committed, "{database}: {event} committed at {committed}, began at {processed}");
        }
    }
}

#[tokio::test]
async fn insufficient_stock_fails_the_order_and_touches_nothing() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let plenty = c.product(100, 50).await;
    let scarce = c.product(100, 1).await;

    let placed = c.order(&buyer, &[(&plenty, 5), (&scarce, 2)]).await;
    let failed = c.wait_status(&placed.order_id, "inventory_reserved_failed").await;

    assert_eq!(failed.failure_reason, "insufficient_stock");
    assert_eq!(statuses(&failed), ["created", "inventory_reserved_failed"]);
    // All or nothing: the available product was not reserved either.
    let p = c.get_product(&plenty.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (50, 0));
    let s = c.get_product(&scarce.product_id).await;
    assert_eq!((s.stock_available, s.stock_reserved), (1, 0));
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 10_000);
}

#[tokio::test]
async fn insufficient_balance_fails_the_payment_and_releases_the_stock() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(500).await;
    let product = c.product(400, 10).await;

    let placed = c.order(&buyer, &[(&product, 2)]).await;
    let failed = c.wait_status(&placed.order_id, "payment_failed").await;

    assert_eq!(failed.failure_reason, "insufficient_balance");
    assert_eq!(statuses(&failed), ["created", "inventory_reserved", "payment_failed"]);
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 500);
    // The compensation gives the reservation back.
    let product_id = product.product_id.clone();
    let mut pc = c.clone();
    saga_tests::saga::eventually("stock to be released", || {
        let (mut pc, product_id) = (pc.clone(), product_id.clone());
        async move {
            let p = pc.get_product(&product_id).await;
            ((p.stock_available, p.stock_reserved) == (10, 0)).then_some(())
        }
    })
    .await;
    let p = pc.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (10, 0));
}

#[tokio::test]
async fn create_order_is_idempotent_on_its_key() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let product = c.product(100, 10).await;
    let request = CreateOrderRequest {
        user_id: buyer.user_id.clone(),
        items: vec![OrderItem { product_id: product.product_id.clone(), quantity: 1 }],
        idempotency_key: saga_tests::unique("key"),
    };
    let first = c.order.create_order(request.clone()).await.expect("first").into_inner();
    let second = c.order.create_order(request.clone()).await.expect("second").into_inner();
    assert!(first.created);
    assert!(!second.created);
    let (first, second) = (first.order.expect("order"), second.order.expect("order"));
    assert_eq!(first.order_id, second.order_id);

    // The same key for other content is refused.
    let mut other = request.clone();
    other.items[0].quantity = 2;
    let refused = c.order.create_order(other).await.expect_err("reused key");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);

    c.wait_status(&first.order_id, "completed").await;
    // One saga only: one unit reserved, one debit.
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (9, 1));
    assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 9_900);
}

#[tokio::test]
async fn every_event_delivered_twice_changes_nothing() {
    let stack = saga_tests::stack();
    let brokers = stack.kafka_brokers();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(1_000).await;
    let product = c.product(250, 10).await;
    // A completed, a failed-payment (with its release) and a failed-stock
    // saga cover every event type but the cancellation (see the timeout test).
    let ok = c.order(&buyer, &[(&product, 2)]).await;
    c.wait_status(&ok.order_id, "completed").await;
    let poor = c.order(&buyer, &[(&product, 3)]).await; // 750 > the 500 left
    c.wait_status(&poor.order_id, "payment_failed").await;
    let refused = c.order(&buyer, &[(&product, 50)]).await;
    c.wait_status(&refused.order_id, "inventory_reserved_failed").await;
    let product_id = product.product_id.clone();
    saga_tests::saga::eventually("the failed payment's stock to be released", || {
        let (mut c, product_id) = (c.clone(), product_id.clone());
        async move { (c.get_product(&product_id).await.stock_reserved == 2).then_some(()) }
    })
    .await;

    let before = (
        c.get_order(&ok.order_id).await,
        c.get_order(&poor.order_id).await,
        c.get_order(&refused.order_id).await,
        c.get_product(&product.product_id).await,
        c.get_user(&buyer.user_id).await,
    );

    let producer = saga_tests::producer(&brokers);
    let keys = [ok.order_id.as_str(), poor.order_id.as_str(), refused.order_id.as_str()];
    let topics = ["order-events", "inventory-events", "payment-events"];
    let mut seen_types = std::collections::BTreeSet::new();
    for topic in topics {
        for m in messages_with_keys(&brokers, topic, &keys) {
            seen_types.extend(header(&m, "event-type"));
            saga_tests::saga::reproduce(&producer, &m).await;
        }
    }
    assert!(seen_types.len() >= 7, "event types re-delivered: {seen_types:?}");
    // Re-read to learn where the copies landed, then wait for every group to
    // commit past the last message of each partition they are on.
    let mut last: std::collections::BTreeMap<(String, i32), i64> = std::collections::BTreeMap::new();
    for topic in topics {
        for m in messages_with_keys(&brokers, topic, &keys) {
            use rdkafka::Message;
            let entry = last.entry((topic.to_owned(), m.partition())).or_default();
            *entry = (*entry).max(m.offset());
        }
    }
    for ((topic, partition), offset) in &last {
        for group in saga_generated::topology::CONSUMER_GROUPS.iter().filter(|g| g.topics.contains(&topic.as_str())) {
            saga_tests::saga::wait_consumed(&brokers, group.group_id, topic, *partition, *offset).await;
        }
    }

    let after = (
        c.get_order(&ok.order_id).await,
        c.get_order(&poor.order_id).await,
        c.get_order(&refused.order_id).await,
        c.get_product(&product.product_id).await,
        c.get_user(&buyer.user_id).await,
    );
    assert_eq!(before.0.history, after.0.history);
    assert_eq!(before.1.history, after.1.history);
    assert_eq!(before.2.history, after.2.history);
    assert_eq!((before.3.stock_available, before.3.stock_reserved), (after.3.stock_available, after.3.stock_reserved));
    assert_eq!(before.4.balance_minor, after.4.balance_minor);
    assert_eq!(after.4.balance_minor, 500);
    assert_eq!((after.3.stock_available, after.3.stock_reserved), (8, 2));
}

#[tokio::test]
async fn a_hundred_concurrent_orders_for_twenty_units_reserve_exactly_twenty() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let product = c.product(150, 20).await;
    let mut buyers = Vec::new();
    for _ in 0..5 {
        buyers.push(c.user(100_000).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100 {
        let mut c = c.clone();
        let buyer = buyers[n % buyers.len()].clone();
        let product = product.clone();
        tasks.spawn(async move { c.order(&buyer, &[(&product, 1)]).await });
    }
    let mut orders = Vec::new();
    while let Some(order) = tasks.join_next().await {
        orders.push(order.expect("task"));
    }
    let mut completed_by_user = std::collections::BTreeMap::<String, i64>::new();
    let (mut completed, mut failed) = (0, 0);
    for order in &orders {
        let done = saga_tests::saga::eventually("a terminal status", || {
            let mut c = c.clone();
            let id = order.order_id.clone();
            async move {
                let o = c.get_order(&id).await;
                matches!(o.status.as_str(), "completed" | "inventory_reserved_failed").then_some(o)
            }
        })
        .await;
        if done.status == "completed" {
            completed += 1;
            *completed_by_user.entry(done.user_id.clone()).or_default() += 1;
        } else {
            failed += 1;
        }
    }
    assert_eq!((completed, failed), (20, 80));
    let p = c.get_product(&product.product_id).await;
    assert_eq!((p.stock_available, p.stock_reserved), (0, 20));
    for buyer in &buyers {
        let n = completed_by_user.get(&buyer.user_id).copied().unwrap_or(0);
        assert_eq!(c.get_user(&buyer.user_id).await.balance_minor, 100_000 - 150 * n);
    }
}

/// The shipping rule: one parcel takes at most 50 units. A larger order is paid, then
/// refused by shipping: the order ends `shipping_failed` with the reason, the payment is
/// refunded and the stock released, each once.
#[tokio::test]
async fn a_parcel_too_large_fails_the_shipping_refunds_the_payment_and_releases_the_stock() {
    let stack = saga_tests::stack();
    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(100_000).await;
    let a = c.product(10, 100).await;
    let b = c.product(20, 100).await;

    let placed = c.order(&buyer, &[(&a, 30), (&b, 21)]).await;
    let failed = c.wait_status(&placed.order_id, "shipping_failed").await;
    assert_eq!(statuses(&failed), ["created", "inventory_reserved", "paid", "shipping_failed"]);
    assert_eq!(failed.failure_reason, "parcel_too_large");
    let last = failed.history.last().expect("history");
    assert_eq!((last.event_type.as_str(), last.reason.as_str()), ("shipment.failed", "parcel_too_large"));

    let (user_id, ids) = (buyer.user_id.clone(), [a.product_id.clone(), b.product_id.clone()]);
    saga_tests::saga::eventually("the payment refunded and the stock released", || {
        let (mut c, user_id, ids) = (c.clone(), user_id.clone(), ids.clone());
        async move {
            let balance = c.get_user(&user_id).await.balance_minor;
            let (a, b) = (c.get_product(&ids[0]).await, c.get_product(&ids[1]).await);
            let stock = [(a.stock_available, a.stock_reserved), (b.stock_available, b.stock_reserved)];
            (balance == 100_000 && stock == [(100, 0), (100, 0)]).then_some(())
        }
    })
    .await;
    let brokers = stack.kafka_brokers();
    let kinds = |topic: &str| -> Vec<String> {
        messages_with_key(&brokers, topic, &placed.order_id).iter().filter_map(|m| header(m, "event-type")).collect()
    };
    saga_tests::saga::eventually("the compensations published", || {
        let done = kinds("payment-events").contains(&"payment.refunded".to_owned())
            && kinds("inventory-events").contains(&"stock.released".to_owned());
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(kinds("shipping-events"), ["shipment.failed"]);
    let payments = kinds("payment-events");
    assert_eq!(payments.iter().filter(|k| *k == "payment.refunded").count(), 1, "{payments:?}");
    let stock = kinds("inventory-events");
    assert_eq!(stock.iter().filter(|k| *k == "stock.released").count(), 1, "{stock:?}");
}
