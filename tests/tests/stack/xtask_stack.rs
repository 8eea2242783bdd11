//! `cargo xtask up` / `down` on stacks of their own (own state folder, own
//! ports), with the real PostgreSQL, Redis and Kafka.

use std::net::TcpListener;
use std::path::PathBuf;

use saga_stack::config::{Defaults, env};
use saga_stack::{self as local_stack, Component, StackConfig, UpOptions};
use saga_tests::{stack, unique};

/// A stack beside the one under test: same binaries and jars, its own folder and ports.
fn side_stack(port_base: u16) -> StackConfig {
    let under_test = stack();
    let state_dir: PathBuf = under_test.state_dir.with_file_name(unique("xtask-it"));
    let defaults = Defaults { state_dir, port_base };
    StackConfig::resolve(defaults, |var| match var {
        env::KAFKA_LIBS => Some(under_test.kafka_libs.display().to_string()),
        env::POSTGRES_BIN => Some(under_test.postgres_bin.display().to_string()),
        _ => None,
    })
    .expect("valid config")
}

fn running(config: &StackConfig) -> Vec<String> {
    Component::any_shape().into_iter().filter(|c| c.tracked(config).running_pid().is_some()).map(|c| c.name()).collect()
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

const INFRA: UpOptions = UpOptions { services: false, build: false };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_twice_changes_nothing_and_down_stops_exactly_what_up_started() {
    let config = side_stack(21_000);
    local_stack::up(&config, INFRA).await.expect("first up");
    let pids: Vec<_> = Component::all(&config).iter().map(|c| c.tracked(&config).running_pid()).collect();
    assert_eq!(running(&config), ["postgres", "redis", "kafka"]);

    local_stack::up(&config, INFRA).await.expect("second up");
    let again: Vec<_> = Component::all(&config).iter().map(|c| c.tracked(&config).running_pid()).collect();
    assert_eq!(pids, again, "a second up restarts nothing");

    let stopped = local_stack::down(&config);
    assert_eq!(stopped, ["kafka", "redis", "postgres"]);
    assert!(running(&config).is_empty());
    for port in [config.ports.postgres, config.ports.redis, config.ports.kafka, config.ports.kafka_controller] {
        assert!(port_free(port), "port {port} still taken after down");
    }
    local_stack::purge(&config).expect("purge");
    assert!(!config.state_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_leaves_nothing_running() {
    let config = side_stack(22_000);
    // Kafka storage formatted for some other cluster: PostgreSQL and Redis are
    // already started when Kafka's preparation refuses it.
    let data = config.state_dir.join("kafka/data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("meta.properties"), "version=1\nnode.id=1\ncluster.id=SomeOtherClusterId0000\n")
        .expect("write meta");

    let error = local_stack::up(&config, INFRA).await.expect_err("kafka storage of another cluster");
    let message = format!("{error:#}");
    assert!(message.contains("belongs to cluster \"SomeOtherClusterId0000\""), "{message}");
    assert!(message.contains("cargo xtask down --purge"), "{message}");
    assert!(running(&config).is_empty(), "left running: {:?}", running(&config));
    assert!(port_free(config.ports.postgres) && port_free(config.ports.redis));
    local_stack::purge(&config).expect("purge");
}

#[tokio::test]
async fn a_taken_port_is_refused_before_anything_starts() {
    let config = side_stack(23_000);
    let _squatter = TcpListener::bind(("127.0.0.1", config.ports.redis)).expect("bind");
    let error = local_stack::up(&config, INFRA).await.expect_err("port taken");
    assert!(error.to_string().starts_with(&format!("port {} needed by redis is already in use", config.ports.redis)));
    assert!(running(&config).is_empty());
    let _ = local_stack::purge(&config);
}

#[test]
fn an_unreachable_maven_central_is_named_and_nothing_starts() {
    let under_test = stack();
    let home = under_test.state_dir.with_file_name(unique("xtask-it-maven"));
    let m2 = home.join(".m2");
    std::fs::create_dir_all(&m2).expect("mkdir");
    // Every download goes to a mirror on a closed port, and nothing is cached locally.
    std::fs::write(
        m2.join("settings.xml"),
        format!(
            "<settings><localRepository>{}</localRepository><mirrors><mirror><id>closed</id>\
             <mirrorOf>*</mirrorOf><url>http://127.0.0.1:9/maven2</url></mirror></mirrors></settings>",
            m2.join("repository").display()
        ),
    )
    .expect("settings");
    let mut command = std::process::Command::new(under_test.binary("saga-tools"));
    for (var, _) in std::env::vars().filter(|(var, _)| var.starts_with("SAGA_")) {
        command.env_remove(var);
    }
    let output = command
        .args(["up", "--infra-only", "--no-build"])
        .env("MAVEN_OPTS", format!("-Duser.home={}", home.display()))
        .env(env::STATE_DIR, home.join("state"))
        .env(env::KAFKA_LIBS, home.join("kafka-libs"))
        .env(env::PORT_BASE, "25000")
        .output()
        .expect("run xtask");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Maven Central is unreachable, cannot fetch the Kafka broker jars"), "{stderr}");
    assert!(!home.join("state/run").exists(), "nothing was started");
    assert!(!home.join("kafka-libs").exists(), "no half-resolved jar folder is left");
    let _ = std::fs::remove_dir_all(&home);
}

/// The commands listed under "Commands:" in a binary's `--help`.
fn commands_in_help(binary: &str) -> Vec<String> {
    let output = std::process::Command::new(stack().binary(binary))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary} --help: {e} (cargo xtask builds it)"));
    assert!(output.status.success(), "{binary} --help failed");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let listed = help.split("Commands:").nth(1).and_then(|rest| rest.split("\n\n").next()).unwrap_or_default();
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// `cargo xtask` hands every command of saga-tools on: one missing from its list would be
/// refused as unknown before it reached the binary that knows it.
#[test]
fn cargo_xtask_offers_every_command_of_saga_tools() {
    let tools = commands_in_help("saga-tools");
    let xtask = commands_in_help("xtask");
    assert!(tools.len() >= 8, "saga-tools lists its commands: {tools:?}");
    let missing: Vec<&String> = tools.iter().filter(|c| !xtask.contains(c)).collect();
    assert!(missing.is_empty(), "cargo xtask does not offer {missing:?} (it offers {xtask:?})");
}
