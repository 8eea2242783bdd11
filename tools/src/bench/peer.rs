//! The same saga on a single-process workflow engine, measured in the same
//! run as the stack: DBOS Transact for Go (`bench/peers/dbos`, its README
//! says what it does and how it differs). It runs after the stack's own
//! phases, with the services, the gateway and Kafka stopped, against the
//! bench stack's PostgreSQL (the same server and settings; its own databases
//! `orders`, `products`, `users`, `dbos_sys` beside the services'), with the
//! same closed-loop client counts, open-loop rates, phase length and seed
//! sizes.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use saga_stack::config::StackConfig;
use saga_stack::install::{go_binary, run_logged};

use std::collections::BTreeMap;

use super::report::{
    CoreShare, CoreTime, Latency, PeerComparison, PeerCpu, PeerPhase, PeerSummary, PhaseReport, Quantiles,
    RateAndLatency, SideBySide,
};

/// A peer the benchmark can run beside the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// The saga as a DBOS Transact (Go) durable workflow on PostgreSQL.
    Dbos,
}

/// The peer's Go module, in the workspace.
const DBOS_MODULE: &str = "bench/peers/dbos";

/// What the peer runs: the stack's closed-loop client counts, then its
/// open-loop rates.
pub struct PeerPlan {
    pub clients: Vec<usize>,
    pub rates: Vec<f64>,
    pub phase: Duration,
    pub users: usize,
    pub products: usize,
}

/// Builds the DBOS peer, runs it against `config`'s PostgreSQL and returns a
/// summary of its result file: per client count the rate and latencies (to
/// the terminal history row, as the stack's are measured), CPU per saga, peak
/// RSS, and whether its own invariant checks held.
pub fn run_dbos(config: &StackConfig, plan: &PeerPlan) -> anyhow::Result<PeerSummary> {
    let dir = config.state_dir.join("peer-dbos");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let log = config.logs_dir().join("peer-dbos.log");
    let binary = dir.join("dbos-saga-bench");
    let go =
        go_binary().context("the DBOS peer needs Go (`cargo xtask bench --peer dbos` installs golang-go as root)")?;
    println!("bench: building the DBOS peer ({DBOS_MODULE}) with {}", go.display());
    run_logged(
        Command::new(&go)
            .current_dir(config.root.join(DBOS_MODULE))
            .env("GOFLAGS", "-buildvcs=false")
            .args(["build", "-o"])
            .arg(&binary)
            .arg("."),
        &log,
    )
    .with_context(|| format!("building the DBOS peer failed: see {}", log.display()))?;

    let out = dir.join("result.json");
    let _ = std::fs::remove_file(&out);
    let clients: Vec<String> = plan.clients.iter().map(ToString::to_string).collect();
    let rates: Vec<String> = plan.rates.iter().map(ToString::to_string).collect();
    let pg = format!("postgres://postgres:{}@{}:{}", config.postgres_password, config.host(), config.ports.postgres);
    println!(
        "bench: DBOS peer, closed loop, {} clients, then open loop, {} sagas/s, {:?} each (log {})",
        clients.join(", "),
        rates.join(", "),
        plan.phase,
        log.display()
    );
    let ran = run_logged(
        Command::new(&binary)
            .arg("-pg")
            .arg(&pg)
            .arg("-pgdata")
            .arg(saga_stack::postgres::data_dir(config))
            .args(["-clients", &clients.join(",")])
            .args(["-rates", &rates.join(",")])
            .args(["-seconds", &plan.phase.as_secs_f64().to_string()])
            .args(["-users", &plan.users.to_string(), "-products", &plan.products.to_string()])
            .arg("-out")
            .arg(&out),
        &log,
    );
    // It exits non-zero when a check fails, after writing its result: report that.
    let text = std::fs::read_to_string(&out).with_context(|| match &ran {
        Err(error) => format!("the DBOS peer wrote no result ({error:#}): see {}", log.display()),
        Ok(()) => format!("reading {}", out.display()),
    })?;
    let result: ResultFile = serde_json::from_str(&text).with_context(|| format!("parsing {}", out.display()))?;
    let summary = summarize(result);
    if !summary.ok {
        bail!("the DBOS peer's own checks failed (see {} and {})", out.display(), log.display());
    }
    Ok(summary)
}

/// The fields of the peer's result file (`bench/peers/dbos/main.go`, `result`) the
/// comparison reads.
#[derive(Debug, Deserialize)]
struct ResultFile {
    #[serde(default)]
    dbos_transact_golang: String,
    mode: String,
    wait: String,
    ok: bool,
    invariants: Option<ResultInvariants>,
    best_sagas_per_s: f64,
    best_phase: String,
    phases: Vec<ResultPhase>,
    cpu: ResultCpu,
    #[serde(default)]
    peak_rss_mib: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    postgresql_settings: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct ResultInvariants {
    all_hold: bool,
}

/// A closed-loop phase names its client count, an open-loop one its rate (Go omits the other).
#[derive(Debug, Deserialize)]
struct ResultPhase {
    clients: Option<usize>,
    rate: Option<f64>,
    sagas_per_s: f64,
    completed_per_s: f64,
    errors: u64,
    latency: ResultLatency,
    latency_to_history_row: ResultLatency,
    cpu_ms_per_saga: Option<ResultPhaseCpu>,
    /// Peers built before 2026-12-06 report none.
    cores_per_saga: Option<ResultCores>,
}

#[derive(Debug, Deserialize)]
struct ResultPhaseCpu {
    postgres: f64,
    go_process: f64,
}

#[derive(Debug, Deserialize)]
struct ResultCores {
    postgres_waited_ms: f64,
    go_process_waited_ms: f64,
    postgres_on_a_core: f64,
    go_process_on_a_core: f64,
}

#[derive(Debug, Deserialize)]
struct ResultLatency {
    p50_ms: f64,
    #[serde(default)]
    p95_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Deserialize)]
struct ResultCpu {
    postgres_ms_per_saga: f64,
    go_ms_per_saga: f64,
}

/// The figures the comparison needs, from the peer's result file.
fn summarize(result: ResultFile) -> PeerSummary {
    let phase = |p: &ResultPhase| PeerPhase {
        clients: p.clients,
        rate: p.rate,
        sagas_per_second: p.sagas_per_s,
        completed_per_second: p.completed_per_s,
        errors: p.errors,
        // The stack's latency ends at the terminal history row's time; so does this.
        latency_ms: Latency {
            p50: p.latency_to_history_row.p50_ms,
            p95: p.latency_to_history_row.p95_ms,
            p99: p.latency_to_history_row.p99_ms,
            max: None,
            samples: None,
        },
        latency_to_result_ms: Quantiles { p50: p.latency.p50_ms, p99: p.latency.p99_ms },
        cores: p.cpu_ms_per_saga.as_ref().zip(p.cores_per_saga.as_ref()).map(|(cpu, cores)| {
            let share = |cpu_ms, waited_ms, slices| CoreShare { cpu_ms, waited_ms, slices };
            let components = BTreeMap::from([
                (
                    "go process".to_owned(),
                    share(cpu.go_process, cores.go_process_waited_ms, cores.go_process_on_a_core),
                ),
                ("postgres".to_owned(), share(cpu.postgres, cores.postgres_waited_ms, cores.postgres_on_a_core)),
            ]);
            CoreTime {
                sagas: 0,
                cpu_ms_per_saga: cpu.go_process + cpu.postgres,
                waited_ms_per_saga: cores.go_process_waited_ms + cores.postgres_waited_ms,
                slices_per_saga: cores.go_process_on_a_core + cores.postgres_on_a_core,
                components,
            }
        }),
    };
    let (pg, go) = (result.cpu.postgres_ms_per_saga, result.cpu.go_ms_per_saga);
    PeerSummary {
        engine: format!("DBOS Transact for Go {}", result.dbos_transact_golang),
        mode: result.mode,
        wait: result.wait,
        ok: result.ok && result.invariants.is_none_or(|i| i.all_hold),
        max_sagas_per_second: result.best_sagas_per_s,
        max_at: result.best_phase,
        closed_loop: result.phases.iter().filter(|p| p.clients.is_some()).map(phase).collect(),
        open_loop: result.phases.iter().filter(|p| p.rate.is_some()).map(phase).collect(),
        cpu_ms_per_saga: PeerCpu { postgres: pg, go_process: go, total: pg + go },
        peak_rss_mib: result.peak_rss_mib,
        postgresql_settings: result.postgresql_settings,
    }
}

/// Ours over theirs, when both are there and theirs is not zero.
fn ratio(ours: f64, theirs: Option<f64>) -> Option<f64> {
    theirs.filter(|theirs| *theirs > 0.0).map(|theirs| ours / theirs)
}

/// One phase of ours beside the peer's at the same load, if it ran one.
fn side_by_side(ours: &PhaseReport, theirs: Option<&PeerPhase>) -> SideBySide {
    let peer =
        theirs.map(|p| RateAndLatency { sagas_per_second: p.sagas_per_second, latency_ms: p.latency_ms.clone() });
    SideBySide {
        clients: None,
        offered_per_second: None,
        ours: RateAndLatency { sagas_per_second: ours.sagas_per_second, latency_ms: ours.latency_ms.clone() },
        throughput_ratio: ratio(ours.sagas_per_second, peer.as_ref().map(|p| p.sagas_per_second)),
        p50_ratio: ratio(ours.latency_ms.p50, peer.as_ref().map(|p| p.latency_ms.p50)),
        p99_ratio: ratio(ours.latency_ms.p99, peer.as_ref().map(|p| p.latency_ms.p99)),
        peer,
    }
}

/// The stack's figures beside the peer's: `ours_closed` holds the stack's closed-loop phases
/// by client count, `ours_open` its open-loop phases (with `offered_per_second`),
/// `ours_cpu_ms` its CPU per saga with the load generator (the peer's Go process holds its
/// own load generator). Ratios are the stack's over the peer's.
pub fn compare(
    peer: PeerSummary,
    ours_closed: &[(usize, &PhaseReport)],
    ours_open: &[PhaseReport],
    ours_cpu_ms: f64,
    ours_max: f64,
) -> PeerComparison {
    let by_clients = ours_closed
        .iter()
        .map(|(clients, ours)| {
            let theirs = peer.closed_loop.iter().find(|p| p.clients == Some(*clients));
            SideBySide { clients: Some(*clients), ..side_by_side(ours, theirs) }
        })
        .collect();
    let by_rate = ours_open
        .iter()
        .map(|ours| {
            let rate = ours.offered_per_second;
            let theirs = peer
                .open_loop
                .iter()
                .find(|p| p.rate.zip(rate).is_some_and(|(theirs, ours)| (theirs - ours).abs() < 1e-6));
            SideBySide { offered_per_second: rate, ..side_by_side(ours, theirs) }
        })
        .collect();
    PeerComparison {
        by_clients,
        by_rate,
        ours_max_sagas_per_second: ours_max,
        max_ratio: ratio(ours_max, Some(peer.max_sagas_per_second)),
        ours_cpu_ms_per_saga_with_load_generator: ours_cpu_ms,
        cpu_ratio: ratio(ours_cpu_ms, Some(peer.cpu_ms_per_saga.total)),
        result: peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Outcomes;

    fn result_file(all_hold: bool) -> ResultFile {
        let text = serde_json::json!({
            "dbos_transact_golang": "v1.8.0", "mode": "txn", "wait": "result", "ok": true,
            "invariants": { "all_hold": all_hold, "checks": [] }, "best_sagas_per_s": 285.0, "best_phase": "32 clients",
            "phases": [{ "name": "closed loop, 32 clients", "clients": 32, "sagas_per_s": 285.0, "completed_per_s": 228.0,
                         "errors": 0, "latency": { "p50_ms": 100.0, "p95_ms": 150.0, "p99_ms": 180.0 },
                         "latency_to_history_row": { "p50_ms": 99.0, "p95_ms": 140.0, "p99_ms": 170.0 } },
                       { "name": "open loop, 50/s", "rate": 50.0, "sagas_per_s": 50.0, "completed_per_s": 40.0,
                         "errors": 0, "latency": { "p50_ms": 9.0, "p95_ms": 15.0, "p99_ms": 21.0 },
                         "latency_to_history_row": { "p50_ms": 8.0, "p95_ms": 14.0, "p99_ms": 20.0 },
                         "cpu_ms_per_saga": { "postgres": 4.0, "go_process": 2.0, "postgres_plus_go": 6.0 },
                         "cores_per_saga": { "postgres_waited_ms": 1.5, "go_process_waited_ms": 0.5,
                                             "postgres_on_a_core": 40.0, "go_process_on_a_core": 30.0 } }],
            "cpu": { "postgres_ms_per_saga": 3.9, "go_ms_per_saga": 2.2 },
            "peak_rss_mib": { "go_process": 34.5 },
        });
        serde_json::from_value(text).expect("the peer's result file")
    }

    fn ours(sagas_per_second: f64, p50: f64, p99: f64, offered: Option<f64>) -> PhaseReport {
        PhaseReport {
            name: "ours".to_owned(),
            seconds: 30.0,
            sagas_per_second,
            completed_per_second: sagas_per_second,
            outcomes: Outcomes {
                completed: 1,
                inventory_reserved_failed: 0,
                payment_failed: 0,
                shipping_failed: Some(0),
                cancelled: 0,
                errors: 0,
            },
            first_error: None,
            latency_ms: Latency { p50, p95: p99, p99, max: None, samples: None },
            offered_per_second: offered,
            hops: None,
            cores: None,
        }
    }

    /// The summary reads the fields the peer writes (`bench/peers/dbos/main.go`).
    #[test]
    fn a_result_file_is_summarized() {
        let summary = summarize(result_file(true));
        assert!(summary.ok);
        assert_eq!(summary.closed_loop.len(), 1, "the open loop is not a closed one");
        assert_eq!(summary.closed_loop[0].latency_ms.p50, 99.0);
        assert_eq!(summary.open_loop[0].latency_ms.p99, 20.0);
        let cores = summary.open_loop[0].cores.as_ref().expect("the open loop's cores");
        assert_eq!((cores.cpu_ms_per_saga, cores.waited_ms_per_saga, cores.slices_per_saga), (6.0, 2.0, 70.0));
        assert_eq!(cores.components["postgres"], CoreShare { cpu_ms: 4.0, waited_ms: 1.5, slices: 40.0 });
        assert_eq!(summary.closed_loop[0].cores, None, "a phase without the readings has none");
        assert!((summary.cpu_ms_per_saga.total - 6.1).abs() < 1e-9);
        assert!(!summarize(result_file(false)).ok, "a broken invariant of the peer fails its summary");
    }

    #[test]
    fn our_phases_meet_the_peers_at_the_same_load() {
        let summary = summarize(result_file(true));
        let open = [ours(50.0, 16.0, 30.0, Some(50.0)), ours(80.0, 20.0, 40.0, Some(80.0))];
        let (at_32, at_64) = (ours(142.5, 99.0, 340.0, None), ours(150.0, 120.0, 400.0, None));
        let compared = compare(summary, &[(32, &at_32), (64, &at_64)], &open, 18.3, 142.5);
        assert_eq!(compared.by_rate[0].p50_ratio, Some(2.0));
        assert_eq!(compared.by_rate[1].throughput_ratio, None, "no peer phase at 80/s");
        assert_eq!(compared.by_clients[0].throughput_ratio, Some(0.5));
        assert_eq!(compared.by_clients[0].p99_ratio, Some(2.0));
        assert_eq!(compared.by_clients[1].throughput_ratio, None, "no peer phase at 64 clients");
        assert!((compared.cpu_ratio.unwrap_or_default() - 3.0).abs() < 1e-9);
    }
}
