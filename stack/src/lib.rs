//! The local stack as a library: PostgreSQL, Redis, Kafka and the saga's services on
//! 127.0.0.1, each a detached process tracked by a pid file under the state folder. What
//! `cargo xtask up`/`down`/`test`, the benchmark, the chaos suite and the integration tests
//! share: where a stack is ([`StackConfig`]), how it is installed, started, secured and stopped.

pub mod config;
pub mod install;
pub mod kafka;
pub mod kafka_access;
pub mod postgres;
mod preflight;
pub mod process;
mod redis_server;
pub mod services;
pub mod tls;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use self::config::{Shape, services};
use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use saga_process::local::BackendService;

pub use self::config::StackConfig;
pub use self::kafka::DLQ_RETENTION_MS;
use self::process::Tracked;
pub use self::services::admin_credentials;

/// One process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Postgres,
    Redis,
    /// Node `n` (from 0) of the Kafka cluster.
    Kafka(u16),
    /// Replica `r` (from 0) of a backend service.
    Service(BackendService, u16),
    Console,
    Gateway,
}

impl Component {
    /// Every process of a stack of `shape`, in start order; `down` stops in reverse.
    pub fn all_of(shape: Shape) -> Vec<Component> {
        let mut all = vec![Component::Postgres, Component::Redis];
        all.extend((0..shape.brokers).map(Component::Kafka));
        for service in services() {
            all.extend((0..shape.replicas).map(|r| Component::Service(service, r)));
        }
        all.push(Component::Console);
        all.push(Component::Gateway);
        all
    }

    /// Every process of this stack's shape.
    pub fn all(config: &StackConfig) -> Vec<Component> {
        Component::all_of(config.shape)
    }

    /// Every process any shape may have started: what `down` looks for, whatever
    /// shape the stack was started with.
    pub fn any_shape() -> Vec<Component> {
        Component::all_of(Shape {
            replicas: config::MAX_REPLICAS,
            brokers: *config::BROKER_COUNTS.iter().max().unwrap_or(&1),
        })
    }

    /// The instances of one backend service.
    pub fn replicas(config: &StackConfig, service: BackendService) -> Vec<Component> {
        (0..config.shape.replicas).map(|r| Component::Service(service, r)).collect()
    }

    pub fn is_infrastructure(&self) -> bool {
        matches!(self, Component::Postgres | Component::Redis | Component::Kafka(_))
    }

    /// Its name in `status`, and of its pid and log files: the first instance
    /// has the plain name (`order`, `kafka`), the others a number (`order-2`).
    pub fn name(&self) -> String {
        let numbered =
            |name: &str, index: u16| if index == 0 { name.to_owned() } else { format!("{name}-{}", index + 1) };
        match self {
            Component::Postgres => "postgres".to_owned(),
            Component::Redis => "redis".to_owned(),
            Component::Kafka(node) => numbered("kafka", *node),
            Component::Service(service, replica) => numbered(service.name, *replica),
            Component::Console => "console".to_owned(),
            Component::Gateway => "gateway".to_owned(),
        }
    }

    /// Ports the component listens on.
    pub fn ports(&self, config: &StackConfig) -> Vec<u16> {
        match self {
            Component::Postgres => vec![config.ports.postgres],
            Component::Redis => vec![config.ports.redis],
            Component::Kafka(node) => {
                let node = config.kafka_node(*node);
                vec![node.port, node.controller_port]
            }
            Component::Service(service, replica) => vec![config.replica_port(*service, *replica)],
            Component::Console => vec![config.ports.console],
            Component::Gateway => vec![config.ports.gateway],
        }
    }

    /// What a person or a client uses to reach it.
    pub fn address(&self, config: &StackConfig) -> String {
        match self {
            Component::Postgres => {
                let dbs: Vec<String> = services().iter().map(|s| s.database()).collect();
                format!(
                    "postgres://postgres@{}:{} (databases {}; role = password = database name)",
                    config.host(),
                    config.ports.postgres,
                    dbs.join(", ")
                )
            }
            Component::Redis => config.redis_url(),
            Component::Kafka(0) => format!(
                "{} (topics: {}; replication factor {}, min.insync.replicas {})",
                config.kafka_brokers(),
                kafka::topic_names().join(", "),
                config.shape.replication_factor(),
                config.shape.min_insync_replicas()
            ),
            Component::Kafka(node) => {
                let node = config.kafka_node(*node);
                format!("{}:{} (node {} of the cluster)", config.host(), node.port, node.index + 1)
            }
            Component::Service(service, replica) => format!(
                "{} (gRPC; metrics {})",
                config.replica_url(*service, *replica),
                config.metrics_url(config.replica_port(*service, *replica))
            ),
            Component::Console => format!(
                "{} (mutual TLS, answers the gateway's certificate; open it through the gateway: {}/console; \
                 metrics {})",
                config.console_url(),
                config.gateway_url(),
                config.metrics_url(config.ports.console)
            ),
            Component::Gateway => format!(
                "{} (REST; /healthz, /readyz; metrics {})",
                config.gateway_url(),
                config.metrics_url(config.ports.gateway)
            ),
        }
    }

    pub fn tracked(&self, config: &StackConfig) -> Tracked {
        Tracked::new(&self.name(), &config.run_dir(), &config.logs_dir())
    }

    /// The executable a service component runs; `None` for infrastructure.
    fn binary(&self, config: &StackConfig) -> Option<PathBuf> {
        match self {
            Component::Service(service, _) => Some(config.service_binary(service)),
            Component::Console => Some(config.binary(services::CONSOLE_BINARY)),
            Component::Gateway => Some(config.binary(services::GATEWAY_BINARY)),
            _ => None,
        }
    }

    /// True when the executable is newer than the pid file written when the process started.
    fn rebuilt_since_start(&self, config: &StackConfig) -> bool {
        let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
        match (self.binary(config).as_deref().and_then(modified), modified(&self.tracked(config).pid_file)) {
            (Some(built), Some(started)) => built > started,
            _ => false,
        }
    }

    fn stop_signal(&self) -> (Signal, Duration) {
        match self {
            Component::Postgres => (postgres::STOP_SIGNAL, postgres::STOP_GRACE),
            Component::Kafka(_) => (Signal::SIGTERM, Duration::from_secs(30)),
            _ => (Signal::SIGTERM, Duration::from_secs(15)),
        }
    }

    fn command(&self, config: &StackConfig) -> anyhow::Result<Command> {
        match self {
            Component::Postgres => {
                postgres::prepare(config)?;
                postgres::command(config)
            }
            Component::Redis => redis_server::command(config),
            Component::Kafka(node) => {
                kafka::prepare(config, *node)?;
                Ok(kafka::command(config, *node))
            }
            Component::Service(service, replica) => services::backend_command(config, *service, *replica),
            Component::Console => services::console_command(config),
            Component::Gateway => Ok(services::gateway_command(config)),
        }
    }

    async fn probe(&self, config: &StackConfig) -> anyhow::Result<()> {
        match self {
            Component::Postgres => postgres::probe(config).await,
            Component::Redis => redis_server::probe(config).await,
            Component::Kafka(node) => kafka::probe(config, *node).await,
            Component::Service(service, replica) => services::probe_backend(config, *service, *replica).await,
            Component::Console => services::probe_console(config).await,
            Component::Gateway => services::probe_gateway(config).await,
        }
    }

    /// Work once the component answers: databases, topics.
    async fn provision(&self, config: &StackConfig) -> anyhow::Result<()> {
        match self {
            Component::Postgres => postgres::provision(config).await,
            // Once every node answers: topics need as many brokers as replicas.
            Component::Kafka(node) if *node + 1 == config.shape.brokers => {
                kafka::create_topics(config).await?;
                let config = config.clone();
                tokio::task::spawn_blocking(move || kafka_access::apply_acls(&config)).await?
            }
            _ => Ok(()),
        }
    }
}

/// What `up` starts.
#[derive(Debug, Clone, Copy)]
pub struct UpOptions {
    /// Start the services and the gateway too, not only PostgreSQL, Redis and Kafka.
    pub services: bool,
    /// `cargo build` the services first.
    pub build: bool,
}

/// How long one component may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Installs what is missing and starts every component that is not running
/// yet. On failure, stops what this call started and returns the error.
pub async fn up(config: &StackConfig, options: UpOptions) -> anyhow::Result<()> {
    preflight::check_disk(config)?;
    install::ensure_packages(config)?;
    install::ensure_kafka_libs(config)?;
    kafka::check_shape(config)?;
    tls::ensure(config)?;
    kafka_access::authenticate_as_admin(config)?;
    let components: Vec<Component> =
        Component::all(config).into_iter().filter(|c| options.services || c.is_infrastructure()).collect();
    if options.services && options.build {
        services::build(config)?;
    }
    // A service whose binary was rebuilt after it started runs old code: restart it.
    for component in &components {
        let tracked = component.tracked(config);
        if tracked.running_pid().is_some() && component.rebuilt_since_start(config) {
            println!("restarting {} (its binary was rebuilt)", component.name());
            let (signal, grace) = component.stop_signal();
            tracked.stop(signal, grace);
        }
    }
    let to_start: Vec<Component> =
        components.iter().copied().filter(|c| c.tracked(config).running_pid().is_none()).collect();
    preflight::check_ports_free(
        config,
        to_start.iter().flat_map(|c| c.ports(config).into_iter().map(move |port| (c.name(), port))),
    )?;

    let mut started = Vec::new();
    let mut result = start(config, &components, &to_start, &mut started).await;
    if result.is_ok() && options.services {
        result = kafka::consumer_groups_stable(config, START_TIMEOUT).await;
    }
    if let Err(error) = result {
        for component in started.iter().rev() {
            let (signal, grace) = component.stop_signal();
            component.tracked(config).stop(signal, grace);
        }
        return Err(error);
    }
    Ok(())
}

async fn start(
    config: &StackConfig,
    components: &[Component],
    to_start: &[Component],
    started: &mut Vec<Component>,
) -> anyhow::Result<()> {
    // Infrastructure first, all three spawned before waiting on any (Kafka's JVM is the slow one).
    for phase in [true, false] {
        let phase_components: Vec<Component> =
            components.iter().copied().filter(|c| c.is_infrastructure() == phase).collect();
        for component in phase_components.iter().filter(|c| to_start.contains(c)) {
            let mut command = component.command(config)?;
            component.tracked(config).spawn(&mut command)?;
            started.push(*component);
        }
        for component in &phase_components {
            wait_ready(config, *component).await?;
            component.provision(config).await.with_context(|| format!("provisioning {}", component.name()))?;
        }
    }
    Ok(())
}

/// Starts one stopped component and waits until it answers (and is
/// provisioned): what a supervisor does after a crash. Unlike [`up`] it does
/// not wait for the consumer groups to settle.
pub async fn start_component(config: &StackConfig, component: Component) -> anyhow::Result<()> {
    let mut command = component.command(config)?;
    component.tracked(config).spawn(&mut command)?;
    wait_ready(config, component).await?;
    component.provision(config).await.with_context(|| format!("provisioning {}", component.name()))
}

async fn wait_ready(config: &StackConfig, component: Component) -> anyhow::Result<()> {
    let tracked = component.tracked(config);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let probe = tokio::time::timeout(Duration::from_secs(5), component.probe(config)).await;
        let error = match probe {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => anyhow::anyhow!("probe timed out"),
        };
        if tracked.running_pid().is_none() {
            bail!(
                "{} exited during start-up; last lines of {}:\n{}",
                component.name(),
                tracked.log_file.display(),
                tracked.log_tail(15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} not ready after {:?} ({error:#}); see {}",
                component.name(),
                START_TIMEOUT,
                tracked.log_file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops every component that has a live pid file, in reverse start order;
/// the instances of one kind together (every Kafka node at once: a node
/// stopped after the others lost the quorum that its controlled shutdown
/// waits for). Returns the names of those stopped.
pub fn down(config: &StackConfig) -> Vec<String> {
    let mut stopped = Vec::new();
    let mut all = Component::any_shape();
    all.reverse();
    let kind = |c: &Component| std::mem::discriminant(c);
    for group in all.chunk_by(|a, b| kind(a) == kind(b)) {
        let results: Vec<(String, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter()
                .map(|component| {
                    scope.spawn(move || {
                        let (signal, grace) = component.stop_signal();
                        (component.name(), component.tracked(config).stop(signal, grace))
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        stopped.extend(results.into_iter().filter(|(_, s)| *s).map(|(name, _)| name));
    }
    stopped
}

/// Removes the state folder (data, logs) of a stopped stack.
pub fn purge(config: &StackConfig) -> anyhow::Result<()> {
    if Component::any_shape().iter().any(|c| c.tracked(config).running_pid().is_some()) {
        bail!("the stack is still running: stop it first");
    }
    let pg_data = postgres::data_dir(config);
    // Outside the state folder (see postgres::data_dir), the cluster has a folder of its own.
    let pg_outside = if pg_data.starts_with(&config.state_dir) { None } else { pg_data.parent().map(PathBuf::from) };
    for dir in std::iter::once(config.state_dir.clone()).chain(pg_outside) {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    Ok(())
}

/// One line per component of this stack's shape (and any other instance still
/// running): running (with pid) or stopped, and its address.
pub fn status_lines(config: &StackConfig) -> Vec<String> {
    let shaped = Component::all(config);
    let strays =
        Component::any_shape().into_iter().filter(|c| !shaped.contains(c) && c.tracked(config).running_pid().is_some());
    shaped
        .iter()
        .copied()
        .chain(strays)
        .map(|component| {
            let state = match component.tracked(config).running_pid() {
                Some(pid) => format!("running (pid {pid})"),
                None => "stopped".to_owned(),
            };
            format!("{:<10} {:<22} {}", component.name(), state, component.address(config))
        })
        .collect()
}

/// Writes `text` to a file only its owner can read or write (credentials,
/// keys, settings holding a password), replacing what it held; the mode
/// holds from the file's creation on.
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A file that was there before keeps its mode through `open`.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
