//! Health that can fail, and says what failed. The loops that do a service's
//! work report here through [`Probe`]s, and the gRPC health service says what
//! they report, under names that tell apart what an orchestrator should do:
//!
//! - `""` and `saga.api`: **readiness**, whether the service's own API can
//!   serve: its database answers ([`check_database`]). Only this takes an
//!   instance out of the gateway's balancing and out of a Kubernetes Service.
//! - `saga.pipeline`: whether the saga's work flows: `NOT_SERVING` when one of
//!   its loops (`saga.consumer`, `saga.relay`, `saga.sweeper`, each also
//!   reported on its own, and `saga.broker`, whether Kafka answers) has been
//!   failing, or has had an attempt in flight without progress, for longer
//!   than allowed. A broker outage, a stuck relay or a frozen consumer shows
//!   here and in the metrics, and does not make the instance unready: its API
//!   still serves, and orders placed meanwhile wait in the outbox.
//! - `saga.live`: **liveness**, `NOT_SERVING` only when a restart can help: a
//!   loop stopped (the service exits anyway, see [`Health::stopped`]), or a
//!   loop is wedged: one attempt in flight for longer than every timeout in it
//!   allows ([`Health::with_wedged_after`]) while the database answers. An
//!   outage is no reason to restart: the new process would wait for the same
//!   database or broker.
//!
//! A health check that cannot fail tells nothing.

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
    /// The service's own API: its database answers.
    Api,
    Consumer,
    Relay,
    Sweeper,
    /// Kafka answers the service's own questions (its group's offsets and
    /// the topics' watermarks).
    Broker,
}

impl Component {
    /// Its name in the gRPC health service.
    pub fn service_name(self) -> &'static str {
        match self {
            Component::Api => API,
            Component::Consumer => "saga.consumer",
            Component::Relay => "saga.relay",
            Component::Sweeper => "saga.sweeper",
            Component::Broker => "saga.broker",
        }
    }

    /// Part of the saga's pipeline (reported in [`PIPELINE`]), not of the API.
    pub fn is_pipeline(self) -> bool {
        self != Component::Api
    }
}

/// The API's own health name; the overall status (`""`) says the same.
pub const API: &str = "saga.api";
/// Every loop of the saga's pipeline at once.
pub const PIPELINE: &str = "saga.pipeline";
/// Liveness: what a restart would fix.
pub const LIVE: &str = "saga.live";

/// Gauge: 1 while a health check serves, 0 while it does not, by `check`
/// (`saga.api`, `saga.pipeline`, `saga.live` and each component).
pub const HEALTH_SERVING: &str = "saga_health_serving";

/// How long a loop's attempt may be in flight before the loop counts as
/// wedged (see [`Health::with_wedged_after`]).
pub const DEFAULT_WEDGED_AFTER: Duration = Duration::from_secs(600);

/// How long the database check may fail before the API is not ready.
pub const DEFAULT_API_FAIL_AFTER: Duration = Duration::from_secs(5);

/// What one probe last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Working,
    Failing { since: Instant, reason: String },
    Stopped { reason: String },
}

/// One probe's state: its report, and its attempts.
#[derive(Debug, Clone)]
struct State {
    report: Report,
    /// The attempt in flight, since when.
    in_flight: Option<Instant>,
    /// When the latest attempt began: a failure reported after it counts
    /// from there (the attempt made no progress from its start).
    latest_attempt: Option<Instant>,
}

impl State {
    fn working() -> State {
        State { report: Report::Working, in_flight: None, latest_attempt: None }
    }
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    probes: BTreeMap<(Component, u64), State>,
}

/// The health of one service instance.
#[derive(Debug, Clone)]
pub struct Health {
    registry: Arc<Mutex<Registry>>,
    /// How long a loop may fail, or an attempt be in flight, before its
    /// component (and the pipeline) is not serving.
    stuck_after: Duration,
    /// How long the database check may fail before the API is not serving.
    api_fail_after: Duration,
    /// How long one attempt may be in flight before its loop is wedged.
    wedged_after: Duration,
    /// Tells whoever waits that a loop stopped (see [`Health::stopped`]).
    stopped: Arc<watch::Sender<Option<String>>>,
    /// Loops end when this is requested: that is no failure.
    shutdown: Shutdown,
}

/// The verdict on one component: `None` while it serves, else why not.
pub type Verdict = BTreeMap<Component, Option<String>>;

/// Everything the health service says, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Per component with a probe: `None` while it serves, else why not.
    pub components: Verdict,
    /// Loops that stopped, or are wedged while the database answers: what
    /// a restart would fix. Empty while the process is live.
    pub restart_for: Vec<String>,
}

impl Assessment {
    /// Readiness: the API serves (no database check yet counts as serving).
    pub fn api_serves(&self) -> bool {
        self.components.get(&Component::Api).is_none_or(Option::is_none)
    }

    /// The pipeline's components that do not serve, with why.
    pub fn pipeline_problems(&self) -> Vec<(Component, &str)> {
        self.components
            .iter()
            .filter(|(component, _)| component.is_pipeline())
            .filter_map(|(component, problem)| problem.as_deref().map(|p| (*component, p)))
            .collect()
    }

    /// Liveness: nothing a restart would fix.
    pub fn live(&self) -> bool {
        self.restart_for.is_empty()
    }

    /// Every health name and whether it serves: `""`, the API, the pipeline,
    /// liveness and each component.
    pub fn statuses(&self) -> Vec<(&'static str, bool)> {
        let mut statuses = vec![
            ("", self.api_serves()),
            (API, self.api_serves()),
            (PIPELINE, self.pipeline_problems().is_empty()),
            (LIVE, self.live()),
        ];
        statuses.extend(
            self.components
                .iter()
                .filter(|(component, _)| component.is_pipeline())
                .map(|(component, problem)| (component.service_name(), problem.is_none())),
        );
        statuses
    }
}

impl Health {
    /// The health of a service whose loops may fail for `stuck_after` before
    /// they count as stuck; the database check and the wedge detection take
    /// their defaults ([`DEFAULT_API_FAIL_AFTER`], [`DEFAULT_WEDGED_AFTER`]).
    pub fn new(stuck_after: Duration, shutdown: Shutdown) -> Health {
        Health {
            registry: Arc::default(),
            stuck_after,
            api_fail_after: DEFAULT_API_FAIL_AFTER,
            wedged_after: DEFAULT_WEDGED_AFTER,
            stopped: Arc::new(watch::channel(None).0),
            shutdown,
        }
    }

    /// How long the database check may fail before the API is not ready:
    /// short, so the gateway and the orchestrator stop sending requests the
    /// instance can only refuse, yet longer than one slow answer.
    pub fn with_api_fail_after(mut self, after: Duration) -> Health {
        self.api_fail_after = after;
        self
    }

    /// How long one attempt of a loop may be in flight before the loop
    /// counts as wedged, which fails liveness while the database answers.
    /// Every step of an attempt has a timeout of its own (a pool's acquire
    /// timeout, `statement_timeout` and `lock_timeout`, the producer's
    /// delivery timeout), so an attempt in flight for many times their sum
    /// is stuck in a way only a restart ends.
    pub fn with_wedged_after(mut self, after: Duration) -> Health {
        self.wedged_after = after;
        self
    }

    /// A new probe of `component`; several loops of one component (the
    /// consumer's workers) each have their own.
    pub fn probe(&self, component: Component) -> Probe {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry.next_id += 1;
        let id = registry.next_id;
        registry.probes.insert((component, id), State::working());
        Probe { health: self.clone(), key: (component, id) }
    }

    fn threshold(&self, component: Component) -> Duration {
        if component.is_pipeline() { self.stuck_after } else { self.api_fail_after }
    }

    /// What the loops reported, judged at `now`, for every component that
    /// has a probe: a loop failing for longer than its threshold, or stopped.
    /// (Attempts in flight are judged by [`Health::assess`].)
    pub fn verdict(&self, now: Instant) -> Verdict {
        self.judge(now, false).components
    }

    /// Everything the health service says at `now`: what [`Health::verdict`]
    /// says, and besides, a loop whose attempt has been in flight for longer
    /// than its threshold is stuck too (a statement waiting on a lock, a call
    /// that never returns: no error is ever reported for those), and one in
    /// flight for longer than the wedge limit is what a restart would fix
    /// while the database answers.
    pub fn assess(&self, now: Instant) -> Assessment {
        self.judge(now, true)
    }

    fn judge(&self, now: Instant, in_flight: bool) -> Assessment {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut components = Verdict::new();
        let mut stopped = Vec::new();
        let mut wedged = Vec::new();
        for ((component, _), state) in &registry.probes {
            let threshold = self.threshold(*component);
            let name = component.service_name();
            let mut problem = match &state.report {
                Report::Working => None,
                Report::Failing { since, reason } => {
                    let failing = now.saturating_duration_since(*since);
                    (failing >= threshold).then(|| format!("failing for {}s: {reason}", failing.as_secs()))
                }
                Report::Stopped { reason } => {
                    stopped.push(format!("{name} stopped: {reason}"));
                    Some(format!("stopped: {reason}"))
                }
            };
            if in_flight && let Some(since) = state.in_flight {
                let busy = now.saturating_duration_since(since);
                if problem.is_none() && busy >= threshold {
                    problem = Some(format!("no progress for {}s: an attempt is still in flight", busy.as_secs()));
                }
                if busy >= self.wedged_after {
                    wedged.push(format!("{name} wedged: an attempt in flight for {}s", busy.as_secs()));
                }
            }
            let entry = components.entry(*component).or_insert(None);
            if entry.is_none() {
                *entry = problem;
            }
        }
        let mut assessment = Assessment { components, restart_for: stopped };
        // A loop waiting on a database that does not answer is no wedge: a
        // restart would wait for the same database.
        if assessment.api_serves() {
            assessment.restart_for.extend(wedged);
        }
        assessment
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

    /// Keeps the gRPC health service and the [`HEALTH_SERVING`] gauges in
    /// step with [`Health::assess`] every `every` until `shutdown`, logging
    /// each change of a check's state once, with the reasons.
    pub async fn report(self, reporter: HealthReporter, every: Duration) {
        metrics::describe_gauge!(
            HEALTH_SERVING,
            "1 while a health check serves, 0 while it does not, by check (saga.api: readiness; saga.pipeline; \
             saga.live: liveness; each loop)"
        );
        // Per health name: serving or not, as last reported.
        let mut last: BTreeMap<&'static str, bool> = BTreeMap::new();
        loop {
            let assessment = self.assess(Instant::now());
            for (name, serving) in assessment.statuses() {
                if last.get(name) == Some(&serving) {
                    continue;
                }
                if !name.is_empty() {
                    let label = name;
                    metrics::gauge!(HEALTH_SERVING, "check" => label).set(if serving { 1.0 } else { 0.0 });
                    log_change(name, serving, last.contains_key(name), &assessment);
                }
                let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
                reporter.set_service_status(name, status).await;
                last.insert(name, serving);
            }
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
        let state = registry.probes.entry(key).or_insert_with(State::working);
        if report == Report::Working {
            // Progress: a later failure counts from its own attempt.
            state.latest_attempt = None;
        }
        state.report = report;
    }
}

/// Logs a health name that changed: why it does not serve, or that it does again.
fn log_change(name: &'static str, serving: bool, known: bool, assessment: &Assessment) {
    match (name, serving) {
        (_, true) if known => tracing::info!(check = name, "serving again"),
        (_, true) => {}
        (API, false) => {
            let reason = assessment.components.get(&Component::Api).cloned().flatten().unwrap_or_default();
            tracing::error!(check = name, %reason, "not ready: the API cannot serve");
        }
        (PIPELINE, false) => {
            let problems: Vec<String> =
                assessment.pipeline_problems().iter().map(|(c, p)| format!("{}: {p}", c.service_name())).collect();
            tracing::error!(check = name, reason = %problems.join("; "), "the saga's pipeline is stuck");
        }
        (LIVE, false) => {
            tracing::error!(check = name, reason = %assessment.restart_for.join("; "), "not live: a restart would help");
        }
        (_, false) => {
            let reason = assessment
                .components
                .iter()
                .find(|(c, _)| c.service_name() == name)
                .and_then(|(_, p)| p.clone())
                .unwrap_or_default();
            tracing::error!(check = name, %reason, "not serving");
        }
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
    /// The last piece of work succeeded: the loop made progress.
    pub fn working(&self) {
        self.health.set(self.key, Report::Working);
    }

    /// The work fails; from the start of the attempt that failed first (or
    /// from now, outside an attempt), until [`Probe::working`].
    pub fn failing(&self, reason: impl std::fmt::Display) {
        let mut registry = self.health.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let state = registry.probes.entry(self.key).or_insert_with(State::working);
        let since = match &state.report {
            Report::Failing { since, .. } => *since,
            _ => state.latest_attempt.unwrap_or_else(Instant::now),
        };
        state.report = Report::Failing { since, reason: reason.to_string() };
    }

    /// One attempt at the loop's work begins: until the returned guard is
    /// dropped, it is in flight. An attempt in flight for longer than the
    /// loop may fail counts as stuck even though it reports no error (a
    /// statement waiting on a lock, a call that never returns).
    pub fn attempt(&self) -> Attempt<'_> {
        let now = Instant::now();
        let mut registry = self.health.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let state = registry.probes.entry(self.key).or_insert_with(State::working);
        state.in_flight = Some(now);
        state.latest_attempt = Some(now);
        Attempt { probe: self }
    }
}

/// An attempt in flight (see [`Probe::attempt`]).
#[derive(Debug)]
#[must_use = "the attempt is in flight while this lives"]
pub struct Attempt<'a> {
    probe: &'a Probe,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut registry = self.probe.health.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = registry.probes.get_mut(&self.probe.key) {
            state.in_flight = None;
        }
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

/// How often the database check runs.
pub const DATABASE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the database may take to answer one check.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks, every [`DATABASE_CHECK_EVERY`] until `shutdown`, that the database
/// the service's API uses answers (`SELECT 1` within
/// [`DATABASE_CHECK_TIMEOUT`]), reporting to `probe` (the [`Component::Api`]
/// one): the readiness of the service.
///
/// It keeps a connection of its own, opened with `pool`'s settings, rather
/// than take one from the pool: under a burst of requests every pooled
/// connection may be busy, and an instance must not turn unready for being
/// busy (every instance would at once, and the burst would find none). A
/// connection that failed a check is closed, and the next check opens a new
/// one, so a database that is back is seen at once.
pub async fn check_database(pool: sqlx::PgPool, probe: Probe, shutdown: Shutdown) {
    use sqlx::{ConnectOptions as _, Connection as _};
    let options = pool.connect_options();
    let mut conn: Option<sqlx::PgConnection> = None;
    let mut failing = false;
    loop {
        let checked = {
            let _attempt = probe.attempt();
            tokio::time::timeout(DATABASE_CHECK_TIMEOUT, async {
                let connection = match conn.as_mut() {
                    Some(connection) => connection,
                    None => conn.insert(options.connect().await?),
                };
                connection.ping().await
            })
            .await
        };
        match checked {
            Ok(Ok(())) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("the database answers the API's check again");
                }
                probe.working();
            }
            Ok(Err(error)) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "the database does not answer the API's check");
                }
                conn = None;
                probe.failing(format!("database: {error}"));
            }
            Err(_) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(timeout = ?DATABASE_CHECK_TIMEOUT, "the database does not answer the API's check in time");
                }
                conn = None;
                probe.failing(format!("database: no answer within {DATABASE_CHECK_TIMEOUT:?}"));
            }
        }
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(DATABASE_CHECK_EVERY) => {}
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
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

    fn status(assessment: &Assessment, name: &str) -> Option<bool> {
        assessment.statuses().into_iter().find(|(n, _)| *n == name).map(|(_, serving)| serving)
    }

    /// A broker outage or a stuck loop degrades the pipeline, never readiness
    /// nor liveness; only the database check takes readiness.
    #[tokio::test]
    async fn a_stuck_pipeline_leaves_the_instance_ready_and_live() {
        let (_trigger, shutdown) = Shutdown::manual();
        let health = Health::new(Duration::from_secs(60), shutdown).with_api_fail_after(Duration::from_secs(5));
        let api = health.probe(Component::Api);
        let broker = health.probe(Component::Broker);
        let relay = health.probe(Component::Relay);
        let t0 = Instant::now();
        let all_serve = health.assess(t0);
        for name in ["", API, PIPELINE, LIVE, "saga.relay", "saga.broker"] {
            assert_eq!(status(&all_serve, name), Some(true), "{name}: {all_serve:?}");
        }

        broker.failing("Kafka: all brokers down");
        relay.failing("Kafka: message timed out");
        let later = health.assess(Instant::now() + Duration::from_secs(61));
        assert_eq!(status(&later, PIPELINE), Some(false), "{later:?}");
        assert_eq!(status(&later, "saga.broker"), Some(false));
        assert_eq!(status(&later, "saga.relay"), Some(false));
        let named: Vec<Component> = later.pipeline_problems().iter().map(|(c, _)| *c).collect();
        assert_eq!(named, [Component::Relay, Component::Broker]);
        assert_eq!(
            (status(&later, ""), status(&later, API), status(&later, LIVE)),
            (Some(true), Some(true), Some(true))
        );

        // The database check failing takes readiness after its own, shorter threshold.
        api.failing("database: connection refused");
        let soon = health.assess(Instant::now() + Duration::from_secs(4));
        assert_eq!(status(&soon, ""), Some(true), "one failed check is not enough: {soon:?}");
        let unready = health.assess(Instant::now() + Duration::from_secs(6));
        assert_eq!((status(&unready, ""), status(&unready, API)), (Some(false), Some(false)), "{unready:?}");
        assert!(unready.components[&Component::Api].as_deref().is_some_and(|r| r.contains("connection refused")));
        assert_eq!(status(&unready, LIVE), Some(true), "an outage is no reason to restart");
        api.working();
        assert_eq!(status(&health.assess(Instant::now() + Duration::from_secs(6)), ""), Some(true));
    }

    /// A loop frozen on a lock reports no error: an attempt in flight without
    /// progress for longer than the threshold is stuck all the same, counted
    /// from the attempt's start; done, it is forgotten.
    #[tokio::test]
    async fn an_attempt_in_flight_without_progress_is_stuck() {
        let (_trigger, shutdown) = Shutdown::manual();
        let health = Health::new(Duration::from_secs(60), shutdown).with_wedged_after(Duration::from_secs(600));
        let _api = health.probe(Component::Api);
        let relay = health.probe(Component::Relay);
        let attempt = relay.attempt();
        let t0 = Instant::now();
        assert_eq!(status(&health.assess(t0 + Duration::from_secs(59)), PIPELINE), Some(true));
        let stuck = health.assess(t0 + Duration::from_secs(61));
        assert_eq!(status(&stuck, PIPELINE), Some(false), "{stuck:?}");
        assert!(stuck.components[&Component::Relay].as_deref().is_some_and(|r| r.contains("no progress for 6")));
        assert!(stuck.live(), "stuck is not wedged");
        // The reported verdict knows nothing of attempts.
        assert_eq!(reason(&health.verdict(t0 + Duration::from_secs(61)), Component::Relay), None);
        drop(attempt);
        assert_eq!(status(&health.assess(t0 + Duration::from_secs(61)), PIPELINE), Some(true), "done");

        // An attempt that fails counts as failing from its start, not from its error.
        let attempt = relay.attempt();
        let started = Instant::now();
        drop(attempt);
        relay.failing("lock timeout");
        let failing = health.assess(started + Duration::from_secs(60));
        assert!(
            failing.components[&Component::Relay].as_deref().is_some_and(|r| r.contains("lock timeout")),
            "{failing:?}"
        );
        relay.working();
        // Later failures outside any attempt since count from their own time.
        let outside = Instant::now();
        relay.failing("cannot write a dead letter");
        assert_eq!(status(&health.assess(outside + Duration::from_secs(59)), "saga.relay"), Some(true));
    }

    /// An attempt in flight for longer than the wedge limit fails liveness,
    /// but only while the database answers: waiting on a database that is
    /// away is no wedge a restart would fix.
    #[tokio::test]
    async fn a_wedged_loop_fails_liveness_only_while_the_database_answers() {
        let (_trigger, shutdown) = Shutdown::manual();
        let health = Health::new(Duration::from_secs(60), shutdown)
            .with_wedged_after(Duration::from_secs(600))
            .with_api_fail_after(Duration::from_secs(5));
        let api = health.probe(Component::Api);
        let worker = health.probe(Component::Consumer);
        let _attempt = worker.attempt();
        let t0 = Instant::now();
        assert!(health.assess(t0 + Duration::from_secs(599)).live());
        let wedged = health.assess(t0 + Duration::from_secs(601));
        assert_eq!(status(&wedged, LIVE), Some(false), "{wedged:?}");
        assert!(wedged.restart_for.iter().any(|r| r.starts_with("saga.consumer wedged")), "{wedged:?}");
        assert_eq!(status(&wedged, ""), Some(true), "still ready: its API serves");

        api.failing("database: no answer within 2s");
        let outage = health.assess(t0 + Duration::from_secs(601));
        assert_eq!((status(&outage, ""), status(&outage, LIVE)), (Some(false), Some(true)), "{outage:?}");
    }

    #[tokio::test]
    async fn a_stopped_loop_fails_liveness() {
        let (_trigger, shutdown) = Shutdown::manual();
        let health = Health::new(Duration::from_secs(60), shutdown);
        let _api = health.probe(Component::Api);
        let sweeper = health.probe(Component::Sweeper);
        drop(sweeper);
        let assessment = health.assess(Instant::now());
        assert_eq!(assessment.restart_for, ["saga.sweeper stopped: ended"]);
        assert_eq!((status(&assessment, LIVE), status(&assessment, PIPELINE)), (Some(false), Some(false)));
        assert_eq!(status(&assessment, ""), Some(true));
    }
}
