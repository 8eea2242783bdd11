//! The timeout sweeper: resolves sagas that stayed in a non-terminal status
//! past the spec's deadline, as the spec says (cancel, publish
//! `order.cancelled`, whose compensations release stock and refund money).

use std::time::Duration;

use saga_generated::handlers::run_order_timeout;
use saga_generated::{OrderStatus, TraceContext};
use saga_process::shutdown::Shutdown;
use sqlx::PgPool;
use uuid::Uuid;

use crate::saga::{OrderError, OrderSaga};

/// Sagas resolved per transaction.
const BATCH: i64 = 50;

pub async fn run(pool: PgPool, saga: OrderSaga, interval: Duration, shutdown: Shutdown) {
    loop {
        match sweep(&pool, &saga).await {
            Ok(n) if n as i64 >= BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "timeout sweep failed; retrying"),
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("timeout sweeper stopped");
}

#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("order {0}: {1}")]
    Order(Uuid, String),
}

/// Resolves up to one batch of overdue sagas in one transaction; returns how many.
async fn sweep(pool: &PgPool, saga: &OrderSaga) -> Result<usize, SweepError> {
    let mut tx = pool.begin().await?;
    // SKIP LOCKED: a saga whose event is being applied right now is left
    // alone; if that event ends it, its deadline is gone by the next sweep.
    let due: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT order_id, status, traceparent FROM orders WHERE deadline_at <= now() \
         ORDER BY deadline_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    for (order_id, status, traceparent) in &due {
        let from: OrderStatus =
            status.parse().map_err(|_| SweepError::Order(*order_id, format!("bad status {status}")))?;
        let trace = TraceContext { traceparent: traceparent.clone(), tracestate: None };
        let resolved = run_order_timeout(saga, &mut *tx, *order_id, from, trace)
            .await
            .map_err(|e| SweepError::Order(*order_id, e.to_string()))?;
        let Some(resolved) = resolved else {
            // Terminal status with a stale deadline: just clear it.
            sqlx::query("UPDATE orders SET deadline_at = NULL WHERE order_id = $1")
                .bind(order_id)
                .execute(&mut *tx)
                .await?;
            continue;
        };
        let (event_id, event_type) = match &resolved.reply {
            Some(r) => (r.event_id, r.event_type.clone()),
            None => (Uuid::now_v7(), "timeout".to_owned()),
        };
        saga.transition(&mut tx, *order_id, from, resolved.to, event_id, &event_type, Some("timed_out"), None)
            .await
            .map_err(|e: OrderError| SweepError::Order(*order_id, e.to_string()))?;
        if let Some(reply) = resolved.reply {
            saga_runtime::outbox::insert(&mut tx, &reply).await?;
        }
    }
    tx.commit().await?;
    Ok(due.len())
}
