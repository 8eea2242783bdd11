//! Configuration: flags with environment overrides; every default points at the local
//! development stack.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use saga_process::local::{self, BackendService, CONSOLE_DATABASE, CONSOLE_PORT_OFFSET, PORT_BASE};

/// The operator console: a live web view of the saga platform. It reads every service's
/// database (with a read-only role) and the Kafka topics, and keeps its own redrive audit.
/// It trusts the gateway to have authenticated an admin, and answers only the gateway,
/// proven by its client certificate over mutual TLS.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "console",
    about,
    after_help = "Each service's database is read from <SERVICE>_DATABASE_URL (ORDER_DATABASE_URL, ...), \
                  by default the console's read-only role on the local stack.\n\n\
                  Without TLS_CLIENT_CA, TLS_CERT and TLS_KEY the console serves plain HTTP and refuses \
                  its API to everyone (403): only /healthz, the page and its assets answer."
)]
pub struct Config {
    /// Listen address: HTTPS with mutual TLS given the TLS files below, plain HTTP without.
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT_BASE + CONSOLE_PORT_OFFSET)))]
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served (`/metrics`). Default: the listen port plus 100.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The certificate authority (PEM) a caller's client certificate must chain to. With
    /// TLS_CERT and TLS_KEY, the console serves HTTPS with mutual TLS only: no plaintext,
    /// no caller without a certificate.
    #[arg(long, env = "TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// The certificate (PEM) the console presents, issued for its name (`console`).
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of TLS_CERT.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The identities (the names their certificates are issued for) the console answers
    /// over mutual TLS, and believes the admin header of; any certificate of the authority
    /// may ask `/healthz`.
    #[arg(long, env = "ALLOWED_CALLERS", value_delimiter = ',', default_value = saga_proto::tls::GATEWAY)]
    pub allowed_callers: Vec<String>,
    /// The console's own database (the redrive audit).
    #[arg(long, env = "DATABASE_URL", default_value_t = local::console_database_url(CONSOLE_DATABASE), hide_default_value = true,
          hide_env_values = true)]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value_t = local::kafka_brokers())]
    pub kafka_brokers: String,
    /// The console's Kafka principal (SASL/SCRAM), with KAFKA_SASL_PASSWORD:
    /// it reads the saga's topics and dead letters and redrives into the topics.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// The password of KAFKA_SASL_USERNAME.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// Topic prefix of the services (their TOPIC_PREFIX).
    #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// How often the live overview is sent, in milliseconds.
    #[arg(long, env = "OVERVIEW_EVERY_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(200..))]
    pub overview_every_ms: u64,
    /// On SIGTERM the console stops accepting, ends its live streams with a `reconnect`
    /// event, drains its requests, and exits; past this many seconds it exits all the same.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = saga_process::shutdown::DEFAULT_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// How often a followed saga is read again, in milliseconds.
    #[arg(long, env = "SAGA_EVERY_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    pub saga_every_ms: u64,
}

impl Config {
    /// The console's mutual-TLS files, when configured (all three, or none).
    pub fn tls(&self) -> Result<Option<saga_proto::tls::TlsFiles>, saga_proto::tls::TlsError> {
        saga_proto::tls::TlsFiles::from_settings(
            "TLS_CLIENT_CA, TLS_CERT, TLS_KEY",
            self.tls_client_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
        )
    }

    /// Where the console reads the platform: `<SERVICE>_DATABASE_URL` for each service of the
    /// spec, or the local stack's.
    pub fn sources(&self) -> saga_operator::Sources {
        let url_of = |service: BackendService| {
            std::env::var(format!("{}_DATABASE_URL", service.name.to_uppercase()))
                .unwrap_or_else(|_| local::console_database_url(&service.database()))
        };
        saga_operator::Sources::of(url_of, self.kafka_brokers.clone(), self.topic_prefix.clone())
    }
}
