//! `cargo xtask bench --registration-flood`: how logins fare while anonymous
//! clients register as fast as they can; `--login-flood`: while two accounts
//! log in with their correct password as fast as they are answered, from
//! many clients at once.
//!
//! Every registration and every login costs an argon2 hash in the user
//! service. A flood used to queue hashes without bound, so real logins timed
//! out for minutes. The defences are the gateway's registration limits (per
//! address and in total) and, behind them, the user service's bounded
//! password queue. The bench stack raises the per-address limits (every
//! client of it is 127.0.0.1), so this measures the worst case: an attacker
//! with addresses enough to stay under them, held back only by the queue.
//!
//! Two phases of the same length: logins alone, then the same logins with
//! the flood. Login clients log in again as soon as their last attempt is
//! answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use super::load::Api;

/// Clients logging in, one account each.
const LOGIN_CLIENTS: usize = 4;
/// Flooding clients, each attempting again as soon as its last attempt is answered.
const FLOOD_CLIENTS: usize = 64;
/// Accounts a login flood logs in to, again and again.
const FLOODING_ACCOUNTS: usize = 2;

/// What the flooding clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Register fresh accounts: every attempt costs an argon2 hash.
    Registrations,
    /// Log in to two accounts with their correct password: every attempt
    /// that passes the gateway costs an argon2 check.
    Logins,
}

impl Flood {
    /// Its `cargo xtask bench` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Flood::Registrations => "registration-flood",
            Flood::Logins => "login-flood",
        }
    }

    /// The answer that means a flooding attempt went through.
    fn ok(self) -> &'static str {
        match self {
            Flood::Registrations => "201",
            Flood::Logins => "200",
        }
    }
}
const PASSWORD: &str = "bench flood password";

/// What one kind of client saw in a phase.
#[derive(Debug)]
struct Tally {
    /// Answer times of every attempt, microseconds.
    latency: Histogram<u64>,
    /// Attempts by HTTP status (`error` when no answer came).
    statuses: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        let latency = Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid");
        Tally { latency, statuses: Default::default() }
    }

    fn record(&mut self, started: Instant, outcome: anyhow::Result<StatusCode>) {
        self.latency.saturating_record(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
        let key = outcome.map_or_else(|_| "error".to_owned(), |status| status.as_u16().to_string());
        *self.statuses.entry(key).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
    }

    /// What one side of a phase saw; `ok` is the status that counts as a success.
    fn attempts(&self, seconds: f64, ok: &str) -> Attempts {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        let succeeded = self.statuses.get(ok).copied().unwrap_or(0);
        Attempts {
            attempts: self.latency.len(),
            succeeded_per_second: succeeded as f64 / seconds.max(1e-9),
            statuses: self.statuses.clone(),
            latency_ms: FloodLatency { p50: ms(0.5), p99: ms(0.99), max: self.latency.max() as f64 / 1000.0 },
        }
    }
}

async fn post(api: &Api, path: &str, body: &Value) -> anyhow::Result<StatusCode> {
    Ok(api.send(reqwest::Method::POST, path, None, None, Some(body)).await?.0)
}

/// `clients` loops of `attempt(client, n)` until `stop`; what they saw.
async fn clients<F, Fut>(clients: usize, stop: Arc<AtomicBool>, attempt: F) -> Tally
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<StatusCode>> + Send,
{
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (stop, attempt) = (stop.clone(), attempt.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    tally.record(started, attempt(client, n).await);
                    n += 1;
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::new();
    for task in tasks {
        if let Ok(tally) = task.await {
            all.merge(tally);
        }
    }
    all
}

/// One phase: the login clients, with `flood` clients flooding beside them as `kind` says
/// (a login flood logs in to `flooding`).
async fn phase(
    api: &Api,
    accounts: &Arc<Vec<String>>,
    (kind, flooding): (Flood, &Arc<Vec<String>>),
    flood: usize,
    length: Duration,
) -> (Tally, Tally, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let logins = tokio::spawn(clients(LOGIN_CLIENTS, stop.clone(), {
        let (api, accounts) = (api.clone(), accounts.clone());
        move |client, _| {
            let (api, email) = (api.clone(), accounts[client].clone());
            async move { post(&api, "/api/v1/auth/login", &json!({ "email": email, "password": PASSWORD })).await }
        }
    }));
    let registrations = tokio::spawn(clients(flood, stop.clone(), {
        let (api, flooding) = (api.clone(), flooding.clone());
        move |client, n| {
            let (path, email) = match kind {
                Flood::Registrations => {
                    ("/api/v1/auth/register", format!("flood-{}-{client}-{n}@example.com", &run[..8]))
                }
                Flood::Logins => ("/api/v1/auth/login", flooding[client % flooding.len()].clone()),
            };
            let api = api.clone();
            async move { post(&api, path, &json!({ "email": email, "password": PASSWORD })).await }
        }
    }));
    let started = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let logins = logins.await.unwrap_or_else(|_| Tally::new());
    let registrations = registrations.await.unwrap_or_else(|_| Tally::new());
    (logins, registrations, started.elapsed().as_secs_f64())
}

/// `count` fresh accounts named after `what`, with [`PASSWORD`].
async fn register_accounts(api: &Api, what: &str, count: usize) -> anyhow::Result<Arc<Vec<String>>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut accounts = Vec::new();
    for client in 0..count {
        let email = format!("flood-{what}-{}-{client}@example.com", &run[..8]);
        let status = post(api, "/api/v1/auth/register", &json!({ "email": email, "password": PASSWORD })).await?;
        anyhow::ensure!(status == StatusCode::CREATED, "registering a {what} account: {status}");
        accounts.push(email);
    }
    Ok(Arc::new(accounts))
}

/// A flood run: `bench-results/<date>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    pub commit: String,
    /// `registration-flood` or `login-flood`.
    pub scenario: String,
    /// Logins alone, then logins during the flood.
    pub phases: Vec<FloodPhase>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodPhase {
    pub name: String,
    pub seconds: f64,
    pub login_clients: usize,
    pub flood_clients: usize,
    pub logins: Attempts,
    pub flood: Attempts,
}

/// The requests of one side of a phase.
#[derive(Debug, Clone, Serialize)]
pub struct Attempts {
    pub attempts: u64,
    pub succeeded_per_second: f64,
    /// Answers by HTTP status (`error` for none).
    pub statuses: std::collections::BTreeMap<String, u64>,
    pub latency_ms: FloodLatency,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodLatency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Runs both phases on the stack behind `api`; the report (its commit left to the caller).
pub async fn measure(api: &Api, quick: bool, kind: Flood) -> anyhow::Result<FloodReport> {
    let length = Duration::from_secs(if quick { 10 } else { 30 });
    let accounts = register_accounts(api, "login", LOGIN_CLIENTS).await?;
    let flooding = register_accounts(api, "flooder", if kind == Flood::Logins { FLOODING_ACCOUNTS } else { 0 }).await?;
    let mut phases = Vec::new();
    for (name, flood) in [("logins alone", 0), ("logins during the flood", FLOOD_CLIENTS)] {
        println!("bench: {name}, {length:?}");
        let (logins, registrations, seconds) = phase(api, &accounts, (kind, &flooding), flood, length).await;
        let login = logins.attempts(seconds, "200");
        println!("  login p50 {} ms, p99 {} ms; {:?}", login.latency_ms.p50, login.latency_ms.p99, login.statuses);
        phases.push(FloodPhase {
            name: name.to_owned(),
            seconds,
            login_clients: LOGIN_CLIENTS,
            flood_clients: flood,
            logins: login,
            flood: registrations.attempts(seconds, kind.ok()),
        });
    }
    Ok(FloodReport { commit: String::new(), scenario: kind.flag().to_owned(), phases })
}

/// The BENCHMARKS.md entry of a flood run.
pub fn markdown(report: &FloodReport, command: &str, stamp: &str) -> String {
    let (title, flood) = match report.scenario.as_str() {
        "login-flood" => (
            "Login flood",
            format!(
                "{FLOOD_CLIENTS} clients log in to {FLOODING_ACCOUNTS} accounts with their correct password as fast \
                 as they are answered (the bench stack raises the per-address limits and the per-account success \
                 limit, so only the user service's per-account share of its password queue holds the flood back)"
            ),
        ),
        _ => (
            "Registration flood",
            format!(
                "{FLOOD_CLIENTS} clients register new accounts as fast as they are answered (the bench stack's \
                 per-address registration limits are raised, so only the user service's bounded password queue \
                 holds the flood back)"
            ),
        ),
    };
    let mut out = format!(
        "### {title}, {stamp}\n\n`{command}`: {LOGIN_CLIENTS} clients log in again and again, alone and then while \
         {flood}.\n\n\
         | phase | logins/s | login p50 ms | login p99 ms | login max ms | login answers | flood successes/s | flood answers |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for phase in &report.phases {
        let (logins, flood) = (&phase.logins, &phase.flood);
        let statuses =
            |a: &Attempts| a.statuses.iter().map(|(status, n)| format!("{status}: {n}")).collect::<Vec<_>>().join(", ");
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | {} | {} | {:.1} | {} |\n",
            phase.name,
            logins.succeeded_per_second,
            logins.latency_ms.p50,
            logins.latency_ms.p99,
            logins.latency_ms.max,
            statuses(logins),
            flood.succeeded_per_second,
            statuses(flood),
        ));
    }
    out
}
