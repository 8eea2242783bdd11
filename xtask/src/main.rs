//! `cargo xtask`: the project's own commands.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use clap::{Parser, Subcommand};
use xtask::dlq;
use xtask::r#gen::{self, GenArgs};
use xtask::stack::config::{Defaults, ShapeArgs, env};
use xtask::stack::{self, StackConfig, UpOptions};

/// Project automation for the saga platform.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about)]
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
    /// Regenerate the code, schemas and docs compiled from the saga spec.
    Gen(GenArgs),
    /// Prove the saga of every spec sound (`gen --check` does too): every saga ends, every
    /// event has an answer, nothing is held after a failure; prints the states explored,
    /// or the shortest counterexample as a Mermaid sequence diagram.
    Verify(r#gen::VerifyArgs),
    /// Questions about the spec: `diff [<git-ref>]` classifies every change since a
    /// revision as compatible or breaking.
    #[command(subcommand)]
    Spec(r#gen::SpecCommand),
    /// One saga: `trace <order-id>` shows its timeline across the services (`--json` for scripts).
    #[command(subcommand)]
    Saga(xtask::trace::SagaCommand),
    /// Dead letters: `list` them, `redrive <topic>` them (with --dry-run).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Saga throughput and latency on a fresh stack of its own, against the
    /// machine's bounds (pgbench, Kafka perf tools); see BENCHMARKS.md.
    Bench(xtask::bench::BenchArgs),
    /// Faults under load on a fresh stack of its own (kill -9 of each
    /// component, PostgreSQL and broker outages): recovery, goodput and the
    /// invariants after each; see RELIABILITY.md.
    Chaos(xtask::chaos::ChaosArgs),
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match task {
        Task::Up { infra_only, no_build, shape } => {
            let config = shape.apply(StackConfig::from_env()?);
            runtime.block_on(stack::up(&config, UpOptions { services: !infra_only, build: !no_build }))?;
            print_status("stack is up", &config);
        }
        Task::Down { purge } => {
            let config = StackConfig::from_env()?;
            let stopped = stack::down(&config);
            println!(
                "stopped: {}",
                if stopped.is_empty() { "nothing was running".to_owned() } else { stopped.join(", ") }
            );
            if purge {
                stack::purge(&config)?;
                println!("removed {}", config.state_dir.display());
            }
        }
        Task::Status => {
            let config = StackConfig::from_env()?;
            stack::kafka_access::authenticate_as_admin(&config)?;
            print_status("stack status", &config);
            for line in runtime.block_on(dlq::summary(&config)) {
                println!("{line}");
            }
        }
        Task::Test { reuse, cargo_args } => return runtime.block_on(test(reuse, &cargo_args)),
        Task::Gen(args) => r#gen::run(&xtask::stack::config::workspace_root(), &args)?,
        Task::Verify(args) => r#gen::verify(&xtask::stack::config::workspace_root(), &args)?,
        Task::Spec(command) => {
            if !r#gen::spec(&xtask::stack::config::workspace_root(), &command)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Task::Saga(xtask::trace::SagaCommand::Trace { order_id, json, prefix }) => {
            let config = StackConfig::from_env()?;
            // The trace reads the dead-letter topics: the broker refuses a client that does not sign in.
            stack::kafka_access::authenticate_as_admin(&config)?;
            runtime.block_on(xtask::trace::run(&config, order_id, json, &prefix))?
        }
        Task::Dlq(command) => {
            let config = StackConfig::from_env()?;
            stack::kafka_access::authenticate_as_admin(&config)?;
            runtime.block_on(dlq::run(&config, command))?
        }
        Task::Bench(args) => runtime.block_on(xtask::bench::run(args))?,
        Task::Chaos(args) => runtime.block_on(xtask::chaos::run(args))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(title: &str, config: &StackConfig) {
    println!("{title} (state: {})", config.state_dir.display());
    for line in stack::status_lines(config) {
        println!("  {line}");
    }
    let (admin_email, admin_password) = stack::admin_credentials();
    println!("gateway: {}  (API docs: {}/docs)", config.gateway_url(), config.gateway_url());
    println!(
        "admin:   {admin_email} / {admin_password}  (local stack only; set SAGA_ADMIN_EMAIL, SAGA_ADMIN_PASSWORD)"
    );
    println!("logs: {}", config.logs_dir().display());
}

/// The test stack: its own state folder and ports (SAGA_TEST_STATE_DIR,
/// SAGA_TEST_PORT_BASE), so it never touches the development stack.
fn test_stack_config() -> anyhow::Result<StackConfig> {
    Ok(StackConfig::resolve(Defaults::test(), |var| match var {
        env::STATE_DIR => std::env::var("SAGA_TEST_STATE_DIR").ok(),
        env::PORT_BASE => std::env::var("SAGA_TEST_PORT_BASE").ok(),
        env::KAFKA_LIBS | env::POSTGRES_BIN | env::KAFKA_HEAP | env::MIN_FREE_MB => std::env::var(var).ok(),
        _ => None,
    })?)
}

/// The replicated guard's stack: two instances of each service and three Kafka
/// nodes, in `.state/test-replicated`, 4000 ports below the test stack.
fn replicated_stack_config(test: &StackConfig) -> anyhow::Result<StackConfig> {
    let defaults = Defaults {
        state_dir: test.state_dir.with_file_name("test-replicated"),
        port_base: test.port_base.checked_sub(4000).context("the test stack's port base is below 4000")?,
    };
    let mut config = StackConfig::resolve(defaults, |var| match var {
        env::KAFKA_LIBS | env::POSTGRES_BIN | env::KAFKA_HEAP | env::MIN_FREE_MB => std::env::var(var).ok(),
        _ => None,
    })?;
    config.shape = xtask::stack::config::Shape { replicas: 2, brokers: 3 };
    Ok(config)
}

async fn test(reuse: bool, cargo_args: &[String]) -> anyhow::Result<ExitCode> {
    let config = if reuse { StackConfig::from_env()? } else { test_stack_config()? };
    if !reuse {
        // Leftovers of an interrupted run would make this run depend on old data.
        stack::down(&config);
        stack::purge(&config)?;
    }
    // After the purge, so the install's log stays in the stack's logs.
    stack::install::ensure_test_packages(&config)?;
    if !reuse {
        stack::up(&config, UpOptions { services: true, build: true }).await?;
        print_status("test stack is up", &config);
    }
    // The whole suite guards the failure semantics under load too; a run of
    // chosen tests (cargo arguments) does not.
    let mut guard = Tally::default();
    if !reuse && cargo_args.is_empty() {
        match xtask::chaos::guard(&config).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if outcome.ok() { guard.passed += 1 } else { guard.failed += 1 }
                }
            }
            Err(error) => {
                println!("chaos guard could not run: {error:#}");
                guard.failed += 1;
            }
        }
    }
    let outcome = run_cargo_test(&config, cargo_args);
    if !reuse {
        let stopped = stack::down(&config);
        println!("test stack stopped: {}", stopped.join(", "));
    }
    // The replicated scenarios, on a replicated stack of their own once the test stack is down.
    if !reuse && cargo_args.is_empty() {
        match xtask::chaos::guard_replicated(&replicated_stack_config(&config)?).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if outcome.ok() { guard.passed += 1 } else { guard.failed += 1 }
                }
            }
            Err(error) => {
                println!("replicated chaos guard could not run: {error:#}");
                guard.failed += 1;
            }
        }
    }
    let (status, tally) = outcome?;
    // One closing line for the whole run: cargo's own last line only speaks of its last test binary.
    println!("tests: {} passed, {} failed, {} skipped", tally.passed, tally.failed, tally.ignored);
    if guard.passed + guard.failed > 0 {
        println!("chaos guard: {} scenario(s) held, {} failed", guard.passed, guard.failed);
    }
    Ok(if status.success() && guard.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Counts summed over every `test result:` line cargo test printed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds one libtest summary line (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`).
    fn add(&mut self, line: &str) {
        let Some(counts) = line.strip_prefix("test result: ") else { return };
        for part in counts.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(number)) = (words.next(), words.next()) else { continue };
            let Ok(number) = number.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test --workspace` against `config`, echoing its output and tallying the results.
fn run_cargo_test(config: &StackConfig, cargo_args: &[String]) -> anyhow::Result<(std::process::ExitStatus, Tally)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(&config.root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args)
        .envs(config.to_env())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut tally = Tally::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            tally.add(&line);
        }
    }
    Ok((child.wait()?, tally))
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_sums_libtest_summaries() {
        let mut tally = Tally::default();
        tally.add("test result: ok. 9 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.07s");
        tally.add("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        tally.add("running 2 tests");
        assert_eq!(tally, Tally { passed: 11, failed: 3, ignored: 1 });
    }
}
