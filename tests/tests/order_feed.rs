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

/// The history trigger's own notifications (not hand-made ones): each
/// carries its row, its position in the order's history and the order's
/// columns as the transition left them.
#[tokio::test]
async fn the_trigger_notifies_each_row_with_its_position_and_the_order_as_the_transition_left_it() {
    let stack = stack();
    let (pool, name) = scratch_database(&stack).await;
    saga_runtime::db::migrate(&pool, &order_service::MIGRATOR).await.expect("the order service's migrations");
    let (trigger, shutdown) = Shutdown::manual();
    let (feed, listen) = Feed::start(pool.clone(), shutdown);
    // Subscribed before the listener starts, so its resync (sent once LISTEN
    // holds) comes second and says when notifications are heard.
    let mut stream = feed.watch();
    let listening = tokio::spawn(listen);
    assert!(next(&mut stream).await.resync, "the first message marks the subscription");
    assert!(next(&mut stream).await.resync, "the listener's resync once LISTEN holds");

    let order = uuid::Uuid::new_v4();
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO orders (order_id, user_id, status, idempotency_key, request_hash) VALUES ($1, $2, 'created', 'k', 'h')",
    )
    .bind(order)
    .bind(uuid::Uuid::new_v4())
    .execute(&mut *tx)
    .await
    .expect("order");
    sqlx::query(
        "INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type) \
         VALUES ($1, NULL, 'created', gen_random_uuid(), 'order.created')",
    )
    .bind(order)
    .execute(&mut *tx)
    .await
    .expect("first row");
    tx.commit().await.expect("commit");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("UPDATE orders SET status = 'payment_failed', total_minor = 2500, failure_reason = 'insufficient_funds', updated_at = now() WHERE order_id = $1")
        .bind(order)
        .execute(&mut *tx)
        .await
        .expect("transition");
    sqlx::query(
        "INSERT INTO order_status_history (order_id, from_status, to_status, event_id, event_type, reason) \
         VALUES ($1, 'created', 'payment_failed', gen_random_uuid(), 'payment.fail', 'insufficient_funds')",
    )
    .bind(order)
    .execute(&mut *tx)
    .await
    .expect("second row");
    tx.commit().await.expect("commit");

    let first = next(&mut stream).await;
    let second = next(&mut stream).await;
    assert_eq!((first.order_id.clone(), first.position, first.status.as_str()), (order.to_string(), 1, "created"));
    assert_eq!((second.position, second.status.as_str()), (2, "payment_failed"));
    let row = second.row.expect("the row");
    assert_eq!((row.from_status.as_str(), row.event_type.as_str()), ("created", "payment.fail"));
    assert_eq!(row.reason, "insufficient_funds");
    assert_eq!((second.total_minor, second.failure_reason.as_str()), (Some(2500), "insufficient_funds"));
    let (updated_at, at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT o.updated_at, h.at FROM orders o JOIN order_status_history h USING (order_id) \
         WHERE o.order_id = $1 ORDER BY h.id DESC LIMIT 1",
    )
    .bind(order)
    .fetch_one(&pool)
    .await
    .expect("read back");
    use saga_runtime::grpc::timestamp;
    assert_eq!((second.updated_at, row.at), (timestamp(updated_at), timestamp(at)), "as GetOrder writes them");

    trigger.trigger();
    listening.await.expect("the listener stops at shutdown");
    drop_scratch_database(&stack, pool, &name).await;
}
