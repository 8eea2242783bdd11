//! The status owner's timeout sweeper: on an interval, in one transaction at
//! a time, it lets the generated [`Sweep`] resolve the sagas past their
//! deadline as the spec says (a status, and the event whose compensations
//! undo what the saga did).

use std::time::Duration;

use saga_contract::Sweep;
use saga_process::shutdown::Shutdown;
use sqlx::{PgConnection, PgPool};

use crate::health::{Component, Health};

/// Sagas resolved per transaction; a full batch is followed at once by the next.
pub const BATCH: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum SweepError<E: std::error::Error + 'static> {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Resolve(E),
}

/// Sweeps every `interval` until `shutdown`; a failed sweep is logged and
/// tried again at the next tick, and `health` hears whether sweeps work.
pub async fn run<S: Sweep<Ctx = PgConnection>>(
    pool: PgPool,
    sweep: S,
    interval: Duration,
    shutdown: Shutdown,
    health: Health,
) {
    let probe = health.probe(Component::Sweeper);
    loop {
        match once(&pool, &sweep).await {
            Ok(n) => {
                probe.working();
                if n >= BATCH {
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "timeout sweep failed; retrying");
                probe.failing(&error);
            }
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("timeout sweeper stopped");
}

/// Resolves up to one batch of overdue sagas in one transaction; returns how many.
pub async fn once<S: Sweep<Ctx = PgConnection>>(pool: &PgPool, sweep: &S) -> Result<usize, SweepError<S::Error>> {
    let mut tx = pool.begin().await?;
    let found = sweep.sweep(&mut tx, BATCH).await.map_err(SweepError::Resolve)?;
    tx.commit().await?;
    Ok(found)
}
