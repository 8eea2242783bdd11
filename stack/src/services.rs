//! The saga's own processes: the three backend services and the gateway,
//! built by cargo and started from the workspace's target folder.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::config::services;
use anyhow::{Context, bail};
use saga_process::local::BackendService;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::config::StackConfig;

pub const GATEWAY_BINARY: &str = "gateway";
pub const CONSOLE_BINARY: &str = "console";

/// `cargo build` of every service binary, so `up` starts the code as it is now.
pub fn build(config: &StackConfig) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(&config.root).args(["build", "--quiet"]);
    if config.release {
        command.arg("--release");
    }
    for service in services() {
        command.args(["-p", &service.binary()]);
    }
    command.args(["-p", GATEWAY_BINARY, "-p", CONSOLE_BINARY]);
    let status = command.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the services failed (cargo build exited with {status})");
    }
    for service in services().iter().filter(|s| config.go_services.contains(s.name)) {
        build_go(config, service)?;
    }
    Ok(())
}

/// `go build` of `service`'s Go implementation (`services/<name>-go/`) beside the Rust
/// binaries, where [`StackConfig::service_binary`] finds it.
fn build_go(config: &StackConfig, service: &BackendService) -> anyhow::Result<()> {
    let go = super::install::go_binary().context(
        "the Go implementation of a service needs Go 1.26 or later on PATH (or run its Rust one: SAGA_GO_SERVICES=)",
    )?;
    let output = config.binary(&super::config::go_binary_name(service));
    let status = Command::new(go)
        .current_dir(&config.root)
        .arg("build")
        .arg("-o")
        .arg(&output)
        .arg(format!("./services/{}-go", service.name))
        .status()
        .context("cannot run go build")?;
    if !status.success() {
        bail!("building the Go {} service failed (go build exited with {status})", service.name);
    }
    Ok(())
}

/// Replica `replica` of `service`: its own port, the service's database and consumer group.
pub fn backend_command(config: &StackConfig, service: BackendService, replica: u16) -> anyhow::Result<Command> {
    let mut command = Command::new(config.service_binary(&service));
    command
        .env("LISTEN_ADDR", format!("{}:{}", config.host(), config.replica_port(service, replica)))
        .env("DATABASE_URL", config.database_url(service))
        .env("KAFKA_BROKERS", config.kafka_brokers());
    share_the_cores(&mut command);
    command.envs(service_tls_env(config, service.name));
    command.envs(super::kafka_access::env(config, service.name)?);
    Ok(command)
}

/// Every Rust process of a local stack shares the machine's cores with the
/// others, PostgreSQL and Kafka: each gets one runtime thread per four cores
/// (`TOKIO_WORKER_THREADS`, at least one) unless the environment sets it; a Go
/// process the same (`GOMAXPROCS`: on two cores the Go shipping service spent
/// 1.09 ms of CPU a saga with one, 1.24 with Go's default of one per core,
/// BENCHMARKS.md, "the shipping step in Go").
/// tokio's default, a thread per core in every process, had the idle threads
/// of seven processes woken to steal each other's work: on two cores, one
/// thread each cost 4 % less CPU per saga and cut the p99 at half the
/// maximum by a quarter, every hop shorter (BENCHMARKS.md, "one runtime
/// thread per service"). The rule for more cores is a guess, not measured.
fn share_the_cores(command: &mut Command) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for setting in ["TOKIO_WORKER_THREADS", "GOMAXPROCS"] {
        // Inherited as the operator set it, if set.
        if std::env::var_os(setting).is_none() {
            command.env(setting, runtime_threads(cores).to_string());
        }
    }
}

/// Runtime threads of each of the stack's processes on a machine of `cores`.
fn runtime_threads(cores: usize) -> usize {
    cores.div_ceil(4).max(1)
}

/// The settings of `service`'s mutual TLS: its own certificate, and the
/// authority its callers' certificates must chain to.
pub fn service_tls_env(config: &StackConfig, service: &str) -> [(&'static str, PathBuf); 3] {
    let files = super::tls::files(config, service);
    [("GRPC_TLS_CLIENT_CA", files.ca), ("GRPC_TLS_CERT", files.cert), ("GRPC_TLS_KEY", files.key)]
}

/// The settings of the gateway's mutual TLS: its own certificate, and the
/// authority the services' certificates must chain to.
pub fn gateway_tls_env(config: &StackConfig) -> [(&'static str, PathBuf); 3] {
    let files = super::tls::files(config, saga_proto::tls::GATEWAY);
    [("GRPC_TLS_CA", files.ca), ("GRPC_TLS_CERT", files.cert), ("GRPC_TLS_KEY", files.key)]
}

/// A channel to the service at `url` (an `https://` URL of the stack) as
/// `identity`: `operator` for health, `gateway` for the API (a test acting as the gateway).
pub fn channel_as(
    config: &StackConfig,
    identity: &str,
    service: &str,
    url: &str,
) -> anyhow::Result<tonic::transport::Endpoint> {
    let tls = super::tls::files(config, identity).client(service)?;
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?.tls_config(tls)?)
}

/// The console reads every service's database with its read-only role, and keeps its
/// redrive audit in a database of its own.
pub fn console_command(config: &StackConfig) -> anyhow::Result<Command> {
    let mut command = Command::new(config.binary(CONSOLE_BINARY));
    command
        .env("LISTEN_ADDR", format!("{}:{}", config.host(), config.ports.console))
        .env("DATABASE_URL", config.console_database_url(saga_process::local::CONSOLE_DATABASE))
        .env("KAFKA_BROKERS", config.kafka_brokers());
    for service in services() {
        command.env(
            format!("{}_DATABASE_URL", service.name.to_uppercase()),
            config.console_database_url(&service.database()),
        );
    }
    command.envs(super::kafka_access::env(config, super::kafka_access::CONSOLE)?);
    command.envs(console_tls_env(config));
    share_the_cores(&mut command);
    Ok(command)
}

/// The settings of the console's mutual TLS: its own certificate, and the authority its
/// callers' certificates must chain to (it answers the gateway's only).
pub fn console_tls_env(config: &StackConfig) -> [(&'static str, PathBuf); 3] {
    let files = super::tls::files(config, saga_proto::tls::CONSOLE);
    [("TLS_CLIENT_CA", files.ca), ("TLS_CERT", files.cert), ("TLS_KEY", files.key)]
}

/// An HTTPS client of the stack's console as `identity`: `operator` for its health,
/// `gateway` for its page and API (a test acting as the gateway).
pub fn console_client_as(config: &StackConfig, identity: &str) -> anyhow::Result<reqwest::Client> {
    let tls = super::tls::files(config, identity).https_client(saga_proto::tls::CONSOLE)?;
    Ok(reqwest::Client::builder().use_preconfigured_tls(tls).build()?)
}

pub fn gateway_command(config: &StackConfig) -> Command {
    let mut command = Command::new(config.binary(GATEWAY_BINARY));
    command
        .env("LISTEN_ADDR", format!("{}:{}", config.host(), config.ports.gateway))
        .env("REDIS_URL", config.redis_url())
        .env("CONSOLE_URL", config.console_url());
    for service in services() {
        // Every replica: the gateway balances over those that are healthy.
        command.env(format!("{}_GRPC_URL", service.name.to_uppercase()), config.grpc_urls(service));
    }
    command.envs(gateway_tls_env(config));
    share_the_cores(&mut command);
    let (email, password) = admin_credentials();
    command.env("ADMIN_EMAIL", email).env("ADMIN_PASSWORD", password);
    // Every client of a local stack is 127.0.0.1, so the per-IP limits would
    // lock out the developer, the tests and the benchmark's customers
    // together; the per-account limits still apply. Tests of the limits use
    // their own gateway.
    command.env("LOGIN_LIMIT_PER_IP", "10000").env("LOGIN_SUCCESS_LIMIT_PER_IP", "1000000");
    command.env("REGISTER_LIMIT_PER_IP", "1000000").env("REGISTER_LIMIT_TOTAL", "1000000");
    // One admin account serves every test, the console's and the benchmark's
    // clients, many at once: its logins and sessions are not capped here.
    // Tests of those limits, and of the per-account ones, use their own gateway.
    command.env("LOGIN_SUCCESS_LIMIT_PER_ACCOUNT", "1000000").env("SESSIONS_PER_USER", "100000");
    command
}

/// The admin account the gateway ensures at start-up: `SAGA_ADMIN_EMAIL` and
/// `SAGA_ADMIN_PASSWORD`, with defaults meant for a local stack only.
pub fn admin_credentials() -> (String, String) {
    (
        std::env::var("SAGA_ADMIN_EMAIL").unwrap_or_else(|_| "admin@saga.local".to_owned()),
        std::env::var("SAGA_ADMIN_PASSWORD").unwrap_or_else(|_| "saga-admin-local".to_owned()),
    )
}

/// Ready when the standard gRPC health check of the replica says SERVING.
pub async fn probe_backend(config: &StackConfig, service: BackendService, replica: u16) -> anyhow::Result<()> {
    let channel = channel_as(config, saga_proto::tls::OPERATOR, service.name, &config.replica_url(service, replica))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
    let status = reply.into_inner().status;
    anyhow::ensure!(status == ServingStatus::Serving as i32, "health status {status}");
    Ok(())
}

/// Ready when the console answers its health over mutual TLS, asked as `operator`.
pub async fn probe_console(config: &StackConfig) -> anyhow::Result<()> {
    let response = console_client_as(config, saga_proto::tls::OPERATOR)?
        .get(format!("{}/healthz", config.console_url()))
        .timeout(Duration::from_secs(3))
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "/healthz answered {}", response.status());
    Ok(())
}

/// Ready when `/readyz` answers 200 (the gateway's own readiness: Redis
/// answers) and the admin account `up` prints is ensured: the gateway's
/// readiness does not wait for that (it needs the user service), `up` does.
pub async fn probe_gateway(config: &StackConfig) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .get(format!("{}/readyz", config.gateway_url()))
        .timeout(Duration::from_secs(3))
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "/readyz answered {status}");
    let body: serde_json::Value = response.json().await?;
    let admin = &body["checks"]["admin_account"];
    anyhow::ensure!(admin == "ok", "the admin account is not ensured yet: {admin}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::runtime_threads;

    #[test]
    fn a_runtime_thread_per_four_cores_and_at_least_one() {
        // Two cores (the measured case) and fewer: one thread each.
        assert_eq!([1, 2, 4, 5, 8, 16].map(runtime_threads), [1, 1, 1, 2, 2, 4]);
    }
}
