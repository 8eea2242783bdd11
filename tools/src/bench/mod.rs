//! `cargo xtask bench`: saga throughput and latency through the real stack
//! (gateway, services, Kafka, PostgreSQL, Redis), next to what this machine
//! allows (pgbench with the saga's SQL, Kafka's own perf tools), checked by
//! the invariants after the load.

mod bounds;
mod flood;
mod hops;
pub mod load;
pub(crate) mod observe;
pub(crate) mod peer;
mod plot;
mod profile;
pub(crate) mod report;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use saga_stack::config::{Defaults, env};
use saga_stack::{Component, StackConfig, UpOptions};

use self::load::{Api, Phase, World};
use self::report::{
    Bounds, CpuPerSaga, LOAD_GENERATOR, Latency, Outcomes, PhaseReport, ProcessUsage, Reads, Report, Setup, f, f_opt,
};

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A short run (under two minutes once built) for development.
    #[arg(long)]
    pub quick: bool,
    /// Closed-loop client counts to try; the best rate is the maximum.
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Seconds of each load phase.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Open-loop arrival rates (orders/s); default: 25, 50 and 80 % of the closed-loop maximum.
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<f64>>,
    /// Customers to register (a tenth without money).
    #[arg(long)]
    pub users: Option<usize>,
    /// Products with stock (one more has none).
    #[arg(long)]
    pub products: Option<usize>,
    #[command(flatten)]
    pub run: RunOptions,
    /// The stack's shape: instances per service and Kafka nodes.
    #[command(flatten)]
    pub shape: saga_stack::config::ShapeArgs,
    /// How clients learn that their saga ended: the order's event stream
    /// (pushed), or polling `GET /orders/{id}` every 100 ms (what it cost before).
    #[arg(long, value_enum, default_value_t)]
    pub wait: load::WaitBy,
    /// Also run the same saga on this peer, in the same run, with the same
    /// closed-loop client counts, and report both side by side.
    #[arg(long, value_enum)]
    pub peer: Option<peer::Peer>,
    /// Sample every process of the stack with `perf` during the first
    /// closed-loop phase (20 s at most) and draw a flame graph of each into
    /// `<state>/profiles/`. The profiler's own cost is in that run's numbers,
    /// so it is not appended to BENCHMARKS.md.
    #[arg(long)]
    pub profile: bool,
    /// Instead of the saga phases: login latency with and without a flood
    /// of registrations beside it (the user service's password queue under attack).
    #[arg(long, conflicts_with_all = ["profile", "peer", "login_flood"])]
    pub registration_flood: bool,
    /// Instead of the saga phases: login latency with and without two accounts logging in
    /// with their correct password as fast as they are answered, from many clients at once.
    #[arg(long, conflicts_with_all = ["profile", "peer"])]
    pub login_flood: bool,
}

/// Options of every command that measures a stack of its own and records
/// the result (`bench` in BENCHMARKS.md, `chaos` in RELIABILITY.md).
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Run debug builds of the services instead of release builds.
    #[arg(long)]
    pub debug: bool,
    /// Do not append the result to the results file (the JSON is still written).
    #[arg(long)]
    pub no_record: bool,
    /// A note for the entry (e.g. what changed since the last run).
    #[arg(long, default_value = "")]
    pub note: String,
}

struct Plan {
    clients: Vec<usize>,
    phase: Duration,
    rates: Option<Vec<f64>>,
    users: usize,
    products: usize,
    pgbench: Duration,
    kafka_records: u64,
    /// Longest warm-up before the measured phases.
    warm_up: Duration,
}

impl Plan {
    fn from(args: &BenchArgs) -> Plan {
        let quick = args.quick;
        Plan {
            clients: args.clients.clone().unwrap_or_else(|| if quick { vec![16] } else { vec![8, 32, 64] }),
            phase: Duration::from_secs(args.seconds.unwrap_or(if quick { 8 } else { 30 })),
            rates: args.rates.clone(),
            users: args.users.unwrap_or(if quick { 40 } else { 200 }),
            products: args.products.unwrap_or(if quick { 20 } else { 100 }),
            pgbench: Duration::from_secs(if quick { 8 } else { 30 }),
            kafka_records: if quick { 100_000 } else { 500_000 },
            warm_up: Duration::from_secs(if quick { 30 } else { 120 }),
        }
    }
}

/// The benchmark's own stack (`.state/bench`, port base 25000; override with
/// SAGA_BENCH_STATE_DIR / SAGA_BENCH_PORT_BASE), apart from the development
/// and test stacks.
fn bench_config(release: bool) -> anyhow::Result<StackConfig> {
    own_stack_config("bench", 25000, release)
}

/// A stack of a command's own: `.state/<name>` and `port_base`, overridden by
/// SAGA_<NAME>_STATE_DIR / SAGA_<NAME>_PORT_BASE; the machine-wide settings
/// (Kafka libraries, PostgreSQL binaries, heap, free disk) as for any stack.
pub(crate) fn own_stack_config(name: &str, port_base: u16, release: bool) -> anyhow::Result<StackConfig> {
    let defaults = Defaults { state_dir: PathBuf::from(format!(".state/{name}")), port_base };
    let upper = name.to_uppercase();
    let mut config = StackConfig::resolve(defaults, |var| match var {
        env::STATE_DIR => std::env::var(format!("SAGA_{upper}_STATE_DIR")).ok(),
        env::PORT_BASE => std::env::var(format!("SAGA_{upper}_PORT_BASE")).ok(),
        env::KAFKA_LIBS | env::POSTGRES_BIN | env::KAFKA_HEAP | env::MIN_FREE_MB | env::GO_SERVICES => {
            std::env::var(var).ok()
        }
        _ => None,
    })?;
    config.release = release;
    Ok(config)
}

/// Starts a fresh bench stack, runs everything, stops the stack whatever happened.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.shape.apply(bench_config(!args.run.debug)?);
    saga_stack::down(&config);
    saga_stack::purge(&config)?;
    saga_stack::install::ensure_bench_packages(&config, args.profile)?;
    if args.peer.is_some() {
        saga_stack::install::ensure_peer_packages(&config)?;
    }
    println!("bench: building ({}) and starting the stack in {}", profile(&config), config.state_dir.display());
    if args.registration_flood {
        return password_flood(&config, &args, flood::Flood::Registrations).await;
    }
    if args.login_flood {
        return password_flood(&config, &args, flood::Flood::Logins).await;
    }
    let outcome = match saga_stack::up(&config, UpOptions { services: true, build: true }).await {
        Ok(()) => measure(&config, &args).await,
        Err(error) => Err(error),
    };
    let stopped = saga_stack::down(&config);
    println!("bench stack stopped: {}", stopped.join(", "));
    let report = outcome?;
    let ok = report.invariants.ok;
    let json_path = write_json(&config, &report)?;
    println!("results: {}", json_path.display());
    let mut markdown = markdown(&report, &args);
    if let Some(svg) = plot::latency_against_load(&report)? {
        let plot_path = json_path.with_extension("svg");
        std::fs::write(&plot_path, &svg).with_context(|| format!("writing {}", plot_path.display()))?;
        println!("plot: {}", plot_path.display());
        let relative = plot_path.strip_prefix(&config.root).unwrap_or(&plot_path).display().to_string();
        let _ = write!(markdown, "\n![Latency against offered load, this run]({relative})\n");
        if ok && !args.run.no_record && !args.profile {
            // The copy BENCHMARKS.md's opening shows: always the newest recorded run's.
            let latest = config.root.join(LATEST_PLOT);
            std::fs::write(&latest, &svg).with_context(|| format!("writing {}", latest.display()))?;
        }
    }
    if let Some(svg) = plot::hops_by_kind(&report)? {
        let plot_path = json_path.with_extension("hops.svg");
        std::fs::write(&plot_path, &svg).with_context(|| format!("writing {}", plot_path.display()))?;
        println!("plot: {}", plot_path.display());
        let relative = plot_path.strip_prefix(&config.root).unwrap_or(&plot_path).display().to_string();
        let _ =
            write!(markdown, "\n![Mean latency by kind of hop, all sagas and the slowest 1 %, this run]({relative})\n");
    }
    println!("\n{markdown}");
    if !ok {
        bail!("the invariants do not hold after the run: its numbers are not reported (see {})", json_path.display());
    }
    if !args.run.no_record && !args.profile {
        append_benchmarks(&config, &markdown)?;
        println!("appended to BENCHMARKS.md");
    }
    Ok(())
}

/// `bench --registration-flood` and `--login-flood`: its own stack, its own entry.
async fn password_flood(config: &StackConfig, args: &BenchArgs, kind: flood::Flood) -> anyhow::Result<()> {
    let outcome = match saga_stack::up(config, UpOptions { services: true, build: true }).await {
        Ok(()) => flood::measure(&Api::new(&config.gateway_url())?, args.quick, kind).await,
        Err(error) => Err(error),
    };
    let stopped = saga_stack::down(config);
    println!("bench stack stopped: {}", stopped.join(", "));
    let mut report = outcome?;
    report.commit = git_commit(config);
    let json_path = write_json(config, &report)?;
    println!("results: {}", json_path.display());
    let command = format!("cargo xtask bench --{}{}", kind.flag(), if args.quick { " --quick" } else { "" });
    let stamp = format!(
        "{} (commit {}, {} build, {} cores)",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        git_commit(config),
        profile(config),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let markdown = flood::markdown(&report, &command, &stamp);
    println!("\n{markdown}");
    if !args.run.no_record {
        append_benchmarks(config, &markdown)?;
        println!("appended to BENCHMARKS.md");
    }
    Ok(())
}

fn profile(config: &StackConfig) -> &'static str {
    if config.release { "release" } else { "debug" }
}

/// How the stack warmed up before anything was measured.
struct WarmUp {
    seconds: f64,
    /// CPU of the Kafka nodes' JIT compilers in the last round, in cores.
    compilers_at_end: f64,
}

/// Rounds of warm-up load at the first client count, until the Kafka nodes'
/// JIT compilers are nearly idle (under [`WARM_COMPILERS`] of a core) or
/// [`Plan::warm_up`] has passed: measured on a cold broker, compiling its hot
/// paths was half of Kafka's CPU (`perf`: C2 48 %, C1 5 % of its samples in
/// the first phase), a cost of its first minutes, not of a saga. Nothing of
/// these rounds is measured.
async fn warm_up(config: &StackConfig, api: &Api, world: &Arc<World>, plan: &Plan) -> WarmUp {
    const ROUND: Duration = Duration::from_secs(5);
    let clients = plan.clients.first().copied().unwrap_or(16);
    let start = Instant::now();
    let mut compilers_at_end = f64::NAN;
    while start.elapsed() < plan.warm_up {
        let before = observe::kafka_jit_seconds(config);
        let round = Instant::now();
        load::closed_loop(api, world.clone(), clients, ROUND).await;
        compilers_at_end = (observe::kafka_jit_seconds(config) - before) / round.elapsed().as_secs_f64();
        if compilers_at_end < WARM_COMPILERS {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "bench: warmed up for {seconds:.0} s (Kafka's JIT compilers at {:.0} % of a core)",
        compilers_at_end * 100.0
    );
    WarmUp { seconds, compilers_at_end }
}

/// Warm enough: the JIT compilers of the Kafka nodes use less than this share of one core.
const WARM_COMPILERS: f64 = 0.05;

/// A phase as the report has it.
fn phase_report(phase: &Phase) -> PhaseReport {
    PhaseReport {
        name: phase.name.clone(),
        seconds: phase.elapsed.as_secs_f64(),
        sagas_per_second: phase.rate(),
        completed_per_second: phase.completed as f64 / phase.elapsed.as_secs_f64().max(1e-9),
        outcomes: Outcomes {
            completed: phase.completed,
            inventory_reserved_failed: phase.stock_failed,
            payment_failed: phase.payment_failed,
            shipping_failed: Some(phase.shipping_failed),
            cancelled: phase.cancelled,
            errors: phase.errors,
        },
        first_error: phase.first_error.clone(),
        latency_ms: latency(phase),
        offered_per_second: None,
        hops: None,
        cores: None,
    }
}

/// A phase's latency quantiles, in milliseconds.
fn latency(phase: &Phase) -> Latency {
    let q = |p: f64| phase.latency.value_at_quantile(p) as f64 / 1000.0;
    Latency {
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        max: Some(phase.latency.max() as f64 / 1000.0),
        samples: Some(phase.latency.len()),
    }
}

async fn measure(config: &StackConfig, args: &BenchArgs) -> anyhow::Result<Report> {
    let plan = Plan::from(args);
    let api = Api::new(&config.gateway_url())?.waiting_by(args.wait);
    let (email, password) = saga_stack::admin_credentials();
    println!("bench: setup ({} users, {} products), not measured", plan.users, plan.products);
    let world = Arc::new(load::setup(&api, (&email, &password), plan.users, plan.products).await?);
    let before = observe::totals(config).await?;
    let warm_up = warm_up(config, &api, &world, &plan).await;
    let kafka_requests_now = || {
        observe::kafka_requests(config)
            .inspect_err(|error| eprintln!("cannot read the Kafka nodes' request counters: {error:#}"))
            .ok()
    };
    let start_requests = kafka_requests_now();
    let postgres_transactions_now = || async {
        observe::postgres_transactions(config)
            .await
            .inspect_err(|error| eprintln!("cannot read the databases' transaction counts: {error:#}"))
            .ok()
    };
    let start_transactions = postgres_transactions_now().await;
    let start_usage = observe::snapshot(config);

    let mut closed = Vec::new();
    let mut profiled = None;
    for &clients in &plan.clients {
        println!("bench: closed loop, {clients} clients, {:?}", plan.phase);
        let recording = match args.profile && closed.is_empty() {
            true => Some(profile::start(config, plan.phase.as_secs().clamp(1, 20))?),
            false => None,
        };
        let phase = load::closed_loop(&api, world.clone(), clients, plan.phase).await;
        if let Some(recording) = recording {
            profiled = Some(profile::finish(recording).await?);
            println!("  flame graphs in {}", config.state_dir.join("profiles").display());
        }
        println!("  {:.1} sagas/s, p50 {:.1} ms", phase.rate(), phase.latency.value_at_quantile(0.5) as f64 / 1000.0);
        closed.push(phase);
    }
    let best = closed.iter().max_by(|a, b| a.rate().total_cmp(&b.rate())).context("no closed-loop phase ran")?;
    let max_rate = best.rate();
    let rates = plan
        .rates
        .clone()
        .unwrap_or_else(|| [0.25, 0.5, 0.8].iter().map(|f| (max_rate * f * 10.0).round().max(1.0) / 10.0).collect());
    let mut open = Vec::new();
    let mut open_cores = Vec::new();
    for &rate in &rates {
        println!("bench: open loop, {rate}/s, {:?}", plan.phase);
        let before = observe::snapshot(config);
        let phase = load::open_loop(&api, world.clone(), rate, plan.phase).await;
        open_cores.push(observe::core_time(&before, &observe::snapshot(config), phase.terminal()));
        println!(
            "  p50 {:.1} ms, p99 {:.1} ms",
            phase.latency.value_at_quantile(0.5) as f64 / 1000.0,
            phase.latency.value_at_quantile(0.99) as f64 / 1000.0
        );
        open.push(phase);
    }
    let sagas_end_usage = observe::snapshot(config);
    let end_requests = kafka_requests_now();
    let end_transactions = postgres_transactions_now().await;
    println!("bench: gateway GET /orders/{{id}}");
    let reads_clients = plan.clients.iter().copied().max().unwrap_or(16);
    let reads = load::read_throughput(&api, &world, reads_clients, plan.phase.min(Duration::from_secs(10))).await?;
    let end_usage = observe::snapshot(config);
    let measured_seconds: f64 =
        closed.iter().chain(&open).map(|p| p.elapsed.as_secs_f64()).sum::<f64>() + reads.elapsed.as_secs_f64();

    let lag_now = || {
        observe::kafka_lag(config).unwrap_or_else(|error| {
            eprintln!("cannot read consumer lag: {error:#}");
            Default::default()
        })
    };
    let lag = lag_now();
    println!("bench: draining and checking the invariants");
    let drained = observe::drain(config, Duration::from_secs(120)).await?;
    let lag_drained = lag_now();
    let invariants = observe::invariants(config, before).await?;
    println!("bench: each open-loop saga's latency, hop by hop");
    let mut open_hops = Vec::with_capacity(open.len());
    for phase in &open {
        let hops = hops::measure(config, &phase.placed).await;
        open_hops.push(hops.inspect_err(|error| eprintln!("cannot split the latency into hops: {error:#}")).ok());
    }
    let usage = observe::usage(&start_usage, &end_usage);
    let sagas: u64 = closed.iter().chain(&open).map(Phase::terminal).sum();
    let cpu_per_saga = cpu_ms_per_saga(&observe::usage(&start_usage, &sagas_end_usage), sagas);
    let kafka_requests_per_saga = match (&start_requests, &end_requests) {
        (Some(before), Some(after)) => Some(observe::per_saga(before, after, sagas)),
        _ => None,
    };
    let transactions_per_saga = match (&start_transactions, &end_transactions) {
        (Some(before), Some(after)) => Some(observe::per_saga(before, after, sagas)),
        _ => None,
    };

    // The bounds run with the services stopped: nothing else competes for the
    // two resources, and the databases can be copied.
    for service in Component::all(config).into_iter().rev().filter(|c| matches!(c, Component::Service(..))) {
        service.tracked(config).stop(Signal::SIGTERM, Duration::from_secs(15));
    }
    Component::Gateway.tracked(config).stop(Signal::SIGTERM, Duration::from_secs(15));
    println!("bench: pgbench with one saga's SQL, {:?}", plan.pgbench);
    let pg_clients = 4;
    let pg = bounds::pgbench(config, pg_clients, plan.pgbench).await?;
    println!("bench: Kafka producer and consumer performance, {} records", plan.kafka_records);
    let kafka = bounds::kafka(config, plan.kafka_records).await?;
    let peer = match args.peer {
        Some(peer::Peer::Dbos) => {
            // The peer gets the machine and the PostgreSQL server to itself, as the stack had.
            for other in Component::all(config).into_iter().rev().filter(|c| !matches!(c, Component::Postgres)) {
                other.tracked(config).stop(Signal::SIGTERM, Duration::from_secs(30));
            }
            let plan = peer::PeerPlan {
                clients: plan.clients.clone(),
                rates: rates.clone(),
                phase: plan.phase,
                users: plan.users,
                products: plan.products,
            };
            let config = config.clone();
            Some(tokio::task::spawn_blocking(move || peer::run_dbos(&config, &plan)).await??)
        }
        None => None,
    };
    let processes = usage
        .iter()
        .map(|(name, u)| {
            let process = ProcessUsage {
                cpu_seconds: u.cpu_seconds,
                cpu_percent_of_one_core: 100.0 * u.cpu_seconds / measured_seconds.max(1e-9),
                peak_rss_mib: u.peak_rss_kib as f64 / 1024.0,
                processes: u.processes,
            };
            (name.clone(), process)
        })
        .collect();
    let closed_loop: Vec<PhaseReport> = closed.iter().map(phase_report).collect();
    let open_loop: Vec<PhaseReport> = open
        .iter()
        .zip(&rates)
        .zip(open_hops)
        .zip(open_cores)
        .map(|(((phase, rate), hops), cores)| PhaseReport {
            offered_per_second: Some(*rate),
            hops,
            cores: Some(cores),
            ..phase_report(phase)
        })
        .collect();
    let peer = peer.map(|p| {
        let ours: Vec<(usize, &PhaseReport)> = plan.clients.iter().copied().zip(&closed_loop).collect();
        let with_load_generator =
            cpu_per_saga.stack_total + cpu_per_saga.components.get(LOAD_GENERATOR).copied().unwrap_or(0.0);
        peer::compare(p, &ours, &open_loop, with_load_generator, max_rate)
    });
    let bounds = Bounds {
        saga_ratio_to_pgbench_bound: max_rate / pg.sagas_per_second_bound,
        saga_ratio_to_kafka_bound: max_rate / kafka.sagas_per_second_bound,
        pgbench: pg,
        kafka,
    };
    Ok(Report {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        commit: git_commit(config),
        profile: profile(config).to_owned(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        replicas: config.shape.replicas,
        brokers: config.shape.brokers,
        quick: args.quick,
        note: args.run.note.clone(),
        command: command_line(args),
        setup: Setup {
            users: plan.users,
            products: plan.products,
            phase_seconds: plan.phase.as_secs(),
            terminal_detection: match args.wait {
                load::WaitBy::Stream => {
                    "the order's event stream until `end`; latency to the terminal history row's time"
                }
                load::WaitBy::Poll => "GET /orders/{id} every 100 ms; latency to the terminal history row's time",
            }
            .to_owned(),
        },
        warm_up: report::WarmUp {
            seconds: warm_up.seconds,
            kafka_jit_compilers_cores_at_end: warm_up.compilers_at_end,
        },
        max_sagas_per_second: max_rate,
        max_completed_per_second: best.completed as f64 / best.elapsed.as_secs_f64().max(1e-9),
        max_at: best.name.clone(),
        closed_loop,
        open_loop,
        gateway_get_order: Reads {
            clients: reads_clients,
            requests_per_second: reads.rate(),
            errors: reads.errors,
            latency_ms: latency(&reads),
        },
        processes,
        cpu_ms_per_saga: cpu_per_saga,
        kafka_requests_per_saga,
        postgres_transactions_per_saga: transactions_per_saga,
        perf_profile: profiled,
        measured_seconds,
        kafka_consumer_lag_at_end: lag,
        kafka_consumer_lag_after_drain: lag_drained,
        drain_seconds: drained.as_secs_f64(),
        invariants,
        peer,
        bounds,
    })
}

/// CPU milliseconds per saga over the saga phases, per component and in
/// total without the load generator: what a saga costs, which on a machine
/// whose cores the whole stack shares says more than a noisy rate. It
/// includes how the clients wait for their sagas (event streams, or polls).
fn cpu_ms_per_saga(usage: &std::collections::BTreeMap<String, observe::Usage>, sagas: u64) -> CpuPerSaga {
    let per_saga = |seconds: f64| 1000.0 * seconds / (sagas.max(1) as f64);
    let components = usage.iter().map(|(name, u)| (name.clone(), per_saga(u.cpu_seconds))).collect();
    let stack: f64 = usage.iter().filter(|(name, _)| *name != LOAD_GENERATOR).map(|(_, u)| u.cpu_seconds).sum();
    CpuPerSaga { stack_total: per_saga(stack), sagas, components }
}

pub(crate) fn git_commit(config: &StackConfig) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(&config.root)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = !run(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{commit}+changes") } else { commit }
}

/// The newest recorded run's latency plot, which BENCHMARKS.md embeds.
const LATEST_PLOT: &str = "bench-results/latency-against-load.svg";

/// `bench-results/<date>.json` in the workspace: small, kept with the
/// BENCHMARKS.md entry it backs.
fn write_json(config: &StackConfig, report: &impl serde::Serialize) -> anyhow::Result<PathBuf> {
    let dir = config.root.join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!("{stamp}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Service settings read from the environment that change what a run
/// measures; the services inherit them from the bench, so the entry's
/// command line names those that were set.
const SERVICE_SETTINGS: [&str; 9] = [
    "SAGA_GO_SERVICES",
    "SAGA_KAFKA_SETTINGS",
    "GOMAXPROCS",
    "CONSUMER_MAX_BATCH",
    "CONSUMER_WORKERS",
    "TOKIO_WORKER_THREADS",
    "KAFKA_LINGER_MS",
    "DATABASE_MAX_CONNECTIONS",
    "ORDER_SWEEP_INTERVAL_MS",
];

fn command_line(args: &BenchArgs) -> String {
    let mut line = String::new();
    for name in SERVICE_SETTINGS {
        if let Ok(value) = std::env::var(name) {
            let _ = write!(line, "{name}={value} ");
        }
    }
    line.push_str("cargo xtask bench");
    let list = |v: &[String]| v.join(",");
    if args.quick {
        line.push_str(" --quick");
    }
    if let Some(c) = &args.clients {
        let _ = write!(line, " --clients {}", list(&c.iter().map(ToString::to_string).collect::<Vec<_>>()));
    }
    if let Some(s) = args.seconds {
        let _ = write!(line, " --seconds {s}");
    }
    if let Some(r) = &args.rates {
        let _ = write!(line, " --rates {}", list(&r.iter().map(ToString::to_string).collect::<Vec<_>>()));
    }
    if let Some(u) = args.users {
        let _ = write!(line, " --users {u}");
    }
    if let Some(p) = args.products {
        let _ = write!(line, " --products {p}");
    }
    if let Some(replicas) = args.shape.replicas {
        let _ = write!(line, " --replicas {replicas}");
    }
    if let Some(brokers) = args.shape.brokers {
        let _ = write!(line, " --brokers {brokers}");
    }
    if args.run.debug {
        line.push_str(" --debug");
    }
    if args.wait == load::WaitBy::Poll {
        line.push_str(" --wait poll");
    }
    if let Some(peer::Peer::Dbos) = args.peer {
        line.push_str(" --peer dbos");
    }
    line
}

/// The BENCHMARKS.md entry: the command, then one table of rates and latencies.
fn markdown(r: &Report, args: &BenchArgs) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {} (commit {}, {} build, {} cores, {} instance(s) per service, {} Kafka node(s))\n",
        r.date, r.commit, r.profile, r.cores, r.replicas, r.brokers
    );
    if !args.run.note.is_empty() {
        let _ = writeln!(md, "{}\n", args.run.note);
    }
    let _ = writeln!(md, "`{}`\n", command_line(args));
    let _ = writeln!(
        md,
        "| phase | sagas/s | completed/s | ok / stock fail / pay fail / ship fail / cancelled / errors | p50 ms | p95 ms | p99 ms | max ms |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for phase in r.closed_loop.iter().chain(&r.open_loop) {
        let (o, l) = (&phase.outcomes, &phase.latency_ms);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} / {} / {} / {} / {} / {} | {} | {} | {} | {} |",
            phase.name,
            f(phase.sagas_per_second),
            f(phase.completed_per_second),
            o.completed,
            o.inventory_reserved_failed,
            o.payment_failed,
            o.shipping_failed.unwrap_or(0),
            o.cancelled,
            o.errors,
            f(l.p50),
            f(l.p95),
            f(l.p99),
            f_opt(l.max),
        );
    }
    let b = &r.bounds;
    // Every database the run measured, by its service: runs before the shipping step have three.
    let per_database: Vec<String> = b
        .pgbench
        .sagas_per_second_per_database
        .iter()
        .map(|(db, rate)| format!("{} {}", db.strip_suffix("_service").unwrap_or(db), f(*rate)))
        .collect();
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "- maximum: **{} sagas/s** ({} completed/s) at {}",
        f(r.max_sagas_per_second),
        f(r.max_completed_per_second),
        r.max_at
    );
    let _ = writeln!(
        md,
        "- bounds: pgbench (one saga's SQL, {} clients per database) **{} sagas/s** ({}); Kafka perf tools **{} sagas/s** (producer {} rec/s / {} per saga, consumer {} rec/s / {} per saga)",
        b.pgbench.clients_per_database,
        f(b.pgbench.sagas_per_second_bound),
        per_database.join(", "),
        f(b.kafka.sagas_per_second_bound),
        f(b.kafka.producer_records_per_second),
        b.kafka.messages_per_saga,
        f(b.kafka.consumer_records_per_second),
        b.kafka.deliveries_per_saga,
    );
    let ratio = |x: f64| if x.is_finite() { format!("{:.1} %", 100.0 * x) } else { "-".to_owned() };
    let _ = writeln!(
        md,
        "- saga rate / bound: {} of pgbench, {} of Kafka",
        ratio(b.saga_ratio_to_pgbench_bound),
        ratio(b.saga_ratio_to_kafka_bound)
    );
    let reads = &r.gateway_get_order;
    let _ = writeln!(
        md,
        "- gateway `GET /orders/{{id}}`: {} req/s ({} clients, p50 {} ms, p99 {} ms)",
        f(reads.requests_per_second),
        reads.clients,
        f(reads.latency_ms.p50),
        f(reads.latency_ms.p99),
    );
    let procs: Vec<String> = r
        .processes
        .iter()
        .map(|(name, u)| format!("{name} {}s / {} MiB", f(u.cpu_seconds), f(u.peak_rss_mib)))
        .collect();
    let _ = writeln!(
        md,
        "- warmed up before measuring: {:.0} s of unmeasured load, until Kafka's JIT compilers used {} % of a core",
        r.warm_up.seconds,
        f(r.warm_up.kafka_jit_compilers_cores_at_end * 100.0)
    );
    let _ = writeln!(md, "- CPU seconds / peak RSS over {}s of load: {}", f(r.measured_seconds), procs.join(", "));
    let c = &r.cpu_ms_per_saga;
    let parts: Vec<String> = c.components.iter().map(|(name, ms)| format!("{name} {}", f(*ms))).collect();
    let _ = writeln!(
        md,
        "- CPU per saga over the saga phases ({} sagas; clients wait by {}): **{} ms** for the stack ({})",
        c.sagas,
        r.setup.terminal_detection,
        f(c.stack_total),
        parts.join(", ")
    );
    for (counts, what) in [
        (&r.kafka_requests_per_saga, "Kafka requests per saga over the same phases (the brokers' counters)"),
        (
            &r.postgres_transactions_per_saga,
            "PostgreSQL transactions per saga over the same phases (`pg_stat_database`, every client's)",
        ),
    ] {
        if let Some(counts) = counts {
            // The most frequent first.
            let mut parts: Vec<(&String, f64)> =
                counts.iter().filter(|(name, _)| *name != "total").map(|(n, v)| (n, *v)).collect();
            parts.sort_by(|a, b| b.1.total_cmp(&a.1));
            let parts: Vec<String> = parts.iter().map(|(name, n)| format!("{name} {n:.2}")).collect();
            let total = counts.get("total").copied().unwrap_or(f64::NAN);
            let _ = writeln!(md, "- {what}: **{total:.1}** ({})", parts.join(", "));
        }
    }
    if let Some(profiled) = &r.perf_profile {
        let _ = writeln!(
            md,
            "- profile of the first closed-loop phase (`--profile`; the share of each component's samples in the function itself):"
        );
        // `(name, share)` as "name 12 %", the first `n`.
        let shares = |list: &[(String, f64)], n: usize, quote: &str| -> String {
            let parts: Vec<String> = list
                .iter()
                .take(n)
                .map(|(name, share)| format!("{quote}{name}{quote} {:.0} %", share * 100.0))
                .collect();
            parts.join(", ")
        };
        for (component, p) in profiled {
            let _ = writeln!(
                md,
                "  - {component} ({} ms of CPU sampled; threads {}): {}",
                f(p.cpu_ms),
                shares(&p.threads, 3, ""),
                shares(&p.hottest_self, 5, "`")
            );
        }
    }
    let lag: Vec<String> = r.kafka_consumer_lag_at_end.iter().map(|(group, n)| format!("{group} {n}")).collect();
    let _ =
        writeln!(md, "- consumer lag at the end of the load (offsets auto-committed every second): {}", lag.join(", "));
    let _ = writeln!(
        md,
        "- invariants: {} (drained in {} s)",
        if r.invariants.ok { "all hold" } else { "VIOLATED" },
        f(r.drain_seconds)
    );
    cores_markdown(&mut md, r);
    hops_markdown(&mut md, r);
    if let Some(peer) = &r.peer {
        peer_markdown(&mut md, peer);
    }
    md
}

/// What the cores did in each open-loop phase: CPU, waiting for a core and wake-ups, per
/// saga.
fn cores_markdown(md: &mut String, r: &Report) {
    let phases: Vec<(&PhaseReport, &report::CoreTime)> =
        r.open_loop.iter().filter_map(|phase| Some((phase, phase.cores.as_ref()?))).collect();
    if phases.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nWhat the cores did in each open-loop phase, per saga that ended in it (`/proc/<pid>/task/<tid>/schedstat`, summed over every thread of every component, the load generator's included): CPU in ms, time runnable but waiting for a core in ms (the kernel's run-queue delay), and how many times a thread was put on a core:\n"
    );
    let _ = writeln!(md, "| phase | CPU | waited for a core | times on a core | waited most (ms) | on a core most |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    // The first four components by `key`, as "name figure".
    let most = |cores: &report::CoreTime, key: fn(&report::CoreShare) -> f64, digits: usize| -> String {
        let mut all: Vec<(&String, f64)> = cores.components.iter().map(|(n, c)| (n, key(c))).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = all.iter().take(4).map(|(name, v)| format!("{name} {v:.digits$}")).collect();
        top.join(", ")
    };
    // The peer's open-loop phases below ours: its Go process and PostgreSQL.
    let peer = r.peer.iter().flat_map(|p| &p.result.open_loop).filter_map(|phase| {
        let name = format!("peer, open loop, {}/s", f(phase.rate?));
        Some((name, phase.cores.as_ref()?))
    });
    let ours = phases.into_iter().map(|(phase, cores)| (phase.name.clone(), cores));
    for (name, cores) in ours.chain(peer) {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {:.0} | {} | {} |",
            f(cores.cpu_ms_per_saga),
            f(cores.waited_ms_per_saga),
            cores.slices_per_saga,
            most(cores, |c| c.waited_ms, 1),
            most(cores, |c| c.slices, 0)
        );
    }
}

/// Each open-loop phase's latency hop by hop: the hops summed by kind, then
/// (folded) every hop of the paths.
fn hops_markdown(md: &mut String, r: &Report) {
    let phases: Vec<(&PhaseReport, &report::Hops)> =
        r.open_loop.iter().filter_map(|phase| Some((phase, phase.hops.as_ref()?))).collect();
    if phases.is_empty() {
        return;
    }
    let followed: Vec<String> =
        phases.iter().map(|(_, h)| format!("{} of {}", h.sagas, h.sagas + h.unlinked)).collect();
    let _ = writeln!(
        md,
        "\nEach open-loop saga's latency hop by hop (`tools/src/bench/hops.rs`; sagas followed from the request to the terminal row: {}). A saga's hops add up to its latency, so the means of the kinds add up to the mean of the whole; \"slowest 1 %\" is the mean over the hundredth of the sagas that took longest:\n",
        followed.join(", ")
    );
    let row = |md: &mut String, phase: &str, s: &report::HopStats| {
        let _ = writeln!(
            md,
            "| {phase} | {} | {} | {} | {} | {} | {} |",
            s.name,
            f(s.p50),
            f(s.p95),
            f(s.p99),
            f(s.mean),
            f_opt(s.mean_in_slowest)
        );
    };
    for (phase, _) in phases.iter().filter(|(_, h)| h.sagas == 0) {
        let _ =
            writeln!(md, "- {}: no saga's path could be followed (see `hops.rs` for what a path needs)", phase.name);
    }
    let phases: Vec<_> = phases.into_iter().filter(|(_, h)| h.sagas > 0).collect();
    if phases.is_empty() {
        return;
    }
    let _ = writeln!(md, "| phase | hops summed by kind | p50 ms | p95 ms | p99 ms | mean ms | mean ms, slowest 1 % |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (phase, hops) in &phases {
        for kind in &hops.kinds {
            row(md, &phase.name, kind);
        }
        row(md, &phase.name, &hops.total);
    }
    for (phase, hops) in &phases {
        let _ = writeln!(md, "\n<details><summary>{}: every hop</summary>\n", phase.name);
        let _ = writeln!(md, "| hop | sagas | p50 ms | p95 ms | p99 ms | mean ms | mean ms, slowest 1 % |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for s in &hops.hops {
            let name = if s.on_path { s.name.clone() } else { format!("({}, beside the path)", s.name) };
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                s.sagas,
                f(s.p50),
                f(s.p95),
                f(s.p99),
                f(s.mean),
                f_opt(s.mean_in_slowest)
            );
        }
        let _ = writeln!(md, "\n</details>");
    }
}

/// The peer's figures beside the stack's: rates and latencies per client
/// count and per offered rate, the maximum and CPU per saga, with the
/// stack/peer ratios.
fn peer_markdown(md: &mut String, p: &report::PeerComparison) {
    let x = |v: Option<f64>| v.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".to_owned());
    let peer = &p.result;
    let _ = writeln!(
        md,
        "\nSide by side with **{}** (`bench/peers/dbos`, mode {}, clients wait with {}), run after the stack on the same machine and PostgreSQL server; ratios are ours / peer's:\n",
        peer.engine, peer.mode, peer.wait,
    );
    let rows: [(&str, &[report::SideBySide]); 2] = [("clients", &p.by_clients), ("offered sagas/s", &p.by_rate)];
    for (heading, phases) in rows {
        if phases.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "| {heading} | sagas/s ours / peer | ratio | p50 ms ours / peer | ratio | p99 ms ours / peer | ratio |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for c in phases {
            let at = match (c.clients, c.offered_per_second) {
                (Some(clients), _) => clients.to_string(),
                (None, Some(rate)) => rate.to_string(),
                (None, None) => "-".to_owned(),
            };
            let theirs = |get: fn(&report::RateAndLatency) -> f64| f_opt(c.peer.as_ref().map(get));
            let _ = writeln!(
                md,
                "| {at} | {} / {} | {} | {} / {} | {} | {} / {} | {} |",
                f(c.ours.sagas_per_second),
                theirs(|p| p.sagas_per_second),
                x(c.throughput_ratio),
                f(c.ours.latency_ms.p50),
                theirs(|p| p.latency_ms.p50),
                x(c.p50_ratio),
                f(c.ours.latency_ms.p99),
                theirs(|p| p.latency_ms.p99),
                x(c.p99_ratio),
            );
        }
        let _ = writeln!(md);
    }
    let cpu = &peer.cpu_ms_per_saga;
    let rss = |name: &str| f_opt(peer.peak_rss_mib.get(name).copied());
    let _ = writeln!(
        md,
        "- maximum: ours {} sagas/s, peer {} ({}) → **{}**",
        f(p.ours_max_sagas_per_second),
        f(peer.max_sagas_per_second),
        peer.max_at,
        x(p.max_ratio),
    );
    let _ = writeln!(
        md,
        "- CPU per saga, load generator included: ours {} ms, peer {} ms (PostgreSQL {}, Go process {}) → **{}**",
        f(p.ours_cpu_ms_per_saga_with_load_generator),
        f(cpu.total),
        f(cpu.postgres),
        f(cpu.go_process),
        x(p.cpu_ratio),
    );
    let _ = writeln!(
        md,
        "- peer peak RSS: Go process {} MiB, PostgreSQL {} MiB (sum of its processes)",
        rss("go_process"),
        rss("postgres_sum_of_processes"),
    );
}

fn append_benchmarks(config: &StackConfig, markdown: &str) -> anyhow::Result<()> {
    append_markdown(&config.root.join("BENCHMARKS.md"), markdown)
}

/// Appends an entry to a results file (BENCHMARKS.md, RELIABILITY.md).
pub(crate) fn append_markdown(path: &std::path::Path, markdown: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "\n{markdown}")?;
    Ok(())
}
