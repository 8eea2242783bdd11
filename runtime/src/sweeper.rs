//! The status owner's timeout sweeper: on an interval, one saga per
//! transaction, it lets the generated [`Sweep`] resolve the sagas past their
//! deadline as the spec says (a status, and the event whose compensations
//! undo what the saga did). A saga that cannot be resolved is passed over
//! for a while, so it never holds back the others. Deadlines are judged by
//! the owner's [`CaughtUpClock`], less a grace for the last hop, never by
//! the wall clock: an outage of the platform does not decide an outcome.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use saga_contract::{Classify, FailureClass, ServiceIdentity, Sweep, SweepFailure};
use saga_process::shutdown::Shutdown;
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use uuid::Uuid;

use crate::caught_up::{self, CaughtUpClock};
use crate::db::PoolName;
use crate::health::{Component, Health};
use crate::service::Booted;

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

/// When and how the sweeper judges deadlines.
#[derive(Debug, Clone, Copy)]
pub struct SweepTiming {
    /// How often it looks for overdue sagas.
    pub interval: Duration,
    /// How long after the caught-up clock passed a deadline the saga is
    /// resolved: time for a reply published just before to be relayed and
    /// consumed.
    pub grace: Duration,
}

/// The sweeper of status owner `service` with its caught-up clock over the
/// service's consumer group and topics, until `shutdown`; and that clock, for
/// whatever else judges deadlines the way the sweeper does (the order
/// service's saga backlog, which admission control reads).
pub fn for_service<S: Sweep<Ctx = PgConnection>, E>(
    booted: &Booted,
    service: &ServiceIdentity<E>,
    sweep: S,
    timing: SweepTiming,
    shutdown: Shutdown,
) -> (CaughtUpClock, impl Future<Output = ()> + Send + 'static) {
    let (clock, keep_clock) = caught_up::of_service(booted, service, Component::Sweeper, shutdown.clone());
    let sweeper = run(booted.pool.clone(), sweep, timing, clock.clone(), shutdown, booted.health.clone());
    let work = async move {
        tokio::join!(keep_clock, sweeper);
    };
    (clock, work)
}

/// Sweeps every `timing.interval` until `shutdown`, resolving every saga
/// whose deadline the `clock` passed by `timing.grace`. `health` hears when
/// sweeping fails as a whole (the database is away); a single saga that
/// fails is logged and passed over instead.
pub async fn run<S: Sweep<Ctx = PgConnection>>(
    pool: PgPool,
    sweep: S,
    timing: SweepTiming,
    clock: CaughtUpClock,
    shutdown: Shutdown,
    health: Health,
) {
    let probe = health.probe(Component::Sweeper);
    let mut passed_over: HashMap<Uuid, Instant> = HashMap::new();
    while !shutdown.is_requested() {
        passed_over.retain(|_, since| since.elapsed() < PASS_OVER);
        let skip: Vec<Uuid> = passed_over.keys().copied().collect();
        // Until the owner was first caught up, no deadline can be judged.
        let Some(as_of) = clock.now().map(|t| t - timing.grace) else {
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(timing.interval) => continue,
            }
        };
        let swept = {
            let _attempt = probe.attempt();
            once(&pool, &sweep, as_of, &skip).await
        };
        match swept {
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
            () = tokio::time::sleep(timing.interval) => {}
        }
    }
    tracing::info!("timeout sweeper stopped");
}

/// Resolves the most overdue saga (deadline at or before `as_of`) not in
/// `skip`, in its own transaction; returns its key, or `None` when none is due.
pub async fn once<S: Sweep<Ctx = PgConnection>>(
    pool: &PgPool,
    sweep: &S,
    as_of: SystemTime,
    skip: &[Uuid],
) -> Result<Option<Uuid>, SweepError<S::Error>> {
    let mut tx = crate::db::begin(pool, PoolName::Work).await?;
    let (swept, after_commit) = crate::db::AfterCommit::gather(sweep.sweep_one(&mut tx, as_of, skip)).await;
    let resolved = swept.map_err(|SweepFailure { saga_key, error }| match saga_key {
        Some(key) => SweepError::Saga(key, error),
        None => SweepError::Resolve(error),
    })?;
    tx.commit().await?;
    after_commit.run();
    Ok(resolved)
}
