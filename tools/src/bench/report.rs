//! The benchmark's report: what `bench-results/<date>.json` holds, and what its
//! BENCHMARKS.md entry and latency plot are drawn from. The JSON's shape is the one the
//! committed results already have (a test reads the newest of them back unchanged), so
//! every recorded run stays comparable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One run of `cargo xtask bench` (the saga phases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// RFC 3339, seconds.
    pub date: String,
    /// `git rev-parse --short HEAD`, `+changes` when the tree was dirty.
    pub commit: String,
    /// `release` or `debug`.
    pub profile: String,
    pub cores: usize,
    pub replicas: u16,
    pub brokers: u16,
    pub quick: bool,
    pub note: String,
    /// The command line that reproduces the run.
    pub command: String,
    pub setup: Setup,
    pub warm_up: WarmUp,
    pub max_sagas_per_second: f64,
    pub max_completed_per_second: f64,
    /// The closed-loop phase the maximum was reached in.
    pub max_at: String,
    pub closed_loop: Vec<PhaseReport>,
    pub open_loop: Vec<PhaseReport>,
    pub gateway_get_order: Reads,
    /// Per component: what it used over every measured phase.
    pub processes: BTreeMap<String, ProcessUsage>,
    pub cpu_ms_per_saga: CpuPerSaga,
    /// Per request kind and `total`; absent when the counters could not be read.
    pub kafka_requests_per_saga: Option<BTreeMap<String, f64>>,
    /// Per database and `total`; absent when the counters could not be read.
    pub postgres_transactions_per_saga: Option<BTreeMap<String, f64>>,
    /// With `--profile`: per component, its CPU and hottest functions.
    pub perf_profile: Option<BTreeMap<String, ComponentProfile>>,
    pub measured_seconds: f64,
    /// Per consumer group (and service), offsets behind the log end.
    pub kafka_consumer_lag_at_end: BTreeMap<String, i64>,
    pub kafka_consumer_lag_after_drain: BTreeMap<String, i64>,
    pub drain_seconds: f64,
    pub invariants: Invariants,
    /// With `--peer`: the peer's figures beside ours.
    pub peer: Option<PeerComparison>,
    pub bounds: Bounds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub users: usize,
    pub products: usize,
    pub phase_seconds: u64,
    /// How clients learn that their saga ended, and where latency ends.
    pub terminal_detection: String,
}

/// How the stack warmed up before anything was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmUp {
    pub seconds: f64,
    /// CPU of the Kafka nodes' JIT compilers in the last round, in cores.
    pub kafka_jit_compilers_cores_at_end: f64,
}

/// One load phase, closed loop (`offered_per_second` absent) or open loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    pub seconds: f64,
    pub sagas_per_second: f64,
    pub completed_per_second: f64,
    pub outcomes: Outcomes,
    pub first_error: Option<String>,
    pub latency_ms: Latency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_per_second: Option<f64>,
    /// The open-loop phase's latency hop by hop (`hops.rs`; runs before 2026-12-05 have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hops: Option<Hops>,
    /// What the processes did with the cores during the open-loop phase (runs before
    /// 2026-12-06 have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<CoreTime>,
}

/// What the processes did with the cores during a phase, per saga that ended in it: CPU
/// used and time runnable but waiting for a core (the kernel's run-queue delay), in
/// milliseconds summed over every thread, and how many times a thread was put on a core
/// (each a wake-up that may wait). A saga's hops wait for a core wherever their threads
/// do, so these say how much of the latency is queueing for the cores, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreTime {
    pub sagas: u64,
    /// Every component's, the load generator's included.
    pub cpu_ms_per_saga: f64,
    pub waited_ms_per_saga: f64,
    pub slices_per_saga: f64,
    pub components: BTreeMap<String, CoreShare>,
}

/// One component's share of a phase's [`CoreTime`], per saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreShare {
    pub cpu_ms: f64,
    pub waited_ms: f64,
    /// Times its threads were put on a core.
    pub slices: f64,
}

/// A phase's sagas split into the hops of their causal paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hops {
    /// Sagas whose path was followed from the request to the terminal row.
    pub sagas: u64,
    /// Sagas of the phase whose path could not be followed.
    pub unlinked: u64,
    /// The whole path, which is the latency the phase reports.
    pub total: HopStats,
    /// Each saga's hops summed by kind.
    pub kinds: Vec<HopStats>,
    /// Each hop, in the order of the longest path, then the rest.
    pub hops: Vec<HopStats>,
}

/// One hop's (or kind's) figures, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopStats {
    pub name: String,
    /// False for a figure beside the path (the relay's acknowledgements).
    pub on_path: bool,
    pub sagas: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
    /// Its mean over the slowest 1 % of the sagas (by their whole latency);
    /// none when no saga of those took this hop.
    pub mean_in_slowest: Option<f64>,
}

/// How the sagas of a phase ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub completed: u64,
    pub inventory_reserved_failed: u64,
    pub payment_failed: u64,
    /// Refused by the shipping step (reports before it have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_failed: Option<u64>,
    pub cancelled: u64,
    /// Requests refused or sagas not ended within the timeout.
    pub errors: u64,
}

/// Milliseconds; `max` and `samples` only where this run measured them (the peer reports
/// quantiles only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
}

/// `GET /orders/{id}` through the gateway, closed loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reads {
    pub clients: usize,
    pub requests_per_second: f64,
    pub errors: u64,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub cpu_seconds: f64,
    pub cpu_percent_of_one_core: f64,
    pub peak_rss_mib: f64,
    pub processes: usize,
}

/// CPU milliseconds per saga over the saga phases, per component, and in total without the
/// load generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuPerSaga {
    pub stack_total: f64,
    /// The sagas the figures are divided by.
    pub sagas: u64,
    #[serde(flatten)]
    pub components: BTreeMap<String, f64>,
}

/// The load generator's name among the components (its CPU is measured, not the stack's).
pub const LOAD_GENERATOR: &str = "load generator";

/// A component's share of `perf` samples during the profiled phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentProfile {
    pub cpu_ms: f64,
    /// `(function, share of the component's CPU)`, heaviest first.
    pub hottest_self: Vec<(String, f64)>,
    /// `(thread, share)`, heaviest first.
    pub threads: Vec<(String, f64)>,
    /// The flame graph's SVG, relative to the workspace.
    pub flame_graph: String,
}

/// Every invariant after the load, each with the numbers it compares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invariants {
    pub ok: bool,
    pub checks: Vec<Check>,
    pub non_terminal_orders: i64,
    pub unpublished_outbox_rows: BTreeMap<String, i64>,
    pub completed_orders: i64,
    pub completed_total_minor: i64,
    pub debited_payments: i64,
    pub debited_total_minor: i64,
    pub balances_before_minor: i64,
    pub balances_after_minor: i64,
    pub stock_before: i64,
    pub stock_after: i64,
    pub live_reservations: i64,
    pub reserved_items: i64,
    pub reserved_column: i64,
    /// Parcels booked and not cancelled (reports before the shipping step have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked_shipments: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub check: String,
    pub holds: bool,
}

/// What this machine allows, measured with the services stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub pgbench: PgbenchBound,
    pub kafka: KafkaBound,
    pub saga_ratio_to_pgbench_bound: f64,
    pub saga_ratio_to_kafka_bound: f64,
}

/// pgbench running one saga's SQL against a copy of each database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgbenchBound {
    pub clients_per_database: u32,
    pub seconds: u64,
    pub synchronous_commit: String,
    pub sagas_per_second_per_database: BTreeMap<String, f64>,
    /// The slowest database's rate.
    pub sagas_per_second_bound: f64,
}

/// Kafka's own producer and consumer performance tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaBound {
    pub records: u64,
    pub record_size: u32,
    pub producer_records_per_second: f64,
    pub consumer_records_per_second: f64,
    pub messages_per_saga: f64,
    pub deliveries_per_saga: f64,
    pub sagas_per_second_bound: f64,
}

/// The peer's summary and ours beside it; ratios are ours over the peer's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerComparison {
    pub result: PeerSummary,
    pub by_clients: Vec<SideBySide>,
    pub by_rate: Vec<SideBySide>,
    pub ours_max_sagas_per_second: f64,
    pub max_ratio: Option<f64>,
    pub ours_cpu_ms_per_saga_with_load_generator: f64,
    pub cpu_ratio: Option<f64>,
}

/// One closed-loop client count (`clients`) or open-loop rate (`offered_per_second`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideBySide {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_per_second: Option<f64>,
    pub ours: RateAndLatency,
    pub peer: Option<RateAndLatency>,
    pub throughput_ratio: Option<f64>,
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateAndLatency {
    pub sagas_per_second: f64,
    pub latency_ms: Latency,
}

/// The figures of the peer's own result file the comparison uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerSummary {
    pub engine: String,
    pub mode: String,
    pub wait: String,
    pub ok: bool,
    pub max_sagas_per_second: f64,
    pub max_at: String,
    pub closed_loop: Vec<PeerPhase>,
    pub open_loop: Vec<PeerPhase>,
    pub cpu_ms_per_saga: PeerCpu,
    pub peak_rss_mib: BTreeMap<String, f64>,
    pub postgresql_settings: BTreeMap<String, String>,
}

/// One of the peer's phases: a closed loop names its `clients`, an open loop its `rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerPhase {
    pub clients: Option<usize>,
    pub rate: Option<f64>,
    pub sagas_per_second: f64,
    pub completed_per_second: f64,
    pub errors: u64,
    /// To the terminal history row's time, as ours.
    pub latency_ms: Latency,
    /// To the workflow's result.
    pub latency_to_result_ms: Quantiles,
    /// What the cores did (its Go process and PostgreSQL), as ours; `sagas` is not
    /// reported. Runs before 2026-12-06 have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<CoreTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerCpu {
    pub postgres: f64,
    pub go_process: f64,
    pub total: f64,
}

/// A number for a table: no decimals from 100 on, one below, `-` when there is none.
pub fn f(value: f64) -> String {
    match value {
        v if !v.is_finite() => "-".to_owned(),
        v if v >= 100.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

/// [`f`] of a figure that may be missing.
pub fn f_opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every number as a float: the peer's figures were copied from its Go output, where a
    /// whole number (`15`) has no decimal point, and the typed report writes `15.0`.
    fn numbers_as_floats(value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Number(n) => n.as_f64().map_or(Value::Number(n), |f| serde_json::json!(f)),
            Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
            Value::Object(fields) => {
                Value::Object(fields.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect())
            }
            other => other,
        }
    }

    /// Every committed result of this shape reads back into the report and writes out
    /// unchanged: the typed report is the JSON the earlier runs recorded, field for field.
    #[test]
    fn committed_results_read_back_unchanged() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        // With the peer, and with a profile.
        for name in ["20261203T175300Z.json", "20261203T171045Z.json"] {
            let path = root.join("bench-results").join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let recorded: serde_json::Value = serde_json::from_str(&text).expect("json");
            let report: Report = serde_json::from_value(recorded.clone())
                .unwrap_or_else(|e| panic!("{name} does not read as a report: {e}"));
            let written = serde_json::to_value(&report).expect("serialise");
            assert_eq!(numbers_as_floats(written), numbers_as_floats(recorded), "{name}");
        }
    }

    #[test]
    fn numbers_are_written_as_the_tables_have_them() {
        assert_eq!(f(243.27), "243");
        assert_eq!(f(36.895), "36.9");
        assert_eq!(f(f64::NAN), "-");
        assert_eq!(f_opt(None), "-");
    }
}
