//! The order service's change feed against a real PostgreSQL: what is
//! notified on `order_status` (as the history trigger does at commit) reaches
//! a `WatchOrders` stream; and when its LISTEN connection is killed, the feed
//! connects again and says `resync` only once it listens again, so a change
//! committed right after the resync is not lost.

use std::time::Duration;

use futures::StreamExt;
use order_service::feed::{CHANNEL, ChangeStream, Feed};
use saga_process::shutdown::Shutdown;
use saga_proto::order::OrderChanged;
use saga_tests::{drop_scratch_database, scratch_database, stack};
use sqlx::PgPool;

/// Generous: a reconnect, never a performance assertion.
const WITHIN: Duration = Duration::from_secs(30);

async fn next(stream: &mut ChangeStream) -> OrderChanged {
    match tokio::time::timeout(WITHIN, stream.next()).await {
        Ok(Some(Ok(change))) => change,
        other => panic!("no change from the feed: {other:?}"),
    }
}

async fn notify(pool: &PgPool, payload: &str) {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(pool).await.expect("notify");
}

#[tokio::test]
async fn the_feed_delivers_changes_and_after_losing_its_connection_resyncs_once_it_listens_again() {
    let stack = stack();
    let (pool, name) = scratch_database(&stack).await;
    let (trigger, shutdown) = Shutdown::manual();
    let (feed, listen) = Feed::start(pool.clone(), shutdown);
    let listening = tokio::spawn(listen);
    let mut stream = feed.watch();
    assert!(next(&mut stream).await.resync, "the first message marks the subscription");

    // The listener may not have connected yet: notify until a change comes through.
    let first = uuid::Uuid::new_v4().to_string();
    let change = loop {
        notify(&pool, &format!("{first} created")).await;
        let change = next(&mut stream).await;
        if !change.resync {
            break change;
        }
    };
    assert_eq!((change.order_id.as_str(), change.status.as_str()), (first.as_str(), "created"));

    // Kill the LISTEN connection; the feed must come back with a resync.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_all(&pool)
    .await
    .expect("terminate the listener");
    assert_eq!(killed, [true], "one listening connection");
    loop {
        let change = next(&mut stream).await;
        if change.resync {
            break;
        }
        assert_eq!(change.order_id, first, "only the first order's repeats before the resync");
    }
    // Exactly one change, right after the resync: it must arrive.
    let second = uuid::Uuid::new_v4().to_string();
    notify(&pool, &format!("{second} completed")).await;
    let change = next(&mut stream).await;
    assert_eq!(
        (change.order_id.as_str(), change.status.as_str(), change.resync),
        (second.as_str(), "completed", false)
    );

    trigger.trigger();
    assert!(tokio::time::timeout(WITHIN, stream.next()).await.expect("the stream ends at shutdown").is_none());
    listening.await.expect("the listener stops at shutdown");
    drop_scratch_database(&stack, pool, &name).await;
}
