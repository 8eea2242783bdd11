//! Secrets never show: not in any binary's `--help` (clap prints the values
//! of the environment variables it reads unless told not to), and not in a
//! start-up error that names the URL it could not reach.

use std::process::Stdio;
use std::time::Duration;

use saga_tests::stack;

/// The secrets every binary may be given, each with a value the test looks for.
const SECRETS: [(&str, &str); 5] = [
    ("DATABASE_URL", "postgres://saga:db-s3cret@127.0.0.1:1/saga"),
    ("REDIS_URL", "redis://:redis-s3cret@127.0.0.1:1/"),
    ("ADMIN_PASSWORD", "admin-s3cret-password"),
    // The principal is no secret; its password is.
    ("KAFKA_SASL_USERNAME", "order"),
    ("KAFKA_SASL_PASSWORD", "kafka-s3cret-password"),
];

async fn run(binary: &std::path::Path, args: &[&str]) -> String {
    let run = tokio::process::Command::new(binary)
        .args(args)
        .envs(SECRETS)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("METRICS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not stop", binary.display()))
        .expect("runs");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[tokio::test]
async fn no_binary_shows_a_secret_in_its_help() {
    let stack = stack();
    let mut binaries: Vec<std::path::PathBuf> = ["gateway", "console"].map(|b| stack.binary(b)).to_vec();
    for service in saga_stack::config::services() {
        // The Rust binary of every service, and the Go one of those the stack runs in Go.
        binaries.push(stack.binary(&service.binary()));
        binaries.push(stack.service_binary(&service));
    }
    binaries.dedup();
    for binary in binaries {
        let help = run(&binary, &["--help"]).await;
        assert!(help.contains("Usage"), "{} --help: {help}", binary.display());
        assert!(!help.contains("s3cret"), "{} --help shows a secret:\n{help}", binary.display());
    }
}

#[tokio::test]
async fn a_gateway_that_cannot_reach_redis_says_where_without_the_password() {
    let stack = stack();
    let log = run(&stack.binary("gateway"), &[]).await;
    assert!(log.contains("cannot connect to Redis at redis://:***@127.0.0.1:1/"), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
}

#[tokio::test]
async fn a_service_that_cannot_reach_its_database_says_where_without_the_password() {
    let stack = stack();
    let user = saga_stack::config::services().into_iter().find(|s| s.name == "user").expect("user");
    let mut binaries = vec![stack.binary(&user.binary())];
    // A service the stack runs in Go says it the same way.
    binaries.extend(
        saga_stack::config::services()
            .iter()
            .filter(|s| stack.go_services.contains(s.name))
            .map(|s| stack.service_binary(s)),
    );
    for binary in binaries {
        let log = tokio::time::timeout(Duration::from_secs(90), run(&binary, &[])).await;
        let log = log.unwrap_or_else(|_| panic!("{} gives up", binary.display()));
        assert!(log.contains("postgres://saga:***@127.0.0.1:1/saga"), "{}: {log}", binary.display());
        assert!(!log.contains("s3cret"), "{log}");
    }
}
