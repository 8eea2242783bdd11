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
