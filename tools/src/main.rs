//! The project's commands that run a stack or talk to one: `up`, `down`, `status`, `test`,
//! `saga`, `dlq`, `bench` and `chaos`. `cargo xtask` builds and runs this binary for them, so
//! that `cargo xtask gen` needs neither librdkafka nor the crate it writes.

mod bench;
mod chaos;
mod dlq;
mod test_run;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use saga_stack::config::ShapeArgs;
use saga_stack::{StackConfig, UpOptions};

/// Project automation for the saga platform: the commands that run a stack or talk to one.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing and start PostgreSQL, Redis, Kafka and the services on 127.0.0.1.
    Up {
        /// Start only PostgreSQL, Redis and Kafka.
        #[arg(long)]
        infra_only: bool,
        /// Do not `cargo build` the services first.
        #[arg(long)]
        no_build: bool,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Stop exactly what `up` started.
    Down {
        /// Also delete the stack's state folder (databases, topics, logs).
        #[arg(long)]
        purge: bool,
    },
    /// Show what runs and where.
    Status,
    /// Run every test of the workspace against a fresh, isolated stack; a
    /// full run (no cargo arguments) first runs two short chaos scenarios on it.
    Test {
        /// Use the already running stack described by the SAGA_* environment
        /// (default: the development stack) instead of starting a fresh one.
        #[arg(long, env = "SAGA_TEST_REUSE_STACK")]
        reuse: bool,
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// One saga: `trace <order-id>` shows its timeline across the services (`--json` for scripts).
    #[command(subcommand)]
    Saga(trace::SagaCommand),
    /// Dead letters: `list` them, `redrive <topic>` them (with --dry-run).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Saga throughput and latency on a fresh stack of its own, against the
    /// machine's bounds (pgbench, Kafka perf tools); see BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Faults under load on a fresh stack of its own (kill -9 of each
    /// component, PostgreSQL and broker outages): recovery, goodput and the
    /// invariants after each; see RELIABILITY.md.
    Chaos(chaos::ChaosArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<ExitCode> {
    // A thread per core whatever `TOKIO_WORKER_THREADS` says: that setting is for the
    // services this process starts (they inherit its environment), not for the
    // benchmark's load generator.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build()?;
    match task {
        Task::Up { infra_only, no_build, shape } => {
            let config = shape.apply(StackConfig::from_env()?);
            runtime.block_on(saga_stack::up(&config, UpOptions { services: !infra_only, build: !no_build }))?;
            print_status("stack is up", &config);
        }
        Task::Down { purge } => {
            let config = StackConfig::from_env()?;
            let stopped = saga_stack::down(&config);
            println!(
                "stopped: {}",
                if stopped.is_empty() { "nothing was running".to_owned() } else { stopped.join(", ") }
            );
            if purge {
                saga_stack::purge(&config)?;
                println!("removed {}", config.state_dir.display());
            }
        }
        Task::Status => {
            let config = StackConfig::from_env()?;
            saga_stack::kafka_access::authenticate_as_admin(&config)?;
            print_status("stack status", &config);
            for line in runtime.block_on(dlq::summary(&config)) {
                println!("{line}");
            }
        }
        Task::Test { reuse, cargo_args } => return runtime.block_on(test_run::test(reuse, &cargo_args)),
        Task::Saga(trace::SagaCommand::Trace { order_id, json, prefix }) => {
            let config = StackConfig::from_env()?;
            // The trace reads the dead-letter topics: the broker refuses a client that does not sign in.
            saga_stack::kafka_access::authenticate_as_admin(&config)?;
            runtime.block_on(trace::run(&config, order_id, json, &prefix))?
        }
        Task::Dlq(command) => {
            let config = StackConfig::from_env()?;
            saga_stack::kafka_access::authenticate_as_admin(&config)?;
            runtime.block_on(dlq::run(&config, command))?
        }
        Task::Bench(args) => runtime.block_on(bench::run(args))?,
        Task::Chaos(args) => runtime.block_on(chaos::run(args))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the stack is, its admin account and its logs, as `up`, `status` and `test` print it.
fn print_status(title: &str, config: &StackConfig) {
    println!("{title} (state: {})", config.state_dir.display());
    for line in saga_stack::status_lines(config) {
        println!("  {line}");
    }
    let (admin_email, admin_password) = saga_stack::admin_credentials();
    println!("gateway: {}  (API docs: {}/docs)", config.gateway_url(), config.gateway_url());
    println!(
        "admin:   {admin_email} / {admin_password}  (local stack only; set SAGA_ADMIN_EMAIL, SAGA_ADMIN_PASSWORD)"
    );
    println!("logs: {}", config.logs_dir().display());
}
