//! The generated scenario harness (`saga_generated::scenario`) on the services' real saga
//! handlers, each against a real PostgreSQL database of its service's schema, in one
//! transaction rolled back at the end: no Kafka, no other service, and a virtual clock.
//!
//! - Every path of the status machine, as the spec lists it (`scenario::PATHS`), is walked on
//!   the order service: a new transition or timeout is tested without anyone writing a test.
//! - Every compensation of the spec (`topology::COMPENSATIONS`) is run on its service: the
//!   request it undoes, then the compensation, delivered twice; and, where the spec promises
//!   a tombstone, the compensation first, so the request that follows does nothing. This is
//!   the handlers' side of what `cargo xtask verify` assumes of them.

use std::time::{Duration, Instant};

use saga_generated::handlers::{OrderInbound, ProductInbound, UserInbound};
use saga_generated::scenario::{
    Delivered, Emitted, OrderPathStep, OrderScenario, PATHS, ProductScenario, UserScenario,
};
use saga_generated::topology::COMPENSATIONS;
use saga_generated::types::OrderItem;
use saga_generated::{Envelope, EventType, Money, OrderCreated, OrderStatus, StockReductionSuccess};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use order_service::saga::{CommandTx, OrderSaga, Timeouts};
use product_service::saga::ProductSaga;
use user_service::saga::UserSaga;

/// A fresh database with the runtime's tables and `service`'s own.
async fn service_database(migrator: &sqlx::migrate::Migrator) -> (PgPool, String) {
    let (pool, name) = saga_tests::scratch_database(&saga_tests::stack()).await;
    saga_runtime::db::migrate(&pool, migrator).await.expect("the service's migrations");
    (pool, name)
}

async fn command_tx(pool: &PgPool) -> CommandTx {
    CommandTx {
        tx: pool.begin().await.expect("begin"),
        idempotency_key: format!("scenario-{}", Uuid::now_v7()),
        fingerprint: "scenario".to_owned(),
        traceparent: saga_process::trace::new_traceparent(),
    }
}

fn types(emitted: &[Emitted]) -> Vec<EventType> {
    emitted.iter().map(|e| e.event_type).collect()
}

#[tokio::test]
async fn every_path_of_the_status_machine_runs_on_the_order_service() {
    let (pool, name) = service_database(&order_service::MIGRATOR).await;
    let started = Instant::now();
    let mut steps = 0;
    for path in PATHS {
        let mut s = OrderScenario::new(OrderSaga::new(Timeouts { scale_percent: 100 }));
        let mut ctx = command_tx(&pool).await;
        let key = s.given(&mut ctx, OrderStatus::INITIAL).await.expect("the saga starts");
        assert_eq!(types(&s.emitted(key)), [EventType::OrderCreated], "{path:?}");
        let mut status = OrderStatus::INITIAL;
        let mut expected_history = vec![(None, OrderStatus::INITIAL)];
        let mut expected_emitted = vec![EventType::OrderCreated];
        for step in path.iter().copied() {
            steps += 1;
            let to = match step {
                OrderPathStep::Event(event, to) => {
                    let inbound = OrderInbound::sample(event, key).expect("the owner subscribes to it");
                    let delivered = s.when(&mut ctx.tx, inbound).await.expect("handled");
                    let Delivered::Handled { reply } = delivered else { panic!("{path:?}: {delivered:?}") };
                    expected_emitted.extend(reply.map(|r| r.event_type));
                    to
                }
                OrderPathStep::Timeout(to) => {
                    let rule = status.timeout().expect("the status has a timeout");
                    let early = rule.after - Duration::from_millis(1);
                    let fired = s.advance(&mut ctx.tx, early).await.expect("sweeps");
                    assert!(fired.is_empty(), "{path:?}: nothing is due a millisecond before the deadline");
                    let fired = s.advance(&mut ctx.tx, Duration::from_millis(1)).await.expect("sweeps");
                    assert_eq!(fired, [key], "{path:?}: due at the deadline");
                    expected_emitted.extend(rule.emits);
                    to
                }
            };
            expected_history.push((Some(status), to));
            assert_eq!(s.status(&mut ctx.tx, key).await.expect("reads"), Some(to), "{path:?} at {step:?}");
            status = to;
        }
        assert!(status.is_terminal(), "{path:?} ends in a terminal status");
        let history: Vec<_> = s.history(key).iter().map(|c| (c.from, c.to)).collect();
        assert_eq!(history, expected_history, "{path:?}: one history row per step");
        assert_eq!(types(&s.emitted(key)), expected_emitted, "{path:?}: what it published");
        // The event that ended it, delivered again, changes nothing.
        if let Some(OrderPathStep::Event(event, _)) = path.last() {
            let again = OrderInbound::sample(*event, key).expect("subscribed");
            let [_, second] = s.when_twice(&mut ctx.tx, again).await.expect("handled");
            assert_eq!(second, Delivered::Duplicate);
            assert_eq!(s.status(&mut ctx.tx, key).await.expect("reads"), Some(status));
        }
        ctx.tx.rollback().await.expect("rollback");
    }
    println!("{} paths, {steps} steps in {:?}", PATHS.len(), started.elapsed());
    assert!(PATHS.len() >= 5, "the spec has at least five ends by path: {}", PATHS.len());
    saga_tests::drop_scratch_database(&saga_tests::stack(), pool, &name).await;
}

#[tokio::test]
async fn parked_replies_are_applied_when_the_stock_reply_comes_and_a_timeout_waits_for_the_clock() {
    let (pool, name) = service_database(&order_service::MIGRATOR).await;
    let mut s = OrderScenario::new(OrderSaga::new(Timeouts { scale_percent: 100 }));
    let mut ctx = command_tx(&pool).await;
    let key = s.given(&mut ctx, OrderStatus::Created).await.expect("started");
    let shipped = OrderInbound::sample(EventType::ShipmentBooked, key).expect("subscribed");
    assert_eq!(s.when(&mut ctx.tx, shipped).await.expect("parked"), Delivered::Handled { reply: None });
    let paid = OrderInbound::sample(EventType::PaymentCompleted, key).expect("subscribed");
    assert_eq!(s.when(&mut ctx.tx, paid).await.expect("parked"), Delivered::Handled { reply: None });
    assert_eq!(s.status(&mut ctx.tx, key).await.expect("reads"), Some(OrderStatus::Created));
    let reserved = OrderInbound::sample(EventType::StockReductionSuccess, key).expect("subscribed");
    s.when(&mut ctx.tx, reserved).await.expect("handled");
    assert_eq!(s.status(&mut ctx.tx, key).await.expect("reads"), Some(OrderStatus::Completed));
    assert_eq!(types(&s.emitted(key)), [EventType::OrderCreated, EventType::OrderCompleted]);

    // A saga seeded straight into `inventory_reserved` times out after that status's
    // timeout by the virtual clock, not the wall clock.
    let waiting = s.given(&mut ctx, OrderStatus::InventoryReserved).await.expect("seeded");
    assert_eq!(s.advance(&mut ctx.tx, Duration::from_secs(59)).await.expect("sweeps"), Vec::<Uuid>::new());
    assert_eq!(s.advance(&mut ctx.tx, Duration::from_secs(1)).await.expect("sweeps"), [waiting]);
    assert_eq!(s.status(&mut ctx.tx, waiting).await.expect("reads"), Some(OrderStatus::Cancelled));
    let cancelled = s.emitted(waiting).last().cloned().expect("published the cancellation");
    let cancelled = cancelled.decode::<saga_generated::OrderCancelled>().expect("decodes");
    assert_eq!(cancelled.payload.status_at_cancel, "inventory_reserved");
    ctx.tx.rollback().await.expect("rollback");
    saga_tests::drop_scratch_database(&saga_tests::stack(), pool, &name).await;
}

/// Stock and reservation rows of one product, for the product service's chains.
async fn stock(tx: &mut Transaction<'static, Postgres>, product: Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT available, reserved FROM stock WHERE product_id = $1")
        .bind(product)
        .fetch_one(&mut **tx)
        .await
        .expect("stock row")
}

#[tokio::test]
async fn every_compensation_of_the_product_service_gives_back_what_it_reserved_once() {
    let (pool, name) = service_database(&product_service::MIGRATOR).await;
    let (_sender, owner_clock) = saga_runtime::caught_up::CaughtUpClock::manual(None);
    let chains: Vec<_> = COMPENSATIONS.iter().filter(|c| c.service == "product").collect();
    assert!(!chains.is_empty(), "the spec has product compensations");
    for chain in chains {
        let mut s = ProductScenario::new(ProductSaga { owner_clock: owner_clock.clone() });
        let mut tx = pool.begin().await.expect("begin");
        let product = Uuid::now_v7();
        sqlx::query("INSERT INTO products (product_id, name, price_minor) VALUES ($1, 'scenario', 250)")
            .bind(product)
            .execute(&mut *tx)
            .await
            .expect("product");
        sqlx::query("INSERT INTO stock (product_id, available) VALUES ($1, 5)")
            .bind(product)
            .execute(&mut *tx)
            .await
            .expect("stock");
        let request = |key| {
            let items = vec![OrderItem { product_id: product, quantity: 2 }];
            ProductInbound::from(Envelope::new(
                key,
                OrderCreated { user_id: Uuid::now_v7(), items, created_at: chrono::Utc::now() },
            ))
        };
        let compensation =
            |key| ProductInbound::sample(EventType::from_name(chain.on).expect("an event"), key).expect("subscribed");

        // The request, then its compensation, twice: given back once.
        let key = Uuid::now_v7();
        let Delivered::Handled { reply: Some(reserved) } = s.when(&mut tx, request(key)).await.expect("handled") else {
            panic!("{chain:?}: the request is answered")
        };
        assert_eq!(reserved.event_type.as_str(), chain.undoes);
        assert_eq!(stock(&mut tx, product).await, (3, 2), "{chain:?}: reserved");
        let [first, second] = s.when_twice(&mut tx, compensation(key)).await.expect("handled");
        let Delivered::Handled { reply: Some(released) } = first else { panic!("{chain:?}: {first:?}") };
        assert_eq!(released.event_type, EventType::StockReleased);
        assert_eq!(second, Delivered::Duplicate);
        // Another compensation of the same saga (a new event id) gives back nothing more.
        let again = s.when(&mut tx, compensation(key)).await.expect("handled");
        assert_eq!(again, Delivered::Handled { reply: None }, "{chain:?}: released once");
        assert_eq!(stock(&mut tx, product).await, (5, 0), "{chain:?}: given back once");

        // The compensation first: with a tombstone, the request that follows does nothing.
        if chain.tombstone {
            let key = Uuid::now_v7();
            assert_eq!(s.when(&mut tx, compensation(key)).await.expect("handled"), Delivered::Handled { reply: None });
            assert_eq!(s.when(&mut tx, request(key)).await.expect("handled"), Delivered::Handled { reply: None });
            assert_eq!(stock(&mut tx, product).await, (5, 0), "{chain:?}: the tombstone held");
            assert!(s.emitted(key).is_empty());
        }
        tx.rollback().await.expect("rollback");
    }
    saga_tests::drop_scratch_database(&saga_tests::stack(), pool, &name).await;
}

async fn balance(tx: &mut Transaction<'static, Postgres>, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT balance_minor FROM balances WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut **tx)
        .await
        .expect("balance row")
}

#[tokio::test]
async fn every_compensation_of_the_user_service_refunds_what_it_debited_once() {
    let (pool, name) = service_database(&user_service::MIGRATOR).await;
    let chains: Vec<_> = COMPENSATIONS.iter().filter(|c| c.service == "user").collect();
    assert!(!chains.is_empty(), "the spec has user compensations");
    for chain in chains {
        let mut s = UserScenario::new(UserSaga);
        let mut tx = pool.begin().await.expect("begin");
        let user = Uuid::now_v7();
        sqlx::query("INSERT INTO users (user_id, email, display_name, role) VALUES ($1, $2, 'scenario', 'customer')")
            .bind(user)
            .bind(format!("{user}@scenario.test"))
            .execute(&mut *tx)
            .await
            .expect("user");
        sqlx::query("INSERT INTO balances (user_id, balance_minor) VALUES ($1, 1000)")
            .bind(user)
            .execute(&mut *tx)
            .await
            .expect("balance");
        let request =
            |key| UserInbound::from(Envelope::new(key, StockReductionSuccess { user_id: user, amount: Money(300) }));
        let compensation =
            |key| UserInbound::sample(EventType::from_name(chain.on).expect("an event"), key).expect("subscribed");

        let key = Uuid::now_v7();
        let Delivered::Handled { reply: Some(debited) } = s.when(&mut tx, request(key)).await.expect("handled") else {
            panic!("{chain:?}: the request is answered")
        };
        assert_eq!(debited.event_type.as_str(), chain.undoes);
        assert_eq!(balance(&mut tx, user).await, 700);
        let [first, second] = s.when_twice(&mut tx, compensation(key)).await.expect("handled");
        let Delivered::Handled { reply: Some(refunded) } = first else { panic!("{chain:?}: {first:?}") };
        assert_eq!(refunded.event_type, EventType::PaymentRefunded);
        assert_eq!(second, Delivered::Duplicate);
        let again = s.when(&mut tx, compensation(key)).await.expect("handled");
        assert_eq!(again, Delivered::Handled { reply: None }, "{chain:?}: refunded once");
        assert_eq!(balance(&mut tx, user).await, 1000, "{chain:?}: refunded once");

        if chain.tombstone {
            let key = Uuid::now_v7();
            assert_eq!(s.when(&mut tx, compensation(key)).await.expect("handled"), Delivered::Handled { reply: None });
            assert_eq!(s.when(&mut tx, request(key)).await.expect("handled"), Delivered::Handled { reply: None });
            assert_eq!(balance(&mut tx, user).await, 1000, "{chain:?}: the tombstone held");
        }
        tx.rollback().await.expect("rollback");
    }
    saga_tests::drop_scratch_database(&saga_tests::stack(), pool, &name).await;
}

/// Two instances of the user service, one handling a timed-out order's `order.cancelled`
/// and one its `stock.reduction.success`, at the same moment: the payment's transaction
/// finds no payment row (the cancellation's tombstone is not committed yet), debits, and
/// its own insert waits on the tombstone's key until the cancellation commits. The unique
/// violation it meets is a lost race, not poison: the consumer retries it by the spec's
/// policy (`Contended`), and the retry sees the tombstone and debits nothing.
#[tokio::test]
async fn a_payment_racing_a_cancellation_on_another_instance_is_retried_not_dead_lettered() {
    use saga_contract::{Classify, FailureClass};
    use saga_generated::handlers::{UserHandler, UserOnStockReductionSuccess};
    use saga_generated::types::CancelReason;

    let (pool, name) = service_database(&user_service::MIGRATOR).await;
    let user = Uuid::now_v7();
    sqlx::query("INSERT INTO users (user_id, email, display_name, role) VALUES ($1, $2, 'racer', 'customer')")
        .bind(user)
        .bind(format!("{user}@race.test"))
        .execute(&pool)
        .await
        .expect("user");
    sqlx::query("INSERT INTO balances (user_id, balance_minor) VALUES ($1, 1000)")
        .bind(user)
        .execute(&pool)
        .await
        .expect("balance");
    let order = Uuid::now_v7();
    let request = Envelope::new(order, StockReductionSuccess { user_id: user, amount: Money(300) });
    let cancelled = Envelope::new(
        order,
        saga_generated::OrderCancelled {
            reason: CancelReason::TimedOut,
            status_at_cancel: "inventory_reserved".into(),
        },
    );

    // Instance A: the cancellation, its tombstone written but not committed.
    let mut a = pool.begin().await.expect("begin A");
    UserSaga.on_order_cancelled(&mut a, cancelled).await.expect("the cancellation is handled");
    // Instance B: the payment, which blocks on A's key.
    let b = tokio::spawn({
        let (pool, request) = (pool.clone(), request.clone());
        async move {
            let mut b = pool.begin().await.expect("begin B");
            let outcome = UserSaga.on_stock_reduction_success(&mut b, request).await;
            b.rollback().await.expect("rollback B");
            outcome
        }
    });
    let blocked = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("pg_stat_activity");
        if waiting == 1 {
            break;
        }
        assert!(std::time::Instant::now() < blocked, "the payment never waited on the tombstone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.commit().await.expect("commit A");
    let lost = b.await.expect("B ran").expect_err("the payment loses the race");
    assert_eq!(lost.class(), FailureClass::Contended, "{lost}: a race is retried, not dead-lettered");

    // The consumer's retry, in a fresh transaction: the tombstone holds, nothing is debited.
    let mut retry = pool.begin().await.expect("begin retry");
    let reply = UserSaga.on_stock_reduction_success(&mut retry, request).await.expect("the retry is handled");
    assert_eq!(reply, UserOnStockReductionSuccess::NoReply);
    assert_eq!(balance(&mut retry, user).await, 1000);
    retry.commit().await.expect("commit retry");
    saga_tests::drop_scratch_database(&saga_tests::stack(), pool, &name).await;
}
