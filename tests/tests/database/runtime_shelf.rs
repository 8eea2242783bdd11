//! The shelf of connections the relay and the consumers keep between their
//! transactions (`saga_runtime::db::Shelf`), against a real PostgreSQL: a
//! connection kept is handed out again; one dropped without being kept (an
//! error, a cancelled task, a transaction left open) is closed, never
//! reused; one that broke while it sat on the shelf is replaced; and taking
//! one from a database that accepts the connection but never answers gives
//! up after the pool's acquire timeout.

use std::time::Duration;

use saga_runtime::db::{PoolName, Shelf};
use saga_tests::{drop_scratch_database, scratch_database, stack};
use sqlx::Connection as _;

async fn backend(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await.expect("pid")
}

async fn alive(pool: &sqlx::PgPool, pid: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity")
}

#[tokio::test]
async fn kept_connections_are_reused_and_others_closed() {
    let stack = stack();
    let (pool, name) = scratch_database(&stack).await;
    let shelf = Shelf::new(&pool, PoolName::Work);

    let mut conn = shelf.take().await.expect("a connection");
    let first = backend(&mut conn).await;
    conn.keep();
    assert_eq!(shelf.idle(), 1);
    let mut conn = shelf.take().await.expect("a connection");
    assert_eq!(backend(&mut conn).await, first, "the kept connection is handed out again");

    // A transaction left open (its task failed, say): the connection is
    // closed, not shelved, and its backend ends with the transaction.
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("CREATE TABLE left_open (n int)").execute(&mut *tx).await.expect("in the transaction");
    drop(tx);
    drop(conn);
    assert_eq!(shelf.idle(), 0, "not kept, not shelved");
    let mut waited = Duration::ZERO;
    while alive(&pool, first).await {
        assert!(waited < Duration::from_secs(30), "the dropped connection's backend is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('left_open')::text").fetch_one(&pool).await.expect("catalog");
    assert_eq!(table, None, "what the open transaction did was rolled back");

    // A shelved connection whose backend is killed while it waits is tested
    // and replaced (the test runs for one idle longer than a moment).
    let mut conn = shelf.take().await.expect("a connection");
    let second = backend(&mut conn).await;
    assert_ne!(second, first);
    conn.keep();
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(second).fetch_one(&pool).await.expect("terminate");
    assert!(killed);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut conn = shelf.take().await.expect("a working connection");
    let third = backend(&mut conn).await;
    assert_ne!(third, second, "the broken connection was not handed out");
    conn.keep();

    drop(shelf);
    drop_scratch_database(&stack, pool, &name).await;
}

#[tokio::test]
async fn a_database_that_never_answers_is_given_up_on_after_the_acquire_timeout() {
    // Accepts TCP connections and never says a word: the start-up handshake hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("address").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let options = sqlx::postgres::PgConnectOptions::new().host("127.0.0.1").port(port).username("nobody");
    let pool =
        sqlx::postgres::PgPoolOptions::new().acquire_timeout(Duration::from_millis(300)).connect_lazy_with(options);
    let shelf = Shelf::new(&pool, PoolName::Work);
    let taken = tokio::time::timeout(Duration::from_secs(30), shelf.take()).await.expect("gave up on its own");
    assert!(matches!(taken, Err(sqlx::Error::PoolTimedOut)), "{:?}", taken.err());
    assert_eq!(
        saga_runtime::db::class_of(&sqlx::Error::PoolTimedOut),
        saga_contract::FailureClass::Infrastructure,
        "an outage to the consumer, which waits it out"
    );
    held.abort();
}
