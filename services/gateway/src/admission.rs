//! Admission control: while more sagas are at risk of missing their deadline
//! than the configured limit, `POST /orders` is answered 503 with
//! `Retry-After` instead of accepting orders that could only time out (a
//! backlog that outlives its deadlines makes goodput collapse). The measure
//! comes from the order service (`GetSagaBacklog`), refreshed in the
//! background, so a request never waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use saga_proto::order::GetSagaBacklogRequest;

use crate::config::Config;
use crate::state::Backends;

/// What the gateway knows of the saga backlog; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    /// Sagas at risk at the last measure; `u64::MAX` while unknown.
    at_risk: Arc<AtomicU64>,
    /// Most sagas at risk for which new orders are still accepted; 0: always accept.
    max_at_risk: u64,
    retry_after: Duration,
}

const UNKNOWN: u64 = u64::MAX;

/// `mean` spread over ±50 % in whole seconds (at least 1): clients refused in
/// the same second do not all come back in the same second, which after an
/// outage made goodput come in bursts as the gateway opened and closed again.
pub(crate) fn jittered(mean: Duration) -> Duration {
    use std::hash::BuildHasher;
    let mean = mean.as_secs().max(1);
    let spread = mean + 1; // mean/2 ..= mean*3/2
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    Duration::from_secs((mean / 2 + random % spread).max(1))
}

impl Admission {
    pub fn new(config: &Config) -> Admission {
        Admission {
            at_risk: Arc::new(AtomicU64::new(UNKNOWN)),
            max_at_risk: config.admission_max_at_risk,
            retry_after: Duration::from_secs(config.admission_retry_after_secs),
        }
    }

    /// `Err(retry_after)` when a new order should not be accepted now. While
    /// the backlog is unknown (the order service does not answer) orders are
    /// admitted: the order call itself then fails or succeeds on its own.
    pub fn admit(&self) -> Result<(), Duration> {
        let at_risk = self.at_risk.load(Ordering::Relaxed);
        if self.max_at_risk == 0 || at_risk == UNKNOWN || at_risk <= self.max_at_risk {
            Ok(())
        } else {
            Err(jittered(self.retry_after))
        }
    }

    fn record(&self, at_risk: Option<u64>) {
        let before = self.at_risk.swap(at_risk.unwrap_or(UNKNOWN), Ordering::Relaxed);
        let over = |n: u64| n != UNKNOWN && self.max_at_risk != 0 && n > self.max_at_risk;
        let now = at_risk.unwrap_or(UNKNOWN);
        match (over(before), over(now)) {
            (false, true) => tracing::warn!(
                at_risk = now,
                max = self.max_at_risk,
                "saga backlog over the limit; refusing new orders"
            ),
            (true, false) => tracing::info!(at_risk = now, "saga backlog under the limit; accepting orders again"),
            _ => {}
        }
    }

    /// Measures the backlog every `every`, forever (the gateway's lifetime).
    pub async fn watch(self, backends: Backends, at_risk_percent: u32, every: Duration) {
        if self.max_at_risk == 0 {
            return;
        }
        loop {
            let request = backends.request(GetSagaBacklogRequest { at_risk_percent });
            let measured = backends.order.clone().get_saga_backlog(request).await;
            self.record(measured.ok().map(|r| r.into_inner().at_risk));
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_at_risk: u64) -> Admission {
        Admission { at_risk: Arc::new(AtomicU64::new(UNKNOWN)), max_at_risk, retry_after: Duration::from_secs(7) }
    }

    #[test]
    fn orders_are_refused_only_over_a_known_limit() {
        let a = admission(10);
        assert_eq!(a.admit(), Ok(()), "unknown backlog: admit");
        a.record(Some(10));
        assert_eq!(a.admit(), Ok(()));
        a.record(Some(11));
        let refused: Vec<u64> = (0..200).map(|_| a.admit().expect_err("over the limit").as_secs()).collect();
        assert!(refused.iter().all(|s| (3..=10).contains(s)), "7 s ± 50 %: {refused:?}");
        assert!(refused.iter().any(|s| *s != refused[0]), "spread, not one second for all: {refused:?}");
        a.record(None);
        assert_eq!(a.admit(), Ok(()), "the order service does not answer: admit");
        let off = admission(0);
        off.record(Some(1_000_000));
        assert_eq!(off.admit(), Ok(()), "0 turns admission control off");
    }
}
