//! The runtime's timeout sweeper against the real PostgreSQL: it resolves
//! one saga per transaction, and one saga that cannot be resolved is passed
//! over instead of holding back the others (nor does it make the service
//! unhealthy: it is that saga's fault, not an outage).

use std::time::{Duration, SystemTime};

use saga_contract::{Classify, FailureClass, Sweep, SweepFailure};
use saga_process::shutdown::Shutdown;
use saga_runtime::caught_up::CaughtUpClock;
use saga_runtime::health::Health;
use saga_runtime::sweeper::SweepTiming;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
#[error("this saga cannot be resolved")]
struct Unresolvable;

impl Classify for Unresolvable {
    fn class(&self) -> FailureClass {
        FailureClass::Permanent
    }
}

/// Resolves the rows of table `due` in order; the row `bad` always fails.
struct Sagas {
    bad: Uuid,
}

impl Sweep for Sagas {
    type Ctx = PgConnection;
    type Error = Unresolvable;

    async fn sweep_one<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        _as_of: SystemTime,
        skip: &'a [Uuid],
    ) -> Result<Option<Uuid>, SweepFailure<Unresolvable>> {
        let key: Option<Uuid> = sqlx::query_scalar(
            "SELECT key FROM due WHERE NOT done AND key <> ALL($1) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(skip)
        .fetch_optional(&mut *conn)
        .await
        .expect("the next saga");
        let Some(key) = key else { return Ok(None) };
        if key == self.bad {
            return Err(SweepFailure { saga_key: Some(key), error: Unresolvable });
        }
        sqlx::query("UPDATE due SET done = true WHERE key = $1").bind(key).execute(&mut *conn).await.expect("resolved");
        Ok(Some(key))
    }
}

#[tokio::test]
async fn a_saga_that_cannot_be_resolved_is_passed_over_and_the_others_are_resolved() {
    let stack = saga_tests::stack();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    sqlx::query("CREATE TABLE due (seq serial, key uuid PRIMARY KEY, done boolean NOT NULL DEFAULT false)")
        .execute(&pool)
        .await
        .expect("table");
    let keys: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    for key in &keys {
        sqlx::query("INSERT INTO due (key) VALUES ($1)").bind(key).execute(&pool).await.expect("row");
    }
    let (trigger, shutdown) = Shutdown::manual();
    let health = Health::new(Duration::from_secs(1), shutdown.clone());
    // The first, most overdue saga is the one that fails.
    let timing = SweepTiming { interval: Duration::from_millis(50), grace: Duration::ZERO };
    let (_clock_stays, clock) = CaughtUpClock::manual(Some(SystemTime::now()));
    let sweeper = saga_runtime::sweeper::run(
        pool.clone(),
        Sagas { bad: keys[0] },
        timing,
        clock,
        shutdown.clone(),
        health.clone(),
    );
    let running = tokio::spawn(sweeper);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM due WHERE done").fetch_one(&pool).await.expect("count");
        if done == 5 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {done} of 5 resolved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bad_done: bool =
        sqlx::query_scalar("SELECT done FROM due WHERE key = $1").bind(keys[0]).fetch_one(&pool).await.expect("row");
    assert!(!bad_done);
    let verdict = health.verdict(tokio::time::Instant::now() + Duration::from_secs(3600));
    assert!(verdict.values().all(Option::is_none), "one bad saga is no outage: {verdict:?}");
    trigger.trigger();
    running.await.expect("sweeper stops");
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}

/// Replicas of the order service each run a sweeper over the one database:
/// every overdue order is resolved exactly once (one timeout transition, one
/// event), whichever replica gets to it. `FOR UPDATE SKIP LOCKED` gives each
/// sweeper a different order, and a resolved order has no deadline left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweepers_of_several_replicas_resolve_each_overdue_order_once() {
    use order_service::saga::{CommandTx, OrderSaga, Timeouts};
    use saga_generated::OrderStatus;
    use saga_generated::owner::OrderTimeouts;
    use saga_generated::scenario::OrderScenario;

    let stack = saga_tests::stack();
    let (pool, db) = saga_tests::scratch_database(&stack).await;
    saga_runtime::db::migrate(&pool, &order_service::MIGRATOR).await.expect("the order service's migrations");
    let saga = OrderSaga::new(Timeouts { scale_percent: 100 });
    const ORDERS: usize = 60;
    for i in 0..ORDERS {
        let mut ctx = CommandTx {
            tx: pool.begin().await.expect("begin"),
            idempotency_key: format!("sweep-{i}"),
            fingerprint: "sweep".to_owned(),
            traceparent: saga_process::trace::new_traceparent(),
        };
        OrderScenario::new(saga.clone()).given(&mut ctx, OrderStatus::INITIAL).await.expect("an order");
        ctx.tx.commit().await.expect("commit");
    }
    sqlx::query("UPDATE orders SET deadline_at = now() - interval '1 second'").execute(&pool).await.expect("overdue");

    let (trigger, shutdown) = Shutdown::manual();
    let health = Health::new(Duration::from_secs(60), shutdown.clone());
    let timing = SweepTiming { interval: Duration::from_millis(10), grace: Duration::ZERO };
    let (_clock_stays, clock) = CaughtUpClock::manual(Some(SystemTime::now()));
    let sweepers: Vec<_> = (0..3)
        .map(|_| {
            let sweep = OrderTimeouts(saga.clone());
            tokio::spawn(saga_runtime::sweeper::run(
                pool.clone(),
                sweep,
                timing,
                clock.clone(),
                shutdown.clone(),
                health.clone(),
            ))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let due: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE deadline_at <= now()")
            .fetch_one(&pool)
            .await
            .expect("count");
        if due == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{due} orders still overdue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for a second resolution of any of them to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    trigger.trigger();
    for sweeper in sweepers {
        sweeper.await.expect("sweeper stops");
    }

    let rule = OrderStatus::INITIAL.timeout().expect("the first status has a timeout");
    let per_order: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM order_status_history h WHERE h.order_id = o.order_id AND h.from_status = $1), \
                (SELECT count(*) FROM outbox x WHERE x.partition_key = o.order_id::text) \
         FROM orders o",
    )
    .bind(OrderStatus::INITIAL.as_str())
    .fetch_all(&pool)
    .await
    .expect("per order");
    assert_eq!(per_order.len(), ORDERS);
    let events_per_order = 1 + rule.emits.iter().count() as i64;
    for (transitions, events) in per_order {
        assert_eq!((transitions, events), (1, events_per_order), "one timeout transition and its event per order");
    }
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT status FROM orders").fetch_all(&pool).await.expect("statuses");
    assert_eq!(statuses, [rule.to.as_str()]);
    saga_tests::drop_scratch_database(&stack, pool, &db).await;
}
