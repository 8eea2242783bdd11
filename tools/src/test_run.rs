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
        env::KAFKA_LIBS | env::POSTGRES_BIN | env::KAFKA_HEAP | env::MIN_FREE_MB | env::GO_SERVICES => {
            std::env::var(var).ok()
        }
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
        env::KAFKA_LIBS | env::POSTGRES_BIN | env::KAFKA_HEAP | env::MIN_FREE_MB | env::GO_SERVICES => {
            std::env::var(var).ok()
        }
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
    // The Go tests get the stack's variables, as cargo's do, after the chaos guard (one of
    // them reads what the Rust relays published); a run of chosen tests (cargo arguments)
    // leaves them out.
    let go = if cargo_args.is_empty() { Some(run_go_tests(&config)) } else { None };
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

/// The Go code of the repository, one module (`go.mod` at the root): the runtime, the
/// generated package of the saga, the embedded migrations, the shipping participant. Folders, so neither `gofmt` nor
/// the `go` command walks the build folders.
pub const GO_FOLDERS: &[&str] = &["runtime-go", "generated/go", "migrations", "services/shipping-go"];

/// `gofmt`, `go vet` and `go test` over the Go code, against the stack of `config` (its
/// `SAGA_*` variables), echoing their output; a file `gofmt` would change and a `vet`
/// finding count as failed tests.
fn run_go_tests(config: &StackConfig) -> anyhow::Result<Tally> {
    let root = &config.root;
    let mut tally = Tally::default();
    let packages: Vec<String> = GO_FOLDERS.iter().map(|f| format!("./{f}/...")).collect();
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .current_dir(root)
            .envs(config.to_env())
            .args(args)
            .args(if program == "gofmt" {
                GO_FOLDERS.iter().map(|f| f.to_string()).collect::<Vec<_>>()
            } else {
                packages.clone()
            })
            .output()
            .with_context(|| {
                format!("cannot run `{program} {}`: the Go code needs Go 1.26 or later on PATH", args.join(" "))
            })
    };
    println!("\n== Go: {}", GO_FOLDERS.join(", "));
    let unformatted = run("gofmt", &["-l"])?;
    for file in String::from_utf8_lossy(&unformatted.stdout).lines() {
        println!("--- FAIL: gofmt would change {file}");
        tally.failed += 1;
    }
    let vet = run("go", &["vet"])?;
    print!("{}", String::from_utf8_lossy(&vet.stderr));
    if !vet.status.success() {
        println!("--- FAIL: go vet");
        tally.failed += 1;
    }
    let test = run("go", &["test", "-v", "-count=1"])?;
    let out = String::from_utf8_lossy(&test.stdout);
    print!("{out}{}", String::from_utf8_lossy(&test.stderr));
    let before = tally.failed;
    for line in out.lines() {
        tally.add_go(line);
    }
    if !test.status.success() && tally.failed == before {
        // A build failure names no test.
        println!("--- FAIL: go test");
        tally.failed += 1;
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
