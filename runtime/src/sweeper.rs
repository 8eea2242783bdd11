//! The status owner's timeout sweeper: on an interval, one saga per
//! transaction, it lets the generated [`Sweep`] resolve the sagas past their
//! deadline as the spec says (a status, and the event whose compensations
//! undo what the saga did). A saga that cannot be resolved is passed over
//! for a while, so it never holds back the others.

use std::collections::HashMap;
use std::time::Duration;

use saga_contract::{Classify, FailureClass, Sweep, SweepFailure};
use saga_process::shutdown::Shutdown;
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use uuid::Uuid;

use crate::health::{Component, Health};

/// How long a saga that failed to resolve is passed over before it is tried again.
pub const PASS_OVER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SweepError<E: std::error::Error + 'static> {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("saga {0}: {1}")]
    Saga(Uuid, E),
    #[error(transparent)]
    Resolve(E),
}

/// Sweeps every `interval` until `shutdown`, resolving every overdue saga
/// each time. `health` hears when sweeping fails as a whole (the database is
/// away); a single saga that fails is logged and passed over instead.
pub async fn run<S: Sweep<Ctx = PgConnection>>(
    pool: PgPool,
    sweep: S,
    interval: Duration,
    shutdown: Shutdown,
    health: Health,
) {
    let probe = health.probe(Component::Sweeper);
    let mut passed_over: HashMap<Uuid, Instant> = HashMap::new();
    loop {
        passed_over.retain(|_, since| since.elapsed() < PASS_OVER);
        let skip: Vec<Uuid> = passed_over.keys().copied().collect();
        match once(&pool, &sweep, &skip).await {
            // One resolved: there may be more due right now.
            Ok(Some(_)) => {
                probe.working();
                continue;
            }
            Ok(None) => probe.working(),
            // An outage met while resolving one saga is no fault of that saga.
            Err(SweepError::Saga(key, error)) if error.class() != FailureClass::Infrastructure => {
                tracing::error!(saga_key = %key, %error, ?PASS_OVER, "cannot resolve an overdue saga; passing it over");
                passed_over.insert(key, Instant::now());
                continue;
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

/// Resolves the most overdue saga not in `skip`, in its own transaction;
/// returns its key, or `None` when none is due.
pub async fn once<S: Sweep<Ctx = PgConnection>>(
    pool: &PgPool,
    sweep: &S,
    skip: &[Uuid],
) -> Result<Option<Uuid>, SweepError<S::Error>> {
    let mut tx = pool.begin().await?;
    let resolved = sweep.sweep_one(&mut tx, skip).await.map_err(|SweepFailure { saga_key, error }| match saga_key {
        Some(key) => SweepError::Saga(key, error),
        None => SweepError::Resolve(error),
    })?;
    tx.commit().await?;
    Ok(resolved)
}
