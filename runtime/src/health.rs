//! Liveness that can fail. The loops that do a service's work (the consumer
//! and its workers, the outbox relay, the status owner's sweeper) report
//! here through [`Probe`]s, and the gRPC health service says `NOT_SERVING`
//! (overall, and for the component: `saga.consumer`, `saga.relay`,
//! `saga.sweeper`) when one of them has stopped, or has been failing for
//! longer than allowed: a partition blocked, a relay that cannot publish, a
//! sweeper that cannot sweep. A health check that cannot fail tells nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use saga_process::shutdown::Shutdown;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A part of the service whose health is reported on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Consumer,
    Relay,
    Sweeper,
}

impl Component {
    /// Its name in the gRPC health service.
    pub fn service_name(self) -> &'static str {
        match self {
            Component::Consumer => "saga.consumer",
            Component::Relay => "saga.relay",
            Component::Sweeper => "saga.sweeper",
        }
    }
}

/// What one probe last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Working,
    Failing { since: Instant, reason: String },
    Stopped { reason: String },
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    reports: BTreeMap<(Component, u64), Report>,
}

/// The health of one service instance.
#[derive(Debug, Clone)]
pub struct Health {
    registry: Arc<Mutex<Registry>>,
    /// How long a loop may fail before the service is not serving.
    stuck_after: Duration,
    /// Tells whoever waits that a loop stopped (see [`Health::stopped`]).
    stopped: Arc<watch::Sender<Option<String>>>,
    /// Loops end when this is requested: that is no failure.
    shutdown: Shutdown,
}

/// The verdict on one component: `None` while it serves, else why not.
pub type Verdict = BTreeMap<Component, Option<String>>;

impl Health {
    pub fn new(stuck_after: Duration, shutdown: Shutdown) -> Health {
        Health { registry: Arc::default(), stuck_after, stopped: Arc::new(watch::channel(None).0), shutdown }
    }

    /// A new probe of `component`; several loops of one component (the
    /// consumer's workers) each have their own.
    pub fn probe(&self, component: Component) -> Probe {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.next_id += 1;
        let id = registry.next_id;
        registry.reports.insert((component, id), Report::Working);
        Probe { health: self.clone(), key: (component, id) }
    }

    /// The verdict at `now`, for every component that has a probe.
    pub fn verdict(&self, now: Instant) -> Verdict {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut verdict = Verdict::new();
        for ((component, _), report) in &registry.reports {
            let problem = match report {
                Report::Working => None,
                Report::Failing { since, reason } => {
                    let failing = now.saturating_duration_since(*since);
                    (failing >= self.stuck_after).then(|| format!("failing for {}s: {reason}", failing.as_secs()))
                }
                Report::Stopped { reason } => Some(format!("stopped: {reason}")),
            };
            let entry = verdict.entry(*component).or_insert(None);
            if entry.is_none() {
                *entry = problem;
            }
        }
        verdict
    }

    /// Resolves when a loop has stopped while the service runs (a panic, a
    /// task that returned): the chassis then shuts the service down and
    /// exits non-zero, so a supervisor starts it again. Returns the reason.
    pub async fn stopped(&self) -> String {
        let mut rx = self.stopped.subscribe();
        let reason = rx.wait_for(Option::is_some).await.ok().and_then(|reason| reason.clone());
        match reason {
            Some(reason) => reason,
            // The sender lives as long as `self`: never closed while awaited.
            None => std::future::pending().await,
        }
    }

    /// Keeps the gRPC health service in step with [`Health::verdict`] every
    /// `every` until `shutdown`, logging each change of a component's state once.
    pub async fn report(self, reporter: HealthReporter, every: Duration) {
        // Per component: serving or not, as last reported (absent: no probe yet).
        let mut last: BTreeMap<Component, bool> = BTreeMap::new();
        loop {
            let verdict = self.verdict(Instant::now());
            for (component, problem) in &verdict {
                let serving = problem.is_none();
                if last.get(component) == Some(&serving) {
                    continue;
                }
                match problem {
                    Some(reason) => tracing::error!(component = component.service_name(), %reason, "not serving"),
                    None if last.contains_key(component) => {
                        tracing::info!(component = component.service_name(), "serving again");
                    }
                    None => {}
                }
                let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
                reporter.set_service_status(component.service_name(), status).await;
                last.insert(*component, serving);
            }
            let overall =
                if verdict.values().all(Option::is_none) { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", overall).await;
            tokio::select! {
                () = self.shutdown.wait() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    fn set(&self, key: (Component, u64), report: Report) {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Report::Stopped { reason } = &report {
            self.stopped.send_replace(Some(format!("{}: {reason}", key.0.service_name())));
        }
        registry.reports.insert(key, report);
    }
}

/// What one loop reports about itself. Dropped while the service is not
/// shutting down (a panic unwinding, a task that returned early), it reports
/// the loop stopped.
#[derive(Debug)]
pub struct Probe {
    health: Health,
    key: (Component, u64),
}

impl Probe {
    /// The last piece of work succeeded.
    pub fn working(&self) {
        self.health.set(self.key, Report::Working);
    }

    /// The work fails; from the first failure on, until [`Probe::working`].
    pub fn failing(&self, reason: impl std::fmt::Display) {
        let mut registry = self.health.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let since = match registry.reports.get(&self.key) {
            Some(Report::Failing { since, .. }) => *since,
            _ => Instant::now(),
        };
        registry.reports.insert(self.key, Report::Failing { since, reason: reason.to_string() });
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.health.shutdown.is_requested() {
            let reason = if std::thread::panicking() { "panicked" } else { "ended" };
            self.health.set(self.key, Report::Stopped { reason: reason.to_owned() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(verdict: &Verdict, component: Component) -> Option<String> {
        verdict.get(&component).cloned().flatten()
    }

    #[tokio::test]
    async fn a_loop_that_fails_too_long_or_stops_is_not_serving() {
        let (trigger, shutdown) = Shutdown::manual();
        let health = Health::new(Duration::from_secs(30), shutdown);
        let relay = health.probe(Component::Relay);
        let workers = [health.probe(Component::Consumer), health.probe(Component::Consumer)];
        let t0 = Instant::now();
        assert!(health.verdict(t0).values().all(Option::is_none), "working at first");

        relay.failing("broker unreachable");
        assert_eq!(reason(&health.verdict(t0 + Duration::from_secs(29)), Component::Relay), None, "not yet too long");
        let late = health.verdict(Instant::now() + Duration::from_secs(31));
        assert!(reason(&late, Component::Relay).is_some_and(|r| r.contains("broker unreachable")), "{late:?}");
        relay.failing("still unreachable");
        let later = health.verdict(Instant::now() + Duration::from_secs(31));
        assert!(reason(&later, Component::Relay).is_some(), "failing since the first failure: {later:?}");
        relay.working();
        assert_eq!(reason(&health.verdict(Instant::now() + Duration::from_secs(31)), Component::Relay), None);

        // One worker of several stopping is enough.
        let [first, second] = workers;
        drop(first);
        let verdict = health.verdict(Instant::now());
        assert!(reason(&verdict, Component::Consumer).is_some_and(|r| r.contains("ended")), "{verdict:?}");
        let stopped = tokio::time::timeout(Duration::from_secs(1), health.stopped()).await.expect("told");
        assert_eq!(stopped, "saga.consumer: ended");
        // Ending at shutdown is no failure.
        let sweeper = health.probe(Component::Sweeper);
        trigger.trigger();
        drop((second, sweeper));
        assert_eq!(reason(&health.verdict(Instant::now()), Component::Sweeper), None);
    }

    #[tokio::test]
    async fn a_panic_is_reported_as_one() {
        let (_trigger, shutdown) = Shutdown::manual();
        let health = Health::new(Duration::from_secs(30), shutdown);
        let probe = health.probe(Component::Sweeper);
        let task = tokio::spawn(async move {
            let _probe = probe;
            panic!("sweeper bug");
        });
        assert!(task.await.is_err());
        let verdict = health.verdict(Instant::now());
        assert!(reason(&verdict, Component::Sweeper).is_some_and(|r| r.contains("panicked")), "{verdict:?}");
    }
}
