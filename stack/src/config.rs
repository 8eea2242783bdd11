//! Where the local stack lives: one state folder and a set of loopback ports,
//! all overridable from the environment so that two stacks can run side by side.

use std::path::{Path, PathBuf};

use saga_process::local::{self as defaults, BackendService};

/// Environment variables understood by [`StackConfig::from_env`].
pub mod env {
    pub const STATE_DIR: &str = "SAGA_STATE_DIR";
    pub const PORT_BASE: &str = "SAGA_PORT_BASE";
    pub const POSTGRES_PORT: &str = "SAGA_POSTGRES_PORT";
    pub const REDIS_PORT: &str = "SAGA_REDIS_PORT";
    pub const KAFKA_PORT: &str = "SAGA_KAFKA_PORT";
    pub const KAFKA_CONTROLLER_PORT: &str = "SAGA_KAFKA_CONTROLLER_PORT";
    pub const GATEWAY_PORT: &str = "SAGA_GATEWAY_PORT";
    pub const CONSOLE_PORT: &str = "SAGA_CONSOLE_PORT";
    pub const POSTGRES_PASSWORD: &str = "SAGA_POSTGRES_PASSWORD";
    pub const POSTGRES_BIN: &str = "SAGA_POSTGRES_BIN";
    pub const KAFKA_HEAP: &str = "SAGA_KAFKA_HEAP";
    /// Broker settings over the stack's own, `key=value` pairs separated by commas
    /// (e.g. `num.io.threads=2,num.network.threads=1`): to measure or tune the broker.
    pub const KAFKA_SETTINGS: &str = "SAGA_KAFKA_SETTINGS";
    pub const KAFKA_LIBS: &str = "SAGA_KAFKA_LIBS";
    pub const MIN_FREE_MB: &str = "SAGA_MIN_FREE_MB";
    pub const REPLICAS: &str = "SAGA_REPLICAS";
    pub const KAFKA_BROKERS: &str = "SAGA_KAFKA_BROKERS";
    /// The services run from their Go implementation, comma-separated (default
    /// `shipping`; empty: every service in Rust).
    pub const GO_SERVICES: &str = "SAGA_GO_SERVICES";

    /// `SAGA_<SERVICE>_PORT`: the gRPC port of one backend service (`SAGA_ORDER_PORT`, ...).
    pub fn service_port(service: &str) -> String {
        format!("SAGA_{}_PORT", service.to_uppercase())
    }
}

/// The saga's backend services, as the spec lists them.
pub fn services() -> Vec<BackendService> {
    BackendService::all(saga_generated::topology::SERVICES)
}

/// The services with an implementation in Go beside the Rust one (`services/<name>-go/`,
/// built as `<name>-service-go`).
pub const GO_IMPLEMENTATIONS: &[&str] = &["shipping"];

/// The executable of a service's Go implementation, beside the Rust binaries.
pub fn go_binary_name(service: &BackendService) -> String {
    format!("{}-go", service.binary())
}

/// Most instances of each service a local stack runs.
pub const MAX_REPLICAS: u16 = 4;

/// Kafka cluster sizes a local stack runs: one node, or a quorum of three.
pub const BROKER_COUNTS: [u16; 2] = [1, 3];

/// The ports of replica `r` (from 0) of a service are its first replica's plus
/// `r` times this; with [`MAX_REPLICAS`] they stay clear of every other port of
/// the stack (and of the metrics ports, 100 above each).
pub const REPLICA_PORT_STRIDE: u16 = 200;

/// The cluster shape: instances per service and Kafka nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub replicas: u16,
    pub brokers: u16,
}

impl Default for Shape {
    /// One of each: what a laptop starts fastest.
    fn default() -> Shape {
        Shape { replicas: 1, brokers: 1 }
    }
}

impl Shape {
    /// Replicas of every saga topic and DLQ.
    pub fn replication_factor(&self) -> i32 {
        i32::from(self.brokers.min(3))
    }

    /// `min.insync.replicas` of the saga topics: with three brokers a write is
    /// on two before it is acknowledged, so one broker may die without losing it.
    pub fn min_insync_replicas(&self) -> i32 {
        i32::from(self.brokers.min(2))
    }
}

/// `--replicas N --brokers B`: the cluster shape of a stack, over what the
/// environment says (`SAGA_REPLICAS`, `SAGA_KAFKA_BROKERS`; default 1 and 1).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ShapeArgs {
    /// Instances of each service (1 to 4), sharing their service's database and consumer group.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_REPLICAS as i64))]
    pub replicas: Option<u16>,
    /// Kafka nodes: 1, or 3 (a KRaft quorum; topics replicated 3 times, min.insync.replicas 2).
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(
        clap::builder::PossibleValuesParser::new(["1", "3"]), |v: String| v.parse::<u16>().unwrap_or(1)))]
    pub brokers: Option<u16>,
}

impl ShapeArgs {
    /// `config` with the shape these arguments give.
    pub fn apply(&self, mut config: StackConfig) -> StackConfig {
        config.shape.replicas = self.replicas.unwrap_or(config.shape.replicas);
        config.shape.brokers = self.brokers.unwrap_or(config.shape.brokers);
        config
    }
}

/// One node of the stack's Kafka cluster (broker and controller in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaNode {
    /// From 0; its KRaft node id is this plus one.
    pub index: u16,
    pub port: u16,
    pub controller_port: u16,
    /// Where the benchmark opens the node's JMX (see `bench::observe::kafka_requests`).
    pub jmx_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not a valid {what}")]
    Invalid { var: String, value: String, what: &'static str },
    #[error("{var}: port {base} + {offset} does not fit in 1..=65535")]
    PortOverflow { var: String, base: u16, offset: u16 },
}

/// Every loopback port the stack listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub postgres: u16,
    pub redis: u16,
    pub kafka: u16,
    pub kafka_controller: u16,
    pub gateway: u16,
    /// The operator console (HTTP; the gateway forwards to it).
    pub console: u16,
    /// Each backend service's gRPC port, in spec order.
    pub services: Vec<(BackendService, u16)>,
}

/// Layout of one local stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The workspace root (where `Cargo.toml`, `infra/` and `spec/` are).
    pub root: PathBuf,
    /// Everything the stack writes: data, logs, pid files.
    pub state_dir: PathBuf,
    pub port_base: u16,
    pub ports: Ports,
    /// Password of the PostgreSQL superuser `postgres`.
    pub postgres_password: String,
    /// Folder with the PostgreSQL 15 server binaries.
    pub postgres_bin: PathBuf,
    /// JVM heap of the Kafka broker (`-Xmx`), e.g. `512m`.
    pub kafka_heap: String,
    /// `server.properties` entries over the stack's own ([`env::KAFKA_SETTINGS`]).
    pub kafka_settings: Vec<(String, String)>,
    /// The broker's jars, resolved by Maven from `infra/kafka/pom.xml`; shared by all stacks.
    pub kafka_libs: PathBuf,
    /// `up` refuses to start with less free disk than this.
    pub min_free_mb: u64,
    /// Instances per service and Kafka nodes.
    pub shape: Shape,
    /// Build and run the services with cargo's `release` profile instead of
    /// `dev`. Off unless a caller asks (the benchmark does); `up` and `test`
    /// keep debug builds, which compile much faster.
    pub release: bool,
    /// Binaries run from another build than this workspace's, by name: the previous
    /// version of a service during a rollout (`cargo xtask chaos --scenarios rollout-*`).
    pub binaries: std::collections::BTreeMap<String, PathBuf>,
    /// The services the stack runs from their Go implementation ([`GO_IMPLEMENTATIONS`]).
    pub go_services: std::collections::BTreeSet<String>,
}

/// Where a stack starts when nothing in the environment says otherwise.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub state_dir: PathBuf,
    pub port_base: u16,
}

impl Defaults {
    /// The development stack of `cargo xtask up`.
    pub fn dev() -> Defaults {
        Defaults { state_dir: workspace_root().join(".state/dev"), port_base: defaults::PORT_BASE }
    }

    /// The isolated stack of `cargo xtask test`, beside the development stack.
    pub fn test() -> Defaults {
        Defaults { state_dir: workspace_root().join(".state/test"), port_base: defaults::PORT_BASE + 10_000 }
    }
}

/// The workspace root: the parent of the running crate's manifest folder.
///
/// Cargo sets `CARGO_MANIFEST_DIR` when it runs a binary or a test (the
/// xtask crate, the tests crate: both sit one level below the root); the
/// compile-time value is only the fallback, because two checkouts sharing one
/// target folder can run a binary compiled in the other checkout.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or(manifest_dir)
}

impl StackConfig {
    /// The development stack, with environment overrides.
    pub fn from_env() -> Result<StackConfig, ConfigError> {
        StackConfig::resolve(Defaults::dev(), |var| std::env::var(var).ok())
    }

    /// Builds a config from `defaults`, overridden by whatever `lookup` finds.
    pub fn resolve(defaults: Defaults, lookup: impl Fn(&str) -> Option<String>) -> Result<StackConfig, ConfigError> {
        let root = workspace_root();
        let state_dir = lookup(env::STATE_DIR).map(PathBuf::from).unwrap_or(defaults.state_dir);
        let state_dir = if state_dir.is_absolute() { state_dir } else { root.join(state_dir) };
        let port_base = match lookup(env::PORT_BASE) {
            Some(value) => parse_port(env::PORT_BASE, value)?,
            None => defaults.port_base,
        };
        let port = |var: &str, offset: u16| -> Result<u16, ConfigError> {
            match lookup(var) {
                Some(value) => parse_port(var, value),
                None => port_base.checked_add(offset).ok_or(ConfigError::PortOverflow {
                    var: var.to_owned(),
                    base: port_base,
                    offset,
                }),
            }
        };
        let ports = Ports {
            postgres: port(env::POSTGRES_PORT, defaults::POSTGRES_PORT_OFFSET)?,
            redis: port(env::REDIS_PORT, defaults::REDIS_PORT_OFFSET)?,
            kafka: port(env::KAFKA_PORT, defaults::KAFKA_PORT_OFFSET)?,
            kafka_controller: port(env::KAFKA_CONTROLLER_PORT, defaults::KAFKA_CONTROLLER_PORT_OFFSET)?,
            gateway: port(env::GATEWAY_PORT, defaults::GATEWAY_PORT_OFFSET)?,
            console: port(env::CONSOLE_PORT, defaults::CONSOLE_PORT_OFFSET)?,
            services: services()
                .into_iter()
                .map(|s| Ok((s, port(&env::service_port(s.name), s.port_offset())?)))
                .collect::<Result<_, ConfigError>>()?,
        };
        let min_free_mb = match lookup(env::MIN_FREE_MB) {
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                var: env::MIN_FREE_MB.to_owned(),
                value,
                what: "number of MiB",
            })?,
            None => 1024,
        };
        let count = |var: &'static str, what: &'static str, ok: &dyn Fn(u16) -> bool| match lookup(var) {
            Some(value) => match value.parse::<u16>() {
                Ok(n) if ok(n) => Ok(Some(n)),
                _ => Err(ConfigError::Invalid { var: var.to_owned(), value, what }),
            },
            None => Ok(None),
        };
        let shape = Shape {
            replicas: count(env::REPLICAS, "number of replicas (1 to 4)", &|n| (1..=MAX_REPLICAS).contains(&n))?
                .unwrap_or(1),
            brokers: count(env::KAFKA_BROKERS, "number of Kafka brokers (1 or 3)", &|n| BROKER_COUNTS.contains(&n))?
                .unwrap_or(1),
        };
        Ok(StackConfig {
            shape,
            kafka_libs: lookup(env::KAFKA_LIBS).map(PathBuf::from).unwrap_or_else(|| root.join(".state/kafka-libs")),
            root,
            state_dir,
            port_base,
            ports,
            postgres_password: lookup(env::POSTGRES_PASSWORD).unwrap_or_else(|| "postgres".to_owned()),
            postgres_bin: lookup(env::POSTGRES_BIN)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin")),
            kafka_heap: lookup(env::KAFKA_HEAP).unwrap_or_else(|| "512m".to_owned()),
            kafka_settings: match lookup(env::KAFKA_SETTINGS) {
                Some(list) => parse_settings(env::KAFKA_SETTINGS, &list)?,
                None => Vec::new(),
            },
            min_free_mb,
            release: false,
            binaries: std::collections::BTreeMap::new(),
            go_services: match lookup(env::GO_SERVICES) {
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        GO_IMPLEMENTATIONS.contains(&s).then(|| s.to_owned()).ok_or_else(|| ConfigError::Invalid {
                            var: env::GO_SERVICES.to_owned(),
                            value: list.clone(),
                            what: "list of services with a Go implementation (shipping)",
                        })
                    })
                    .collect::<Result<_, _>>()?,
                None => GO_IMPLEMENTATIONS.iter().map(|s| (*s).to_owned()).collect(),
            },
        })
    }

    /// The environment that makes [`StackConfig::from_env`] in a child process
    /// (a test, a tool) describe exactly this stack.
    pub fn to_env(&self) -> Vec<(String, String)> {
        let p = &self.ports;
        let fixed = [
            (env::STATE_DIR, self.state_dir.display().to_string()),
            (env::PORT_BASE, self.port_base.to_string()),
            (env::POSTGRES_PORT, p.postgres.to_string()),
            (env::REDIS_PORT, p.redis.to_string()),
            (env::KAFKA_PORT, p.kafka.to_string()),
            (env::KAFKA_CONTROLLER_PORT, p.kafka_controller.to_string()),
            (env::GATEWAY_PORT, p.gateway.to_string()),
            (env::CONSOLE_PORT, p.console.to_string()),
            (env::POSTGRES_PASSWORD, self.postgres_password.clone()),
            (env::POSTGRES_BIN, self.postgres_bin.display().to_string()),
            (env::KAFKA_HEAP, self.kafka_heap.clone()),
            (
                env::KAFKA_SETTINGS,
                self.kafka_settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            ),
            (env::KAFKA_LIBS, self.kafka_libs.display().to_string()),
            (env::MIN_FREE_MB, self.min_free_mb.to_string()),
            (env::REPLICAS, self.shape.replicas.to_string()),
            (env::KAFKA_BROKERS, self.shape.brokers.to_string()),
            (env::GO_SERVICES, self.go_services.iter().cloned().collect::<Vec<_>>().join(",")),
        ];
        let fixed = fixed.into_iter().map(|(k, v)| (k.to_owned(), v));
        fixed.chain(p.services.iter().map(|(s, port)| (env::service_port(s.name), port.to_string()))).collect()
    }

    pub fn host(&self) -> &'static str {
        defaults::HOST
    }

    /// Every node of the Kafka cluster: node `n`'s ports are node 0's plus `2n`.
    pub fn kafka_nodes(&self) -> Vec<KafkaNode> {
        (0..self.shape.brokers).map(|index| self.kafka_node(index)).collect()
    }

    /// Node `index`, also one beyond the shape (what `down` looks for): the same port rule.
    pub fn kafka_node(&self, index: u16) -> KafkaNode {
        KafkaNode {
            index,
            port: self.ports.kafka + 2 * index,
            controller_port: self.ports.kafka_controller + 2 * index,
            jmx_port: self.port_base + defaults::KAFKA_JMX_PORT_OFFSET + index,
        }
    }

    /// The bootstrap list of every node.
    pub fn kafka_brokers(&self) -> String {
        let nodes: Vec<String> = self.kafka_nodes().iter().map(|n| format!("{}:{}", self.host(), n.port)).collect();
        nodes.join(",")
    }

    /// The URL the console reads `database` with: its read-only role.
    pub fn console_database_url(&self, database: &str) -> String {
        let role = defaults::CONSOLE_DATABASE;
        format!("postgres://{role}:{role}@{}:{}/{database}", self.host(), self.ports.postgres)
    }

    /// Mutual TLS only: the console answers the gateway's certificate (see [`StackConfig::tls_dir`]).
    pub fn console_url(&self) -> String {
        format!("https://{}:{}", self.host(), self.ports.console)
    }

    /// Where this stack's state lives, for `saga_operator` (`prefix`: the services' topic prefix).
    pub fn sources(&self, prefix: &str) -> saga_operator::Sources {
        saga_operator::Sources::of(|s| self.database_url(s), self.kafka_brokers(), prefix.to_owned())
    }

    pub fn redis_url(&self) -> String {
        format!("redis://{}:{}/", self.host(), self.ports.redis)
    }

    /// Superuser URL, for provisioning and for tests that create scratch databases.
    pub fn postgres_admin_url(&self, database: &str) -> String {
        format!("postgres://postgres:{}@{}:{}/{database}", self.postgres_password, self.host(), self.ports.postgres)
    }

    /// URL of a service's own database, as that service's own role.
    pub fn database_url(&self, service: BackendService) -> String {
        let db = service.database();
        format!("postgres://{db}:{db}@{}:{}/{db}", self.host(), self.ports.postgres)
    }

    pub fn service_port(&self, service: BackendService) -> u16 {
        let port = self.ports.services.iter().find(|(s, _)| *s == service).map(|(_, port)| *port);
        // Every service of the spec has a port (see `resolve`).
        port.unwrap_or_else(|| defaults::PORT_BASE + service.port_offset())
    }

    /// The gRPC port of replica `replica` (from 0) of `service`.
    pub fn replica_port(&self, service: BackendService, replica: u16) -> u16 {
        self.service_port(service) + REPLICA_PORT_STRIDE * replica
    }

    /// The first replica's gRPC URL.
    pub fn grpc_url(&self, service: BackendService) -> String {
        self.replica_url(service, 0)
    }

    /// Mutual TLS only: a service refuses plaintext (see [`StackConfig::tls_dir`]).
    pub fn replica_url(&self, service: BackendService, replica: u16) -> String {
        format!("https://{}:{}", self.host(), self.replica_port(service, replica))
    }

    /// The stack's certificate authority and every party's certificate and key.
    pub fn tls_dir(&self) -> PathBuf {
        self.state_dir.join("tls")
    }

    /// Every replica's gRPC URL, comma-separated: what the gateway balances over.
    pub fn grpc_urls(&self, service: BackendService) -> String {
        let urls: Vec<String> = (0..self.shape.replicas).map(|r| self.replica_url(service, r)).collect();
        urls.join(",")
    }

    /// Where the process listening on `port` serves its Prometheus metrics.
    pub fn metrics_url(&self, port: u16) -> String {
        format!("http://{}:{}/metrics", self.host(), port + saga_process::metrics::PORT_SHIFT)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}:{}", self.host(), self.ports.gateway)
    }

    /// Where cargo puts a binary of this workspace for this stack's profile
    /// (honours `CARGO_TARGET_DIR`, relative to the workspace root), unless
    /// [`StackConfig::binaries`] names another.
    pub fn binary(&self, name: &str) -> PathBuf {
        if let Some(other) = self.binaries.get(name) {
            return other.clone();
        }
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| self.root.join("target"));
        let target = if target.is_absolute() { target } else { self.root.join(target) };
        target.join(if self.release { "release" } else { "debug" }).join(name)
    }

    /// The executable of `service`: another build's during a rollout, its Go
    /// implementation's when the stack runs that, else this workspace's Rust one.
    pub fn service_binary(&self, service: &BackendService) -> PathBuf {
        if let Some(other) = self.binaries.get(&service.binary()) {
            return other.clone();
        }
        if self.go_services.contains(service.name) {
            return self.binary(&go_binary_name(service));
        }
        self.binary(&service.binary())
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }
}

fn parse_port(var: &str, value: String) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ConfigError::Invalid { var: var.to_owned(), value, what: "TCP port" }),
    }
}

/// `key=value` pairs separated by commas; blank entries are skipped.
fn parse_settings(var: &str, list: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let invalid = || ConfigError::Invalid {
        var: var.to_owned(),
        value: list.to_owned(),
        what: "list of key=value settings, separated by commas",
    };
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
            _ => Err(invalid()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(vars: &[(&str, &str)]) -> Result<StackConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        StackConfig::resolve(Defaults::dev(), |k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_runtime_defaults() {
        let config = resolve(&[]).expect("defaults are valid");
        let order = services()[0];
        assert_eq!(config.database_url(order), order.default_database_url());
        assert_eq!(config.kafka_brokers(), defaults::kafka_brokers());
        assert_eq!(config.redis_url(), defaults::redis_url());
        assert_eq!(config.grpc_url(order), format!("https://{}", order.default_listen()));
        assert_eq!(config.console_database_url("order_service"), defaults::console_database_url("order_service"));
    }

    #[test]
    fn port_base_moves_every_port_and_single_ports_override_it() {
        let config = resolve(&[(env::PORT_BASE, "30000"), (env::REDIS_PORT, "6390")]).expect("valid");
        assert_eq!(config.ports.postgres, 30432);
        assert_eq!(config.ports.kafka, 30092);
        assert_eq!(config.ports.redis, 6390);
        let ports: Vec<u16> = config.ports.services.iter().map(|(_, port)| *port).collect();
        assert_eq!(ports, [30051, 30052, 30053, 30054]);
        let config = resolve(&[(env::PORT_BASE, "30000"), ("SAGA_PRODUCT_PORT", "4000")]).expect("valid");
        assert_eq!(config.service_port(services()[1]), 4000);
    }

    #[test]
    fn round_trips_through_the_environment() {
        let config = resolve(&[
            (env::PORT_BASE, "31000"),
            (env::STATE_DIR, "/tmp/x"),
            (env::KAFKA_SETTINGS, "num.io.threads=2, num.network.threads=1"),
        ])
        .expect("valid");
        let vars: HashMap<String, String> = config.to_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let again = StackConfig::resolve(Defaults::dev(), |k| vars.get(k).cloned()).expect("valid");
        assert_eq!(again.ports, config.ports);
        assert_eq!(again.state_dir, config.state_dir);
        assert_eq!(again.kafka_settings, config.kafka_settings);
        assert_eq!(config.kafka_settings[1], ("num.network.threads".to_owned(), "1".to_owned()));
    }

    #[test]
    fn broker_settings_are_key_value_pairs() {
        assert_eq!(resolve(&[(env::KAFKA_SETTINGS, "")]).expect("empty").kafka_settings, []);
        let error = resolve(&[(env::KAFKA_SETTINGS, "num.io.threads")]).expect_err("no value");
        assert!(error.to_string().contains("key=value"), "{error}");
        assert!(resolve(&[(env::KAFKA_SETTINGS, "=2")]).is_err());
    }

    #[test]
    fn a_replicated_shape_gives_every_instance_its_own_ports() {
        let config = resolve(&[(env::REPLICAS, "2"), (env::KAFKA_BROKERS, "3")]).expect("valid");
        assert_eq!(config.kafka_brokers(), "127.0.0.1:17092,127.0.0.1:17094,127.0.0.1:17096");
        let controllers: Vec<u16> = config.kafka_nodes().iter().map(|n| n.controller_port).collect();
        assert_eq!(controllers, [17093, 17095, 17097]);
        let order = services()[0];
        assert_eq!(config.grpc_urls(order), "https://127.0.0.1:17051,https://127.0.0.1:17251");
        assert_eq!((config.shape.replication_factor(), config.shape.min_insync_replicas()), (3, 2));
        // The highest replica's ports (and their metrics ports) meet no other port of the stack.
        let top = config.replica_port(services()[2], MAX_REPLICAS - 1);
        let fixed = [config.ports.postgres, config.ports.redis, config.ports.gateway, config.ports.console];
        for port in [top, top + saga_process::metrics::PORT_SHIFT] {
            assert!(!fixed.contains(&port) && port < config.port_base + 1000, "{port}");
        }
        let error = resolve(&[(env::KAFKA_BROKERS, "2")]).expect_err("two brokers");
        assert!(error.to_string().contains("1 or 3"), "{error}");
        let error = resolve(&[(env::REPLICAS, "9")]).expect_err("too many");
        assert!(error.to_string().contains("SAGA_REPLICAS"), "{error}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = resolve(&[(env::KAFKA_PORT, "99999")]).expect_err("invalid port");
        assert_eq!(error.to_string(), "SAGA_KAFKA_PORT=\"99999\" is not a valid TCP port");
        let error = resolve(&[(env::PORT_BASE, "65200")]).expect_err("overflow");
        assert!(error.to_string().contains("does not fit"), "{error}");
    }
}
