//! Configuration: command-line flags with environment overrides; every
//! default points at the local development stack.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use saga_generated::topology::SERVICES;
use saga_process::local::{self, BackendService, CONSOLE_PORT_OFFSET, GATEWAY_PORT_OFFSET, PORT_BASE};

/// Admin account of the local stack only; a real deployment sets its own.
pub const LOCAL_ADMIN_EMAIL: &str = "admin@saga.local";
pub const LOCAL_ADMIN_PASSWORD: &str = "saga-admin-local";

/// The saga's API gateway (REST).
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", about)]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT_BASE + GATEWAY_PORT_OFFSET)))]
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served (`/metrics`). Default: the listen port plus 100.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Redis URL (sessions, rate limits).
    #[arg(long, env = "REDIS_URL", default_value_t = local::redis_url(), hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key the gateway writes, so gateways can share a Redis without sharing state.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "gateway:")]
    pub redis_key_prefix: String,
    /// gRPC URL of the order service.
    #[arg(long, env = "ORDER_GRPC_URL", default_value_t = grpc_url("order"))]
    pub order_grpc_url: String,
    /// gRPC URL of the product service.
    #[arg(long, env = "PRODUCT_GRPC_URL", default_value_t = grpc_url("product"))]
    pub product_grpc_url: String,
    /// gRPC URL of the user service.
    #[arg(long, env = "USER_GRPC_URL", default_value_t = grpc_url("user"))]
    pub user_grpc_url: String,
    /// The certificate authority (PEM) the services' certificates must chain
    /// to. With GRPC_TLS_CERT and GRPC_TLS_KEY, the gateway calls `https://`
    /// URLs over mutual TLS and accepts only a server whose certificate is
    /// issued for the service it calls.
    #[arg(long, env = "GRPC_TLS_CA")]
    pub grpc_tls_ca: Option<PathBuf>,
    /// The gateway's own certificate (PEM), which the services require.
    #[arg(long, env = "GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of GRPC_TLS_CERT.
    #[arg(long, env = "GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// Deadline of every gRPC call, in milliseconds.
    #[arg(long, env = "GRPC_TIMEOUT_MS", default_value_t = 5000)]
    pub grpc_timeout_ms: u64,
    /// Session lifetime in seconds; every authenticated request extends it again (sliding expiry).
    #[arg(long, env = "SESSION_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl_secs: u64,
    /// Absolute session lifetime in seconds: however it is used, a token dies this long after login.
    #[arg(long, env = "SESSION_MAX_SECS", default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_max_secs: u64,
    /// How often an open event stream checks that its session still lives
    /// (it ends once the session is revoked or expired), in milliseconds.
    #[arg(long, env = "SESSION_CHECK_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    pub session_check_ms: u64,
    /// Email of the admin account ensured at start-up.
    #[arg(long, env = "ADMIN_EMAIL", default_value = LOCAL_ADMIN_EMAIL)]
    pub admin_email: String,
    /// Password of that admin account. The default is for a local stack only:
    /// the gateway refuses it, and the deployment manifests' placeholder, on
    /// an address other than loopback unless `--allow-default-admin`.
    #[arg(long, env = "ADMIN_PASSWORD", default_value = LOCAL_ADMIN_PASSWORD, hide_default_value = true,
          hide_env_values = true)]
    pub admin_password: String,
    /// Development only: accept the built-in admin password on any address.
    #[arg(long, env = "ALLOW_DEFAULT_ADMIN")]
    pub allow_default_admin: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub body_limit_bytes: usize,
    /// Largest accepted total of request headers (names and values), in bytes; beyond it, 431.
    #[arg(long, env = "HEADER_LIMIT_BYTES", default_value_t = 16 * 1024)]
    pub header_limit_bytes: usize,
    /// Origins allowed by CORS, comma-separated; `*` allows any; empty disables CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
    /// Failed logins allowed per account from one client IP within the window.
    #[arg(long, env = "LOGIN_LIMIT_PER_ACCOUNT_IP", default_value_t = 5)]
    pub login_limit_per_account_ip: u64,
    /// Failed logins allowed per client IP (an IPv6 client: its /64), over all accounts, within the window.
    #[arg(long, env = "LOGIN_LIMIT_PER_IP", default_value_t = 20)]
    pub login_limit_per_ip: u64,
    /// Failed logins allowed per account (email), over all client IPs, within the window:
    /// above the per-account-and-IP limit, so that one attacker cannot lock the owner out.
    #[arg(long, env = "LOGIN_LIMIT_PER_ACCOUNT", default_value_t = 50)]
    pub login_limit_per_account: u64,
    /// Successful logins allowed per account (email) within the window: a correct password
    /// still costs a password check, so a few accounts logging in over and over cannot keep
    /// the user service's password queue full for everyone else.
    #[arg(long, env = "LOGIN_SUCCESS_LIMIT_PER_ACCOUNT", default_value_t = 20)]
    pub login_success_limit_per_account: u64,
    /// Successful logins allowed per client IP (an IPv6 client: its /64) within the window.
    #[arg(long, env = "LOGIN_SUCCESS_LIMIT_PER_IP", default_value_t = 200)]
    pub login_success_limit_per_ip: u64,
    /// Sessions one user may hold at once; a login past it ends that user's oldest session.
    #[arg(long, env = "SESSIONS_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub sessions_per_user: u64,
    /// Length of the login rate-limit window, in seconds.
    #[arg(long, env = "LOGIN_LIMIT_WINDOW_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub login_limit_window_secs: u64,
    /// Registrations allowed per client IP (an IPv6 client: its /64) within the window.
    #[arg(long, env = "REGISTER_LIMIT_PER_IP", default_value_t = 10)]
    pub register_limit_per_ip: u64,
    /// Registrations allowed in total, from all clients, within the window.
    #[arg(long, env = "REGISTER_LIMIT_TOTAL", default_value_t = 1000)]
    pub register_limit_total: u64,
    /// Length of the registration rate-limit window, in seconds.
    #[arg(long, env = "REGISTER_LIMIT_WINDOW_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub register_limit_window_secs: u64,
    /// How often an order's event stream reads its order while the order
    /// service's change feed is down (otherwise changes are pushed), in milliseconds.
    #[arg(long, env = "SSE_POLL_MS", default_value_t = 250)]
    pub sse_poll_ms: u64,
    /// How often an order's event stream reads its order while the change
    /// feed is up, in case a change was never announced, in milliseconds.
    #[arg(long, env = "SSE_RECHECK_MS", default_value_t = 5000)]
    pub sse_recheck_ms: u64,
    /// Admission control: most sagas at risk of missing their deadline for which
    /// `POST /orders` still accepts new orders (503 with Retry-After above it); 0 turns it off.
    #[arg(long, env = "ADMISSION_MAX_AT_RISK", default_value_t = 100)]
    pub admission_max_at_risk: u64,
    /// A saga is at risk once it has spent this share of its current status's
    /// timeout without moving on, in percent.
    #[arg(long, env = "ADMISSION_AT_RISK_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub admission_at_risk_percent: u32,
    /// How often the gateway measures the saga backlog, in milliseconds.
    #[arg(long, env = "ADMISSION_CHECK_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub admission_check_ms: u64,
    /// The mean `Retry-After` of a refused order, in seconds; each refusal
    /// says a time spread ±50 % around it.
    #[arg(long, env = "ADMISSION_RETRY_AFTER_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub admission_retry_after_secs: u64,
    /// Longest life of one event stream, in seconds (a client reconnects with Last-Event-ID).
    #[arg(long, env = "SSE_MAX_SECS", default_value_t = 600)]
    pub sse_max_secs: u64,
    /// On SIGTERM the gateway stops accepting, ends its event streams with a `reconnect`
    /// event, drains its requests, and exits; past this many seconds it exits all the same.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = saga_process::shutdown::DEFAULT_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// URL of the operator console, which the gateway forwards `/console` and admins'
    /// `/api/v1/admin/console/*` requests to. With GRPC_TLS_CA, GRPC_TLS_CERT and
    /// GRPC_TLS_KEY it must be `https://`: the gateway presents the same certificate to the
    /// console and accepts only one issued for `console`.
    #[arg(long, env = "CONSOLE_URL", default_value_t = format!("http://{}:{}", local::HOST, PORT_BASE + CONSOLE_PORT_OFFSET))]
    pub console_url: String,
}

/// Where `service` listens on the local stack; empty when the spec has no such service.
fn grpc_url(service: &str) -> String {
    BackendService::named(SERVICES, service).map(|s| s.default_grpc_url()).unwrap_or_default()
}

impl Config {
    /// The gateway's mutual-TLS credentials, when configured (all three files, or none).
    pub fn grpc_tls(&self) -> Result<Option<saga_proto::tls::TlsFiles>, saga_proto::tls::TlsError> {
        saga_proto::tls::TlsFiles::from_settings(
            "GRPC_TLS_CA, GRPC_TLS_CERT, GRPC_TLS_KEY",
            self.grpc_tls_ca.clone(),
            self.grpc_tls_cert.clone(),
            self.grpc_tls_key.clone(),
        )
    }

    pub fn grpc_timeout(&self) -> Duration {
        Duration::from_millis(self.grpc_timeout_ms)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub fn session_max(&self) -> Duration {
        Duration::from_secs(self.session_max_secs)
    }
}
