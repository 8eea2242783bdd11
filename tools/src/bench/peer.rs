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
use serde_json::{Value, json};

use saga_stack::config::StackConfig;
use saga_stack::install::{go_binary, run_logged};

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
pub fn run_dbos(config: &StackConfig, plan: &PeerPlan) -> anyhow::Result<Value> {
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
    let result: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", out.display()))?;
    let summary = summarize(&result);
    if summary["ok"].as_bool() != Some(true) {
        bail!("the DBOS peer's own checks failed (see {} and {})", out.display(), log.display());
    }
    Ok(summary)
}

/// The figures the comparison needs, from the peer's result file.
fn summarize(result: &Value) -> Value {
    let phase = |p: &Value| {
        json!({
            "clients": p["clients"],
            "rate": p["rate"],
            "sagas_per_second": p["sagas_per_s"],
            "completed_per_second": p["completed_per_s"],
            "errors": p["errors"],
            // The stack's latency ends at the terminal history row's time; so does this.
            "latency_ms": {
                "p50": p["latency_to_history_row"]["p50_ms"],
                "p95": p["latency_to_history_row"]["p95_ms"],
                "p99": p["latency_to_history_row"]["p99_ms"],
            },
            "latency_to_result_ms": { "p50": p["latency"]["p50_ms"], "p99": p["latency"]["p99_ms"] },
        })
    };
    let phases = || result["phases"].as_array().into_iter().flatten();
    // A closed-loop phase names its client count, an open-loop one its rate.
    let closed: Vec<Value> = phases().filter(|p| p["clients"].as_u64().is_some()).map(phase).collect();
    let open: Vec<Value> = phases().filter(|p| p["rate"].as_f64().is_some()).map(phase).collect();
    let cpu = &result["cpu"];
    let pg = cpu["postgres_ms_per_saga"].as_f64().unwrap_or(f64::NAN);
    let go = cpu["go_ms_per_saga"].as_f64().unwrap_or(f64::NAN);
    json!({
        "engine": format!("DBOS Transact for Go {}", result["dbos_transact_golang"].as_str().unwrap_or("")),
        "mode": result["mode"],
        "wait": result["wait"],
        "ok": result["ok"].as_bool() == Some(true) && result["invariants"]["ok"].as_bool() != Some(false),
        "max_sagas_per_second": result["best_sagas_per_s"],
        "max_at": result["best_phase"],
        "closed_loop": closed,
        "open_loop": open,
        "cpu_ms_per_saga": { "postgres": pg, "go_process": go, "total": pg + go },
        "peak_rss_mib": result["peak_rss_mib"],
        "postgresql_settings": result["postgresql_settings"],
    })
}

/// The stack's figures beside the peer's: `ours_closed` holds the stack's
/// closed-loop phases (their JSON) by client count, `ours_open` its open-loop
/// phases (their JSON, with `offered_per_second`), `ours_cpu_ms` its CPU per saga with the load
/// generator (the peer's Go process holds its own load generator). Ratios are
/// the stack's over the peer's.
pub fn compare(
    peer: &Value,
    ours_closed: &[(usize, Value)],
    ours_open: &[Value],
    ours_cpu_ms: f64,
    ours_max: f64,
) -> Value {
    let ratio = |ours: Option<f64>, theirs: Option<f64>| match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let side_by_side = |ours: &Value, theirs: Option<&Value>| {
        let theirs = theirs.cloned().unwrap_or(Value::Null);
        json!({
            "ours": { "sagas_per_second": ours["sagas_per_second"], "latency_ms": ours["latency_ms"] },
            "peer": { "sagas_per_second": theirs["sagas_per_second"], "latency_ms": theirs["latency_ms"] },
            "throughput_ratio": ratio(ours["sagas_per_second"].as_f64(), theirs["sagas_per_second"].as_f64()),
            "p50_ratio": ratio(ours["latency_ms"]["p50"].as_f64(), theirs["latency_ms"]["p50"].as_f64()),
            "p99_ratio": ratio(ours["latency_ms"]["p99"].as_f64(), theirs["latency_ms"]["p99"].as_f64()),
        })
    };
    let peer_phases = |kind: &str| peer[kind].as_array().cloned().unwrap_or_default();
    let (peer_closed, peer_open) = (peer_phases("closed_loop"), peer_phases("open_loop"));
    let by_clients: Vec<Value> = ours_closed
        .iter()
        .map(|(clients, ours)| {
            let theirs = peer_closed.iter().find(|p| p["clients"].as_u64() == Some(*clients as u64));
            let mut row = side_by_side(ours, theirs);
            row["clients"] = json!(clients);
            row
        })
        .collect();
    let by_rate: Vec<Value> = ours_open
        .iter()
        .map(|ours| {
            let rate = ours["offered_per_second"].as_f64();
            let theirs = peer_open
                .iter()
                .find(|p| p["rate"].as_f64().zip(rate).is_some_and(|(theirs, ours)| (theirs - ours).abs() < 1e-6));
            let mut row = side_by_side(ours, theirs);
            row["offered_per_second"] = json!(rate);
            row
        })
        .collect();
    json!({
        "result": peer,
        "by_clients": by_clients,
        "by_rate": by_rate,
        "ours_max_sagas_per_second": ours_max,
        "max_ratio": ratio(Some(ours_max), peer["max_sagas_per_second"].as_f64()),
        "ours_cpu_ms_per_saga_with_load_generator": ours_cpu_ms,
        "cpu_ratio": ratio(Some(ours_cpu_ms), peer["cpu_ms_per_saga"]["total"].as_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary reads the fields the peer writes (`bench/peers/dbos/main.go`).
    #[test]
    fn a_result_file_is_summarized() {
        let result = json!({
            "dbos_transact_golang": "v1.8.0", "mode": "txn", "wait": "result", "ok": true,
            "invariants": { "ok": true }, "best_sagas_per_s": 285.0, "best_phase": "32 clients",
            "phases": [{ "clients": 32, "sagas_per_s": 285.0, "completed_per_s": 228.0, "errors": 0,
                         "latency": { "p50_ms": 100.0, "p99_ms": 180.0 },
                         "latency_to_history_row": { "p50_ms": 99.0, "p99_ms": 170.0 } },
                       { "rate": 50.0, "sagas_per_s": 50.0, "completed_per_s": 40.0, "errors": 0,
                         "latency": { "p50_ms": 9.0, "p99_ms": 21.0 },
                         "latency_to_history_row": { "p50_ms": 8.0, "p99_ms": 20.0 } }],
            "cpu": { "postgres_ms_per_saga": 3.9, "go_ms_per_saga": 2.2 },
        });
        let summary = summarize(&result);
        assert_eq!(summary["ok"], json!(true));
        assert_eq!(summary["closed_loop"][0]["latency_ms"]["p50"], json!(99.0));
        assert_eq!(summary["closed_loop"].as_array().map(Vec::len), Some(1), "the open loop is not a closed one");
        assert_eq!(summary["open_loop"][0]["latency_ms"]["p99"], json!(20.0));
        assert!((summary["cpu_ms_per_saga"]["total"].as_f64().unwrap_or_default() - 6.1).abs() < 1e-9);
        let failed = summarize(&json!({ "ok": true, "invariants": { "ok": false } }));
        assert_eq!(failed["ok"], json!(false));

        let ours = json!({ "sagas_per_second": 142.5, "latency_ms": { "p50": 99.0, "p99": 340.0 } });
        let ours_open = [
            json!({ "offered_per_second": 50.0, "sagas_per_second": 50.0, "latency_ms": { "p50": 16.0, "p99": 30.0 } }),
            json!({ "offered_per_second": 80.0 }),
        ];
        let compared = compare(&summary, &[(32, ours), (64, json!({}))], &ours_open, 18.3, 142.5);
        assert_eq!(compared["by_rate"][0]["p50_ratio"], json!(2.0));
        assert_eq!(compared["by_rate"][1]["throughput_ratio"], Value::Null, "no peer phase at 80/s");
        assert_eq!(compared["by_clients"][0]["throughput_ratio"], json!(0.5));
        assert_eq!(compared["by_clients"][0]["p99_ratio"], json!(2.0));
        assert_eq!(compared["by_clients"][1]["throughput_ratio"], Value::Null, "no peer phase at 64 clients");
        assert!((compared["cpu_ratio"].as_f64().unwrap_or_default() - 3.0).abs() < 1e-9);
    }
}
