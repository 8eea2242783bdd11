//! Installs what the stack needs and the machine lacks: Debian packages for
//! PostgreSQL 15, Redis, Java 17 and Maven, and the Kafka broker's jars from
//! Maven Central; for the test suite also Chromium and its WebDriver.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::config::StackConfig;

/// A program the stack runs and the Debian package that brings it.
struct Requirement {
    what: &'static str,
    present: fn(&StackConfig) -> bool,
    package: &'static str,
}

const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        what: "PostgreSQL 15",
        present: |c| c.postgres_bin.join("postgres").exists(),
        package: "postgresql-15",
    },
    Requirement { what: "Redis", present: |_| on_path("redis-server"), package: "redis-server" },
    Requirement { what: "Java 17", present: |_| on_path("java"), package: "openjdk-17-jre-headless" },
    Requirement { what: "Maven", present: |_| on_path("mvn"), package: "maven" },
];

/// What `cargo xtask test` needs on top: the console's browser test drives Debian's
/// headless Chromium through chromedriver.
const TEST_REQUIREMENTS: &[Requirement] = &[
    Requirement { what: "Chromium", present: |_| on_path("chromium"), package: "chromium" },
    Requirement { what: "ChromeDriver", present: |_| on_path("chromedriver"), package: "chromium-driver" },
];

/// What `cargo xtask bench --peer dbos` needs on top: Go, to build the peer
/// (Debian's may be older than the module asks for; the go command then
/// fetches the toolchain the module names from the Go module proxy).
const PEER_REQUIREMENTS: &[Requirement] =
    &[Requirement { what: "Go", present: |_| go_present(), package: "golang-go" }];

/// What `cargo xtask bench` needs on top: `jcmd` (the JDK's, not in the
/// runtime package), which opens a broker's JMX to read its request counters
/// and has a JVM name its compiled methods for `perf`.
const BENCH_REQUIREMENTS: &[Requirement] =
    &[Requirement { what: "jcmd (JDK 17)", present: |_| on_path("jcmd"), package: "openjdk-17-jdk-headless" }];

/// What `cargo xtask bench --profile` needs on top: `perf`.
const PROFILE_REQUIREMENTS: &[Requirement] =
    &[Requirement { what: "perf", present: |_| on_path("perf"), package: "linux-perf" }];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Installs the missing Debian packages the stack runs on (as root), or says which to install.
pub fn ensure_packages(config: &StackConfig) -> anyhow::Result<()> {
    ensure(config, REQUIREMENTS)
}

/// Installs the missing Debian packages the test suite needs besides the stack.
pub fn ensure_test_packages(config: &StackConfig) -> anyhow::Result<()> {
    ensure(config, TEST_REQUIREMENTS)
}

/// Installs what the benchmark needs besides the stack, and for `--profile` its profiler.
pub fn ensure_bench_packages(config: &StackConfig, profile: bool) -> anyhow::Result<()> {
    ensure(config, BENCH_REQUIREMENTS)?;
    if profile { ensure(config, PROFILE_REQUIREMENTS) } else { Ok(()) }
}

/// Installs what the benchmark's peer needs to be built.
pub fn ensure_peer_packages(config: &StackConfig) -> anyhow::Result<()> {
    ensure(config, PEER_REQUIREMENTS)
}

fn ensure(config: &StackConfig, requirements: &[Requirement]) -> anyhow::Result<()> {
    let missing: Vec<&Requirement> = requirements.iter().filter(|r| !(r.present)(config)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|r| r.package).collect();
    let what: Vec<&str> = missing.iter().map(|r| r.what).collect();
    if !is_root() {
        bail!("{} missing: run `sudo apt-get install -y {}` and retry", what.join(", "), packages.join(" "));
    }
    println!("installing {} (apt-get install {})", what.join(", "), packages.join(" "));
    let log = config.logs_dir().join("apt.log");
    fs::create_dir_all(config.logs_dir()).with_context(|| format!("cannot create {}", config.logs_dir().display()))?;
    run_logged(Command::new("apt-get").arg("update"), &log)
        .with_context(|| format!("apt-get update failed (Debian mirror unreachable?): see {}", log.display()))?;
    run_logged(Command::new("apt-get").args(["install", "-y", "--no-install-recommends"]).args(&packages), &log)
        .with_context(|| format!("apt-get install {} failed: see {}", packages.join(" "), log.display()))?;
    if let Some(still) = requirements.iter().find(|r| !(r.present)(config)) {
        bail!("{} still missing after installing {}: see {}", still.what, still.package, log.display());
    }
    Ok(())
}

/// Runs a command with its output appended to `log`; fails on a non-zero exit.
pub fn run_logged(command: &mut Command, log: &Path) -> anyhow::Result<()> {
    let file = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let status = command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", command.get_program());
    }
    Ok(())
}

/// Resolves the broker's jars from `infra/kafka/pom.xml` into `config.kafka_libs`,
/// once per version of the pom (a copy of it marks the folder as complete).
pub fn ensure_kafka_libs(config: &StackConfig) -> anyhow::Result<()> {
    let pom = config.root.join("infra/kafka/pom.xml");
    let wanted = fs::read_to_string(&pom).with_context(|| format!("cannot read {}", pom.display()))?;
    let stamp = config.kafka_libs.join("pom.xml");
    if fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(());
    }
    println!("fetching the Kafka broker jars from Maven Central ({})", pom.display());
    let staging = config.kafka_libs.with_extension("partial");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(config.logs_dir())?;
    let log = config.logs_dir().join("maven.log");
    let fetched = run_logged(
        Command::new("mvn")
            .args(["-B", "-f"])
            .arg(&pom)
            .arg("dependency:copy-dependencies")
            .arg(format!("-DoutputDirectory={}", staging.display()))
            .arg("-DincludeScope=runtime"),
        &log,
    );
    if let Err(error) = fetched {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let unreachable =
            ["Could not transfer", "UnknownHost", "Connection refused", "Network is unreachable", "timed out"]
                .iter()
                .any(|needle| text.contains(needle));
        let _ = fs::remove_dir_all(&staging);
        if unreachable {
            bail!(
                "Maven Central is unreachable, cannot fetch the Kafka broker jars: check the network or a mirror in ~/.m2/settings.xml (see {})",
                log.display()
            );
        }
        bail!("fetching the Kafka broker jars failed ({error}): see {}", log.display());
    }
    fs::write(staging.join("pom.xml"), &wanted)?;
    let _ = fs::remove_dir_all(&config.kafka_libs);
    fs::rename(&staging, &config.kafka_libs)
        .with_context(|| format!("cannot move {} to {}", staging.display(), config.kafka_libs.display()))?;
    Ok(())
}

/// `go` on the PATH, or where the official archive puts it.
pub fn go_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("go")).find(|p| p.is_file()));
    on_path.or_else(|| Some(Path::new("/usr/local/go/bin/go").to_owned()).filter(|p| p.is_file()))
}

/// Whether Go is there to build the peer.
pub fn go_present() -> bool {
    go_binary().is_some()
}
