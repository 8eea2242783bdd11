//! The order service's change feed against a real PostgreSQL: a status
//! change reaches a `WatchOrders` stream once its transaction commits, and
//! never when it rolls back; each change carries its history row, its
//! position in the order's history and the order's columns as the
//! transition left them, written as `GetOrder` writes them. Both ways a
//! transition commits in the service are driven: a command (`CreateOrder`'s
//! helper, committed as the API does) and the timeout sweeper (the runtime's
//! own transaction, as the consumers' are).

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use order_service::feed::ChangeStream;
use order_service::saga::{CommandTx, OrderSaga, Timeouts};
use saga_generated::TraceContext;
use saga_generated::commands::{CreateOrder, run_create_order};
use saga_generated::owner::OrderTimeouts;
use saga_generated::types::OrderItem;
use saga_process::shutdown::Shutdown;
use saga_proto::order::OrderChanged;
use saga_runtime::db::AfterCommit;
use saga_runtime::grpc::timestamp;
use saga_tests::{drop_scratch_database, scratch_database, stack};
use sqlx::PgPool;
use uuid::Uuid;

/// Generous: a wake-up, never a performance assertion.
const WITHIN: Duration = Duration::from_secs(30);

async fn next(stream: &mut ChangeStream) -> OrderChanged {
    match tokio::time::timeout(WITHIN, stream.next()).await {
        Ok(Some(Ok(change))) => change,
        other => panic!("no change from the feed: {other:?}"),
    }
}

/// Creates an order as the API does, committing only if `commit`.
async fn create(pool: &PgPool, saga: &OrderSaga, key: &str, commit: bool) -> Uuid {
    let mut ctx = CommandTx {
        tx: pool.begin().await.expect("begin"),
        idempotency_key: key.to_owned(),
        fingerprint: key.to_owned(),
        traceparent: saga_process::trace::new_traceparent(),
    };
    let command =
        CreateOrder { user_id: Uuid::now_v7(), items: vec![OrderItem { product_id: Uuid::now_v7(), quantity: 2 }] };
    let (created, after_commit) =
        AfterCommit::gather(run_create_order(saga, &mut ctx, command, TraceContext::default())).await;
    let order_id = created.expect("the order is placed").order_id;
    if commit {
        ctx.tx.commit().await.expect("commit");
        after_commit.run();
    } else {
        ctx.tx.rollback().await.expect("rollback");
    }
    order_id
}

#[tokio::test]
async fn committed_transitions_reach_the_feed_with_their_row_position_and_order_columns_and_rolled_back_ones_never() {
    let stack = stack();
    let (pool, name) = scratch_database(&stack).await;
    saga_runtime::db::migrate(&pool, &order_service::MIGRATOR).await.expect("the order service's migrations");
    let saga = OrderSaga::new(Timeouts { scale_percent: 100 });
    let (trigger, shutdown) = Shutdown::manual();
    let mut stream = saga.feed.watch(shutdown);
    assert!(next(&mut stream).await.resync, "the first message marks the subscription");

    // Rolled back: nothing is told. The next change is the committed order's.
    create(&pool, &saga, "rolled-back", false).await;
    let order = create(&pool, &saga, "committed", true).await;
    let first = next(&mut stream).await;
    assert_eq!((first.order_id.clone(), first.position, first.status.as_str()), (order.to_string(), 1, "created"));
    assert!(!first.resync);
    let row = first.row.expect("the row");
    assert_eq!(
        (row.from_status.as_str(), row.to_status.as_str(), row.event_type.as_str()),
        ("", "created", "order.created")
    );

    // Overdue: the sweeper cancels it in its own transaction.
    sqlx::query("UPDATE orders SET deadline_at = now() - interval '1 second' WHERE order_id = $1")
        .bind(order)
        .execute(&pool)
        .await
        .expect("overdue");
    let swept = saga_runtime::sweeper::once(&pool, &OrderTimeouts(saga.clone()), SystemTime::now(), &[])
        .await
        .expect("the sweep");
    assert_eq!(swept, Some(order));
    let second = next(&mut stream).await;
    let change = second.clone();
    assert_eq!((second.order_id.clone(), second.position), (order.to_string(), 2));
    let row = second.row.expect("the row");
    assert_eq!((row.from_status.as_str(), row.to_status.as_str()), ("created", second.status.as_str()));
    assert_eq!((row.event_type.as_str(), row.reason.as_str()), ("order.cancelled", "timed_out"));
    assert_eq!(second.failure_reason, "timed_out", "the order's column after the transition");

    // As GetOrder writes them: read back what was committed.
    let (status, total, reason, updated_at, at, event_id): (
        String,
        Option<i64>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        Uuid,
    ) = sqlx::query_as(
        "SELECT o.status, o.total_minor, o.failure_reason, o.updated_at, h.at, h.event_id \
         FROM orders o JOIN order_status_history h USING (order_id) WHERE o.order_id = $1 ORDER BY h.id DESC LIMIT 1",
    )
    .bind(order)
    .fetch_one(&pool)
    .await
    .expect("read back");
    assert_eq!(second.status, status);
    assert_eq!((second.total_minor, Some(second.failure_reason.clone())), (total, reason));
    assert_eq!((second.updated_at, row.at), (timestamp(updated_at), timestamp(at)));
    assert_eq!(row.event_id, event_id.to_string());
    // The order the change carries is the one GetOrder reads, but for the
    // items and history a follower keeps from its own read; applied to the
    // order as read before the change, it gives the order as read after it.
    let read =
        order_store::order(&mut pool.acquire().await.expect("conn"), order).await.expect("read").expect("the order");
    let carried = change.order.clone().expect("the order as the change left it");
    assert_eq!(carried, saga_proto::order::Order { items: Vec::new(), history: Vec::new(), ..read.clone() });
    let mut before = saga_proto::order::Order { history: read.history[..1].to_vec(), ..read.clone() };
    before.status = "created".to_owned();
    assert!(before.apply([change]));
    assert_eq!(before, read);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM order_status_history").fetch_one(&pool).await.expect("rows");
    assert_eq!(rows, 2, "the rolled-back order left no row either");

    trigger.trigger();
    assert!(tokio::time::timeout(WITHIN, stream.next()).await.expect("the stream ends at shutdown").is_none());
    pool.close().await;
    drop_scratch_database(&stack, pool, &name).await;
}

/// The triggers that notified are gone (migrations `0007` and the runtime's
/// `1000003`): no commit of the order database takes PostgreSQL's
/// notification lock any more.
#[tokio::test]
async fn the_order_database_has_no_notifying_trigger_left() {
    let stack = stack();
    let (pool, name) = scratch_database(&stack).await;
    saga_runtime::db::migrate(&pool, &order_service::MIGRATOR).await.expect("the order service's migrations");
    let triggers: Vec<String> = sqlx::query_scalar("SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal")
        .fetch_all(&pool)
        .await
        .expect("triggers");
    assert_eq!(triggers, Vec::<String>::new());
    let notifying: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prosrc ILIKE '%pg_notify%'",
    )
    .fetch_one(&pool)
    .await
    .expect("functions");
    assert_eq!(notifying, 0);
    pool.close().await;
    drop_scratch_database(&stack, pool, &name).await;
}
