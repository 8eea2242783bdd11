//! `cargo xtask test`: the whole suite against a fresh, isolated stack of its own, with the
//! chaos guard before it (on the same stack) and the replicated guard after it (on a
//! replicated stack once the test stack is down); one closing tally for the whole run.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use saga_stack::config::{Defaults, env};
use saga_stack::{StackConfig, UpOptions};

use crate::{chaos, print_status};

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
    config.shape = saga_stack::config::Shape { replicas: 2, brokers: 3 };
    Ok(config)
}

pub async fn test(reuse: bool, cargo_args: &[String]) -> anyhow::Result<ExitCode> {
    let config = if reuse { StackConfig::from_env()? } else { test_stack_config()? };
    if !reuse {
        // Leftovers of an interrupted run would make this run depend on old data.
        saga_stack::down(&config);
        saga_stack::purge(&config)?;
    }
    // After the purge, so the install's log stays in the stack's logs.
    saga_stack::install::ensure_test_packages(&config)?;
    if !reuse {
        saga_stack::up(&config, UpOptions { services: true, build: true }).await?;
        print_status("test stack is up", &config);
    }
    // The Go modules need no stack; a run of chosen tests (cargo arguments) leaves them out.
    let go = if cargo_args.is_empty() { Some(run_go_tests(&config.root)) } else { None };
    // The whole suite guards the failure semantics under load too; a run of
    // chosen tests (cargo arguments) does not.
    let mut guard = Tally::default();
    if !reuse && cargo_args.is_empty() {
        match chaos::guard(&config).await {
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
        let stopped = saga_stack::down(&config);
        println!("test stack stopped: {}", stopped.join(", "));
    }
    // The replicated scenarios, on a replicated stack of their own once the test stack is down.
    if !reuse && cargo_args.is_empty() {
        match chaos::guard_replicated(&replicated_stack_config(&config)?).await {
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
    let (status, mut tally) = outcome?;
    let go_ok = match go {
        Some(Ok(go)) => {
            let ok = go.failed == 0;
            tally.merge(go);
            ok
        }
        Some(Err(error)) => {
            println!("Go tests could not run: {error:#}");
            tally.failed += 1;
            false
        }
        None => true,
    };
    // One closing line for the whole run: cargo's own last line only speaks of its last test binary.
    println!("tests: {} passed, {} failed, {} skipped", tally.passed, tally.failed, tally.ignored);
    if guard.passed + guard.failed > 0 {
        println!("chaos guard: {} scenario(s) held, {} failed", guard.passed, guard.failed);
    }
    Ok(if status.success() && go_ok && guard.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The Go modules of the repository: the runtime and the generated package of the saga.
pub const GO_MODULES: &[&str] = &["runtime-go", "generated/go"];

/// `gofmt`, `go vet` and `go test` in every Go module, echoing their output; a file
/// `gofmt` would change and a `vet` finding count as failed tests.
fn run_go_tests(root: &std::path::Path) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    for module in GO_MODULES {
        let dir = root.join(module);
        let go = |args: &[&str]| {
            Command::new("go").current_dir(&dir).args(args).output().with_context(|| {
                format!("cannot run `go {}` in {module}: the Go modules need Go 1.26 or later on PATH", args.join(" "))
            })
        };
        println!("\n== Go: {module}");
        let unformatted =
            Command::new("gofmt").current_dir(&dir).args(["-l", "."]).output().context("cannot run gofmt")?;
        for file in String::from_utf8_lossy(&unformatted.stdout).lines() {
            println!("--- FAIL: gofmt would change {module}/{file}");
            tally.failed += 1;
        }
        let vet = go(&["vet", "./..."])?;
        print!("{}", String::from_utf8_lossy(&vet.stderr));
        if !vet.status.success() {
            println!("--- FAIL: go vet in {module}");
            tally.failed += 1;
        }
        let test = go(&["test", "-v", "-count=1", "./..."])?;
        let out = String::from_utf8_lossy(&test.stdout);
        print!("{out}{}", String::from_utf8_lossy(&test.stderr));
        let before = tally.failed;
        for line in out.lines() {
            tally.add_go(line);
        }
        if !test.status.success() && tally.failed == before {
            // A build failure names no test.
            println!("--- FAIL: go test in {module}");
            tally.failed += 1;
        }
    }
    Ok(tally)
}

/// Counts summed over every `test result:` line cargo test printed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds one line of `go test -v`: each test's (and subtest's) verdict.
    fn add_go(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        if words.next() != Some("---") {
            return;
        }
        match words.next() {
            Some("PASS:") => self.passed += 1,
            Some("FAIL:") => self.failed += 1,
            Some("SKIP:") => self.ignored += 1,
            _ => {}
        }
    }

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

    #[test]
    fn tally_counts_go_verdicts() {
        let mut tally = Tally::default();
        for line in [
            "=== RUN   TestA",
            "--- PASS: TestA (0.00s)",
            "    --- FAIL: TestB/sub (0.01s)",
            "--- SKIP: TestC (0.00s)",
            "ok  \tsagaplatform/runtime/wire\t0.015s",
        ] {
            tally.add_go(line);
        }
        assert_eq!(tally, Tally { passed: 1, failed: 1, ignored: 1 });
    }
}
