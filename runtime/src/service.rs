//! The service chassis: what every backend service binary shares. [`run`]
//! parses the command line, applies the migrations, starts the outbox relay
//! and the consumer, serves the gRPC API with health checking and shuts all
//! of it down in order; a service's `main` names only what is its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Server, ServerTlsConfig};
use tower::layer::util::{Identity, Stack};

use saga_contract::{Dispatch, ServiceIdentity, TopicShape};
use saga_process::shutdown::Shutdown;
use sqlx::PgConnection;
use sqlx::migrate::Migrator;

use crate::callers::{Callers, CallersLayer};
use crate::db::PoolName;
use crate::health::Health;
use crate::participant::{Participant, ParticipantError};
use crate::schema_registry;

use saga_process::local::BackendService;

/// Configuration of a backend service; every flag also reads an environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// gRPC listen address.
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of this service's own database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Maximum connections of the pool the saga's work uses (consumer,
    /// outbox relay, timeout sweeper).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Maximum connections of the separate pool gRPC requests use, so a burst
    /// of requests (clients retrying after an outage, status polls) never
    /// starves the sagas in flight of connections.
    #[arg(long, env = "DATABASE_API_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_api_max_connections: u32,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// The service's Kafka principal (SASL/SCRAM). With KAFKA_SASL_PASSWORD,
    /// every client of the service authenticates as it; the broker lets it
    /// use only the topics and group the spec gives the service.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// The password of KAFKA_SASL_USERNAME.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// How long the outbox relay's producer waits to fill a batch (librdkafka `linger.ms`).
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = crate::kafka::DEFAULT_LINGER_MS)]
    pub kafka_linger_ms: u32,
    /// Prefix of every Kafka topic and consumer group this service uses, so
    /// several independent sagas can share one broker (tests); empty in production.
    #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Most consumed messages handled in one database transaction (1: one
    /// each), instead of the `batch` the spec's delivery policy gives.
    #[arg(long, env = "CONSUMER_MAX_BATCH",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub consumer_max_batch: Option<usize>,
    /// Workers the consumer deals its partitions to: each handles its
    /// partitions' messages in order, one transaction at a time, so this many
    /// transactions of the consumer can be in flight at once.
    #[arg(long, env = "CONSUMER_WORKERS", default_value_t = crate::consumer::WORKERS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub consumer_workers: usize,
    /// This instance's static membership in its Kafka consumer group
    /// (`group.instance.id`); must differ between instances of a service.
    /// Default: `<service>-<hostname>-<gRPC port>`. Empty: dynamic membership,
    /// for instances whose name changes on every start (a Kubernetes
    /// Deployment's pods), which leave the group when they stop.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    pub kafka_group_instance_id: Option<String>,
    /// How long a loop of the saga's pipeline (a consumer partition, the
    /// outbox relay, the timeout sweeper, the broker check) may keep failing,
    /// or one of its attempts stay in flight without progress, before gRPC
    /// health says NOT_SERVING for it and for `saga.pipeline`, in
    /// milliseconds. It does not touch readiness (`""`).
    #[arg(long, env = "HEALTH_STUCK_AFTER_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub health_stuck_after_ms: u64,
    /// On SIGTERM the service stops taking calls and messages, finishes those in
    /// flight, and exits; past this many seconds it exits all the same (code 1).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = saga_process::shutdown::DEFAULT_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// How long the service's database may fail its check (a `SELECT 1`
    /// every second, 2 s to answer) before the service is not ready (gRPC
    /// health `""` and `saga.api` NOT_SERVING), in milliseconds.
    #[arg(long, env = "HEALTH_DATABASE_FAIL_AFTER_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub health_database_fail_after_ms: u64,
    /// How long one attempt of a loop may stay in flight before the loop
    /// counts as wedged, which fails liveness (gRPC health `saga.live`)
    /// while the database answers, in milliseconds. Far above every timeout
    /// inside an attempt, which bound it when nothing is wrong with the process.
    #[arg(long, env = "HEALTH_WEDGED_AFTER_MS", default_value_t = 600_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub health_wedged_after_ms: u64,
    /// PostgreSQL `statement_timeout` of every database connection, in
    /// milliseconds (0: none). Migrations run without it.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub database_statement_timeout_ms: u64,
    /// PostgreSQL `lock_timeout` of every database connection: the longest
    /// wait for a row or table lock, in milliseconds (0: none). A statement
    /// that gives up is retried like an outage.
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT_MS", default_value_t = 10_000)]
    pub database_lock_timeout_ms: u64,
    /// PostgreSQL `idle_in_transaction_session_timeout` of every database
    /// connection, in milliseconds (0: none); well above the 30 s the relay
    /// may keep its transaction open while the broker acknowledges a batch.
    #[arg(long, env = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 120_000)]
    pub database_idle_in_transaction_timeout_ms: u64,
    /// TCP keepalive of the gRPC server's connections and, on the server's
    /// side, of the database connections (PostgreSQL's `tcp_keepalives_idle`):
    /// seconds of silence before the first probe, then one every third of
    /// that, three times (0: the system's defaults).
    #[arg(long, env = "TCP_KEEPALIVE_SECS", default_value_t = 30)]
    pub tcp_keepalive_secs: u64,
    /// Where Prometheus metrics are served (`/metrics`). Default: the gRPC
    /// address's port plus 100.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The certificate authority (PEM) a caller's client certificate must
    /// chain to. With GRPC_TLS_CERT and GRPC_TLS_KEY, the server speaks mutual
    /// TLS only: no plaintext, no caller without a certificate.
    #[arg(long, env = "GRPC_TLS_CLIENT_CA")]
    pub grpc_tls_client_ca: Option<PathBuf>,
    /// The certificate (PEM) the server presents, issued for the service's name.
    #[arg(long, env = "GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of GRPC_TLS_CERT.
    #[arg(long, env = "GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// The identities (the names their certificates are issued for) allowed
    /// to call the service's API over mutual TLS; any certificate of the
    /// authority may ask its health.
    #[arg(long, env = "GRPC_ALLOWED_CALLERS", value_delimiter = ',', default_value = saga_proto::tls::GATEWAY)]
    pub grpc_allowed_callers: Vec<String>,
    /// Serves plaintext gRPC on an address other than loopback. Only for a
    /// network that authenticates its traffic itself (a service mesh): without
    /// it, anyone who reaches the port could call the API.
    #[arg(long, env = "GRPC_ALLOW_PLAINTEXT")]
    pub grpc_allow_plaintext: bool,
    /// Also serves the gRPC health service alone, in plaintext, here: for an
    /// orchestrator's probes, which cannot present a client certificate
    /// (Kubernetes' gRPC probe). Nothing but the health answers on it.
    #[arg(long, env = "HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ServiceArgs,
}

impl ServiceArgs {
    /// The settings every database connection of the service starts with.
    pub fn session_settings(&self) -> crate::db::SessionSettings {
        crate::db::SessionSettings {
            statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
            lock_timeout: Duration::from_millis(self.database_lock_timeout_ms),
            idle_in_transaction_timeout: Duration::from_millis(self.database_idle_in_transaction_timeout_ms),
            tcp_keepalive: self.tcp_keepalive(),
        }
    }

    /// The TCP keepalive idle time, if any.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        (self.tcp_keepalive_secs > 0).then(|| Duration::from_secs(self.tcp_keepalive_secs))
    }

    /// Parses the command line and environment, with defaults that point at
    /// the local development stack for this service.
    pub fn parse_for(service: BackendService) -> ServiceArgs {
        // A default does not lift the requirement clap's derive gave the
        // field: without `required(false)`, a setting left to its default
        // was reported missing as soon as another was given.
        let command = Cli::command()
            .name(service.binary())
            .about(format!("The saga's {} service (gRPC)", service.name))
            .mut_arg("listen", |a| a.default_value(service.default_listen()).required(false))
            .mut_arg("database_url", |a| a.default_value(service.default_database_url()).required(false))
            .mut_arg("kafka_brokers", |a| a.default_value(saga_process::local::kafka_brokers()).required(false));
        let matches = command.get_matches();
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli.args,
            Err(error) => error.exit(),
        }
    }
}

/// How long a service waits for its database at start-up.
pub const DATABASE_WAIT: Duration = Duration::from_secs(30);

/// How long a service waits for Kafka at start-up to check its topics.
pub const KAFKA_WAIT: Duration = Duration::from_secs(30);

/// How often the gRPC health service is brought in step with the loops' health.
const HEALTH_REPORT_EVERY: Duration = Duration::from_secs(1);

/// The server a service adds its API to: every call passes the check of its caller first.
pub type ApiRouter = Router<Stack<CallersLayer, Identity>>;

/// How a service's gRPC server meets its callers.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Mutual TLS, or plaintext (`None`).
    pub tls: Option<ServerTlsConfig>,
    /// Who may call what.
    pub callers: Callers,
    /// Where the health service alone is served in plaintext, if anywhere.
    pub health_listen: Option<SocketAddr>,
    /// TCP keepalive of accepted connections (idle time before the first probe).
    pub tcp_keepalive: Option<Duration>,
}

/// Turns TCP keepalive on for the connections `incoming` accepts: after
/// `idle` of silence, a probe every third of it, three times; a caller that
/// vanished without closing its connection (a killed host, a partition) is
/// noticed and its connection's resources freed.
pub fn keepalive(incoming: TcpIncoming, idle: Option<Duration>) -> TcpIncoming {
    match idle {
        Some(idle) => incoming
            .with_keepalive(Some(idle))
            .with_keepalive_interval(Some((idle / 3).max(Duration::from_secs(1))))
            .with_keepalive_retries(Some(3)),
        None => incoming,
    }
}

impl Transport {
    /// The transport `args` configure: mutual TLS when its files are given;
    /// plaintext only on loopback, unless explicitly allowed.
    pub fn from_args(args: &ServiceArgs) -> Result<Transport, BootError> {
        let files = saga_proto::tls::TlsFiles::from_settings(
            "GRPC_TLS_CLIENT_CA, GRPC_TLS_CERT, GRPC_TLS_KEY",
            args.grpc_tls_client_ca.clone(),
            args.grpc_tls_cert.clone(),
            args.grpc_tls_key.clone(),
        )?;
        let (tls, callers) = match files {
            Some(files) => {
                (Some(files.server()?), Callers::certified(&args.grpc_allowed_callers).map_err(BootError::Callers)?)
            }
            None if args.listen.ip().is_loopback() || args.grpc_allow_plaintext => (None, Callers::Anyone),
            None => return Err(BootError::Plaintext { listen: args.listen }),
        };
        Ok(Transport { tls, callers, health_listen: args.health_listen, tcp_keepalive: args.tcp_keepalive() })
    }
}

/// Serves the standard gRPC health service (what `liveness` says: readiness
/// as `""` and `saga.api`, the pipeline, liveness as `saga.live`, and each
/// loop; see `crate::health`), gRPC server reflection for
/// `descriptor_set` and whatever `add_services` adds, on `listener`, until
/// `shutdown` is requested; in-flight calls are drained first.
pub async fn serve_grpc_until(
    listener: TcpIncoming,
    transport: Transport,
    shutdown: Shutdown,
    descriptor_set: &'static [u8],
    liveness: Health,
    add_services: impl FnOnce(ApiRouter) -> ApiRouter,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(liveness.report(reporter, HEALTH_REPORT_EVERY));
    if let Some(listen) = transport.health_listen {
        let probes = Server::builder().add_service(health.clone());
        let shutdown = shutdown.clone();
        let error = |source| ServeError::HealthListen { listen, source };
        let listener = keepalive(TcpIncoming::bind(listen).map_err(error)?, transport.tcp_keepalive);
        let listen = listener.local_addr().map_err(error)?;
        tracing::info!(%listen, "gRPC health alone served in plaintext for probes");
        tokio::spawn(async move {
            if let Err(error) = probes.serve_with_incoming_shutdown(listener, shutdown.wait()).await {
                tracing::error!(%error, "the probes' health server stopped");
            }
        });
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut server = Server::builder();
    if let Some(tls) = transport.tls {
        server = server.tls_config(tls)?;
    }
    let mut server = server.trace_fn(call_span).layer(CallersLayer(transport.callers));
    let router = add_services(server.add_service(health).add_service(reflection));
    router.serve_with_incoming_shutdown(listener, async move { shutdown.wait().await }).await?;
    Ok(())
}

/// The span of one gRPC call: its method and the caller's trace id, so every
/// log line of the call is found by the trace of the request behind it.
fn call_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let traceparent = request.headers().get(saga_process::trace::TRACEPARENT).and_then(|v| v.to_str().ok());
    let traceparent = traceparent.filter(|v| saga_process::trace::is_valid(v));
    let trace_id = traceparent.and_then(saga_process::trace::trace_id).unwrap_or("");
    let span = tracing::info_span!("grpc", method = request.uri().path(), trace_id);
    if let Some(parent) = traceparent {
        saga_process::telemetry::set_parent(&span, parent);
    }
    span
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot serve the probes' health on {listen}: {source}")]
    HealthListen { listen: SocketAddr, source: std::io::Error },
}

/// A backend service after start-up: its configuration, its database pools
/// (one for the saga's work, one for gRPC requests, so neither starves the
/// other), and the health its loops report to.
pub struct Booted {
    pub args: ServiceArgs,
    /// For the consumer, the outbox relay, the sweeper.
    pub pool: sqlx::PgPool,
    /// For gRPC request handlers.
    pub api_pool: sqlx::PgPool,
    pub health: Health,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot listen for gRPC on {listen}: {source}")]
    Listen { listen: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Metrics(#[from] saga_process::metrics::MetricsError),
    #[error("gRPC TLS: {0}")]
    Tls(#[from] saga_proto::tls::TlsError),
    #[error("Kafka credentials: {0}")]
    KafkaCredentials(String),
    #[error("GRPC_ALLOWED_CALLERS: {0}")]
    Callers(String),
    #[error(
        "refusing to serve plaintext gRPC on {listen}, which is not loopback: anyone who reaches it could call \
         the API. Give GRPC_TLS_CLIENT_CA, GRPC_TLS_CERT and GRPC_TLS_KEY for mutual TLS, or set \
         GRPC_ALLOW_PLAINTEXT=true where the network authenticates its traffic itself"
    )]
    Plaintext { listen: SocketAddr },
}

/// Parses the command line, installs JSON logging, takes the gRPC port,
/// connects to the service's database and applies the runtime's and then the
/// service's migrations.
///
/// The port is taken first: a port in use stops the service at once rather
/// than after its migrations, and with port 0 the address the system chose is
/// what `args.listen` then holds and the log line says (what a test harness
/// starting many services reads, instead of guessing a free port).
async fn boot(
    service: BackendService,
    migrator: &sqlx::migrate::Migrator,
    shutdown: &Shutdown,
) -> Result<(Booted, TcpIncoming, Transport), BootError> {
    let mut args = ServiceArgs::parse_for(service);
    saga_process::telemetry::init(saga_process::telemetry::LogFormat::Json, "info", service.name);
    saga_process::shutdown::exit_after(shutdown.clone(), Duration::from_secs(args.shutdown_grace_secs));
    let transport = Transport::from_args(&args)?;
    let credentials =
        crate::kafka::Credentials::from_settings(args.kafka_sasl_username.clone(), args.kafka_sasl_password.clone())
            .map_err(BootError::KafkaCredentials)?;
    crate::kafka::authenticate_as(credentials).map_err(BootError::KafkaCredentials)?;
    let listen_error = |source| BootError::Listen { listen: args.listen, source };
    // The settings `Server::serve` would give the connections it accepts.
    let listener =
        keepalive(TcpIncoming::bind(args.listen).map_err(listen_error)?.with_nodelay(Some(true)), args.tcp_keepalive());
    args.listen = listener.local_addr().map_err(listen_error)?;
    tracing::info!(listen = %args.listen, tls = transport.tls.is_some(), "gRPC server listening");
    saga_process::metrics::serve(args.metrics_listen.unwrap_or(saga_process::metrics::default_listen(args.listen)))?;
    let url = &args.database_url;
    let session = args.session_settings();
    let (work, api) = (args.database_max_connections, args.database_api_max_connections);
    let pool = crate::db::connect(url, work, crate::db::WORK_ACQUIRE_TIMEOUT, &session, DATABASE_WAIT).await?;
    crate::db::migrate(&pool, migrator).await?;
    let api_pool = crate::db::connect(url, api, crate::db::API_ACQUIRE_TIMEOUT, &session, DATABASE_WAIT).await?;
    tracing::info!(service = service.name, database = %crate::db::redact(&args.database_url), ?session,
        "database ready");
    let health = Health::new(Duration::from_millis(args.health_stuck_after_ms), shutdown.clone())
        .with_api_fail_after(Duration::from_millis(args.health_database_fail_after_ms))
        .with_wedged_after(Duration::from_millis(args.health_wedged_after_ms));
    // Readiness: the database the API uses answers.
    tokio::spawn(crate::health::check_database(
        api_pool.clone(),
        health.probe(crate::health::Component::Api),
        shutdown.clone(),
    ));
    tokio::spawn(crate::db::report_pools(
        [(PoolName::Work, pool.clone()), (PoolName::Api, api_pool.clone())],
        shutdown.clone(),
    ));
    tokio::spawn(crate::outbox::report_backlog(pool.clone(), shutdown.clone()));
    Ok((Booted { args, pool, api_pool, health }, listener, transport))
}

/// Work a service runs beside its consumer and API until shutdown (the
/// status owner's sweeper).
pub type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Work a service does once at start, after its database is migrated and
/// before it consumes or serves anything (the status owner's migrations).
/// An error stops the service.
pub type Startup = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What a service brings to the chassis.
pub struct Parts<H, A> {
    /// The saga handler its consumer feeds.
    pub handler: H,
    /// Adds its gRPC API to the server.
    pub api: A,
    /// Done in order before anything else starts.
    pub startup: Vec<Startup>,
    /// Further work until shutdown, awaited before the relay stops, so that
    /// what it wrote last is still published.
    pub background: Vec<Background>,
}

impl<H, A: FnOnce(ApiRouter) -> ApiRouter> Parts<H, A> {
    /// A service's handler, and `api`, which adds its gRPC API to the server.
    pub fn new(handler: H, api: A) -> Self {
        Parts { handler, api, startup: Vec::new(), background: Vec::new() }
    }

    /// Adds work done once at start, before the consumer and the API start.
    pub fn with_startup(mut self, work: impl Future<Output = Result<(), String>> + Send + 'static) -> Self {
        self.startup.push(Box::pin(work));
        self
    }

    /// Adds work that runs beside the consumer and the API until shutdown.
    pub fn with_background(mut self, work: impl Future<Output = ()> + Send + 'static) -> Self {
        self.background.push(Box::pin(work));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("saga participant: {0}")]
    Participant(#[from] ParticipantError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("a background task panicked: {0}")]
    Background(#[from] tokio::task::JoinError),
    #[error("start-up work failed: {0}")]
    Startup(String),
    #[error(transparent)]
    Topology(#[from] crate::kafka::TopologyError),
    #[error("registering the writer schemas: {0}")]
    Schemas(#[from] crate::schema_registry::RegistryError),
    #[error("{0}; stopped so that a supervisor starts the service again")]
    LoopStopped(String),
}

/// Runs the backend service `service` (its generated identity) until SIGTERM
/// or Ctrl-C: boots it with `migrator` after the runtime's own migrations,
/// asks `parts` for its handler, API and background work, starts the relay
/// and the consumer of the inbound events `E`, and serves the API with
/// health checking and reflection over `descriptor_set`. On the way out the
/// background work finishes first, then the consumer commits and the relay
/// publishes what is left.
pub async fn run<E, H, A>(
    service: &'static ServiceIdentity<E>,
    migrator: &'static Migrator,
    descriptor_set: &'static [u8],
    parts: impl FnOnce(&Booted, &Shutdown) -> Parts<H, A>,
) -> Result<(), ServiceError>
where
    H: Send + Sync + 'static,
    E: Dispatch<H, Ctx = PgConnection>,
    A: FnOnce(ApiRouter) -> ApiRouter,
{
    let (trigger, shutdown) = Shutdown::on_signal();
    let (booted, listener, transport) =
        boot(BackendService { name: service.name, ordinal: service.ordinal }, migrator, &shutdown).await?;
    // A loop that stopped (a panic) cannot be trusted to come back: stop the
    // whole service and exit non-zero, so that `up` or a supervisor restarts it.
    let watcher = tokio::spawn({
        let (health, trigger) = (booted.health.clone(), trigger.clone());
        async move {
            let reason = health.stopped().await;
            tracing::error!(%reason, "a loop of the service stopped; shutting down");
            trigger.trigger();
            reason
        }
    });
    let args = &booted.args;
    let schema_topic = TopicShape { name: service.schema_topic, partitions: 1 };
    let topics: Vec<TopicShape> = service.topics.iter().copied().chain([schema_topic]).collect();
    crate::kafka::check_topics(&args.kafka_brokers, &args.topic_prefix, &topics, KAFKA_WAIT).await?;
    // Before the relay publishes anything: a consumer built before these
    // versions existed finds them there.
    let schema_topic = format!("{}{}", args.topic_prefix, service.schema_topic);
    let client = crate::kafka::client(&args.kafka_brokers);
    let registered =
        schema_registry::register(client.clone(), &schema_topic, service.writes.iter().map(|history| history()))
            .await?;
    let schema_group = format!("{}{}", args.topic_prefix, service.schema_group);
    schema_registry::install(schema_registry::SchemaReader::new(client, &schema_topic, &schema_group)?);
    tracing::info!(registered, topic = %schema_topic, "writer schemas registered");
    let parts = parts(&booted, &shutdown);
    for work in parts.startup {
        work.await.map_err(ServiceError::Startup)?;
    }
    let participant = Participant::start(&booted, service, parts.handler, &shutdown)?;
    let background: Vec<_> = parts.background.into_iter().map(tokio::spawn).collect();
    let served =
        serve_grpc_until(listener, transport, shutdown.clone(), descriptor_set, booted.health.clone(), parts.api).await;
    // Whatever ended the server, stop the rest and let it finish.
    trigger.trigger();
    for task in background {
        task.await?;
    }
    participant.join().await?;
    booted.api_pool.close().await;
    booted.pool.close().await;
    saga_process::telemetry::shutdown();
    served?;
    if watcher.is_finished() {
        return Err(ServiceError::LoopStopped(watcher.await?));
    }
    watcher.abort();
    Ok(())
}
