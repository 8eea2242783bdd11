//! Spec evolution on the real stack: an event written by the previous version
//! of the spec, still in an outbox when the new version starts, is handled by
//! the running services and its saga completes; an event written by a *newer*
//! version, deployed before its consumers, is handled too, its schema looked
//! up on the saga's schema topic; and the status owner's migrations move the
//! orders of a removed state at start, all or nothing, each with a history
//! row.

use saga_generated::commands::{CreateOrder, run_create_order};
use saga_generated::status::StatusMigration;
use saga_generated::types::OrderItem;
use saga_generated::{Event, OrderCreated, OrderStatus, TraceContext};
use saga_tests::saga::{PrivateSaga, messages_with_key};
use sqlx::Row;
use uuid::Uuid;

use order_service::saga::{CommandTx, OrderSaga, Timeouts, migrate_statuses};

const SPEC_TIMEOUTS: Timeouts = Timeouts { scale_percent: 100 };

/// Places an order for two units of `product` while the order service is
/// stopped, as another version of it would have: its `order.created` waits in
/// the outbox, as `encode` writes it. Returns the event as this version sees it.
async fn place_order_written_by(
    saga: &mut PrivateSaga,
    stack: &saga_stack::StackConfig,
    buyer: &str,
    product: &str,
    encode: impl FnOnce(&saga_generated::Envelope<OrderCreated>) -> Vec<u8>,
) -> saga_generated::Envelope<OrderCreated> {
    saga.stop("order").await;
    let pool = sqlx::PgPool::connect(&saga.database_url(stack, "order")).await.expect("order database");
    let mut ctx = CommandTx {
        tx: pool.begin().await.expect("begin"),
        idempotency_key: format!("evolution-{}", Uuid::now_v7()),
        fingerprint: "written by another version".to_owned(),
        traceparent: saga_process::trace::new_traceparent(),
    };
    let command = CreateOrder {
        user_id: buyer.parse().expect("a user id"),
        items: vec![OrderItem { product_id: product.parse().expect("a product id"), quantity: 2 }],
    };
    let created = run_create_order(&OrderSaga::new(SPEC_TIMEOUTS), &mut ctx, command, TraceContext::default())
        .await
        .expect("the order is placed");
    let rewritten = sqlx::query("UPDATE outbox SET payload = $1 WHERE event_id = $2")
        .bind(encode(&created))
        .bind(created.event_id)
        .execute(&mut *ctx.tx)
        .await
        .expect("rewrite the outbox row");
    assert_eq!(rewritten.rows_affected(), 1);
    ctx.tx.commit().await.expect("commit");
    pool.close().await;
    created
}

/// Starts the order service again, which publishes the order; checks that its
/// saga completed with the buyer charged and the stock taken, that the
/// `order.created` on the wire had `fingerprint`, and that nothing of the saga
/// was dead-lettered.
async fn completes_as_written(
    saga: &mut PrivateSaga,
    stack: &saga_stack::StackConfig,
    c: &mut saga_tests::saga::Clients,
    (order_id, buyer, product): (&str, &str, &str),
    fingerprint: [u8; 8],
) {
    saga.restart(stack, "order").await;
    let done = c.wait_status(order_id, "completed").await;
    assert_eq!(done.total_minor, Some(500));
    let published = messages_with_key(&saga.brokers, &saga.topic("order-events"), order_id);
    let first = published.first().and_then(rdkafka::Message::payload).expect("order.created was published");
    assert_eq!(saga_wire::fingerprint_of(first).ok(), Some(fingerprint), "that version was on the wire");
    assert_eq!(c.get_user(buyer).await.balance_minor, 10_000 - 500);
    assert_eq!(c.get_product(product).await.stock_available, 1);
    for topic in saga_generated::topology::TOPICS {
        let dead = messages_with_key(&saga.brokers, &saga.topic(topic.dlq), order_id);
        assert!(dead.is_empty(), "nothing of the saga was dead-lettered on {}", topic.dlq);
    }
}

#[tokio::test]
async fn an_order_created_written_by_the_previous_schema_version_completes_its_saga() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let mut c = saga.clients().await;
    let buyer = c.user(10_000).await;
    let product = c.product(250, 3).await;

    // The previous version of the order service placed this order, written
    // with the previous schema; the current version publishes it.
    let previous = {
        let versions = OrderCreated::schemas().versions();
        assert!(versions.len() >= 2, "order.created has an earlier version");
        &versions[versions.len() - 2]
    };
    let created = place_order_written_by(&mut saga, &stack, &buyer.user_id, &product.product_id, |created| {
        saga_wire::testing::encoded_with(previous, created.to_avro_value()).expect("encodes with the previous version")
    })
    .await;
    let ids = (created.order_id.to_string(), buyer.user_id, product.product_id);
    completes_as_written(&mut saga, &stack, &mut c, (&ids.0, &ids.1, &ids.2), previous.fingerprint).await;
    saga.shutdown(&stack).await;
}

/// The order service of the next version of the spec was deployed first: its
/// `order.created` gains a field, written with a schema no consumer was built
/// with. It registered that schema on the schema topic before it published,
/// so the product, user and shipping services look the fingerprint up there,
/// resolve the newer schema to their own, and the saga completes: a publisher
/// need not wait for its consumers.
#[tokio::test]
async fn an_order_created_written_by_a_newer_schema_version_completes_its_saga_through_the_schema_topic() {
    let stack = saga_tests::stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let mut c = saga.clients().await;
    let buyer = c.user(10_000).await;
    let product = c.product(250, 3).await;

    // The next version's schema: the current one with a field no consumer knows.
    let mut next: serde_json::Value = serde_json::from_str(OrderCreated::schemas().latest().json).expect("JSON");
    next["fields"].as_array_mut().expect("fields").push(serde_json::json!(
        {"name": "gift_note", "type": "string", "default": "", "doc": "Added by the next version."}
    ));
    let fingerprint = saga_wire::canonical::fingerprint(&next).expect("canonical form");
    assert!(!OrderCreated::schemas().knows(&fingerprint), "no consumer was built with it");
    let json: &'static str = Box::leak(next.to_string().into_boxed_str());
    let version = saga_wire::SchemaVersion { version: 99, fingerprint, json };
    let created = place_order_written_by(&mut saga, &stack, &buyer.user_id, &product.product_id, |created| {
        let apache_avro::types::Value::Record(mut fields) = created.to_avro_value() else { panic!("a record") };
        fields.push(("gift_note".to_owned(), apache_avro::types::Value::String("wrap it".to_owned())));
        saga_wire::testing::encoded_with(&version, apache_avro::types::Value::Record(fields))
            .expect("encodes with the next version")
    })
    .await;

    // What the next version's order service does at start, before its relay
    // publishes: register the schema it writes with.
    let producer: rdkafka::producer::FutureProducer =
        saga_runtime::kafka::client(&saga.brokers).set("acks", "all").create().expect("producer");
    let (key, schema_topic) =
        (saga_runtime::schema_registry::key_of(&fingerprint), saga.topic(saga_generated::topology::SCHEMA_TOPIC));
    let registered = rdkafka::producer::FutureRecord::to(&schema_topic).key(&key).payload(json);
    producer.send(registered, std::time::Duration::from_secs(10)).await.expect("registered");

    let ids = (created.order_id.to_string(), buyer.user_id, product.product_id);
    completes_as_written(&mut saga, &stack, &mut c, (&ids.0, &ids.1, &ids.2), fingerprint).await;
    saga.shutdown(&stack).await;
}

/// Orders in states a previous spec had, inserted as that version's order service left them.
async fn orders_in(pool: &sqlx::PgPool, state: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO orders (order_id, user_id, status, idempotency_key, request_hash) VALUES ($1, $2, $3, $4, 'x')",
        )
        .bind(id)
        .bind(Uuid::now_v7())
        .bind(state)
        .bind(id.to_string())
        .execute(pool)
        .await
        .expect("insert an order");
        ids.push(id);
    }
    ids
}

async fn statuses(pool: &sqlx::PgPool, ids: &[Uuid]) -> Vec<(String, bool)> {
    sqlx::query("SELECT status, deadline_at IS NOT NULL AS due FROM orders WHERE order_id = ANY($1) ORDER BY order_id")
        .bind(ids)
        .fetch_all(pool)
        .await
        .expect("read statuses")
        .iter()
        .map(|r| (r.get("status"), r.get("due")))
        .collect()
}

#[tokio::test]
async fn status_migrations_move_every_order_of_a_removed_state_with_a_history_row_or_none() {
    let stack = saga_tests::stack();
    let saga = PrivateSaga::start(&stack, &[]).await;
    let pool = sqlx::PgPool::connect(&saga.database_url(&stack, "order")).await.expect("order database");
    let awaiting = orders_in(&pool, "awaiting_stock", 2).await;
    let doomed = orders_in(&pool, "doomed", 1).await;
    let migrations = [
        StatusMigration { from: "awaiting_stock", to: OrderStatus::InventoryReserved },
        StatusMigration { from: "doomed", to: OrderStatus::Cancelled },
    ];

    // A failure half-way (here: the history refuses the second state's rows)
    // leaves every order where it was: one transaction.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$; \
         CREATE TRIGGER refuse_doomed BEFORE INSERT ON order_status_history \
           FOR EACH ROW WHEN (NEW.from_status = 'doomed') EXECUTE FUNCTION refuse_doomed();",
    )
    .execute(&pool)
    .await
    .expect("a failing trigger");
    migrate_statuses(pool.clone(), SPEC_TIMEOUTS, &migrations).await.expect_err("the second migration fails");
    assert_eq!(statuses(&pool, &awaiting).await, vec![("awaiting_stock".to_owned(), false); 2], "rolled back");
    sqlx::raw_sql("DROP TRIGGER refuse_doomed ON order_status_history; DROP FUNCTION refuse_doomed();")
        .execute(&pool)
        .await
        .expect("drop the trigger");

    let moved = migrate_statuses(pool.clone(), SPEC_TIMEOUTS, &migrations).await.expect("migrations apply");
    assert_eq!(moved, 3);
    // The new state's deadline starts now; a terminal state has none.
    assert_eq!(statuses(&pool, &awaiting).await, vec![("inventory_reserved".to_owned(), true); 2]);
    assert_eq!(statuses(&pool, &doomed).await, vec![("cancelled".to_owned(), false)]);
    let history: Vec<(String, String, String)> = sqlx::query(
        "SELECT from_status, to_status, event_type FROM order_status_history WHERE order_id = ANY($1) ORDER BY id",
    )
    .bind([awaiting.clone(), doomed.clone()].concat())
    .fetch_all(&pool)
    .await
    .expect("history")
    .iter()
    .map(|r| (r.get("from_status"), r.get("to_status"), r.get("event_type")))
    .collect();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(history.iter().all(|(_, _, kind)| kind == "status.migration"), "{history:?}");
    assert_eq!(
        history.iter().filter(|(from, to, _)| from == "awaiting_stock" && to == "inventory_reserved").count(),
        2
    );

    // Applied again (the next start), nothing is left to move.
    assert_eq!(migrate_statuses(pool.clone(), SPEC_TIMEOUTS, &migrations).await.expect("again"), 0);
    pool.close().await;
    saga.shutdown(&stack).await;
}
