//! The status owner's timeout sweeper: on an interval, in one transaction at
//! a time, it lets the generated [`Sweep`] resolve the sagas past their
//! deadline as the spec says (a status, and the event whose compensations
//! undo what the saga did).

use std::time::Duration;

use saga_contract::Sweep;
use saga_process::shutdown::Shutdown;
use sqlx::{PgConnection, PgPool};

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
/// tried again at the next tick.
pub async fn run<S: Sweep<Ctx = PgConnection>>(pool: PgPool, sweep: S, interval: Duration, shutdown: Shutdown) {
    loop {
        match once(&pool, &sweep).await {
            Ok(n) if n >= BATCH => continue,
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

/// Resolves up to one batch of overdue sagas in one transaction; returns how many.
pub async fn once<S: Sweep<Ctx = PgConnection>>(pool: &PgPool, sweep: &S) -> Result<usize, SweepError<S::Error>> {
    let mut tx = pool.begin().await?;
    let found = sweep.sweep(&mut tx, BATCH).await.map_err(SweepError::Resolve)?;
    tx.commit().await?;
    Ok(found)
}
