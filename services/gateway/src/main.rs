//! The API gateway: the one door clients use.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use saga_runtime::defaults::{self, BackendService, GATEWAY_PORT_OFFSET, HOST, PORT_BASE};
use saga_runtime::telemetry::{self, LogFormat};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The saga's API gateway (REST).
#[derive(Debug, Parser)]
#[command(name = "gateway", about)]
struct Args {
    /// HTTP listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT_BASE + GATEWAY_PORT_OFFSET)))]
    listen: SocketAddr,
    /// Redis URL (sessions, rate limits).
    #[arg(long, env = "REDIS_URL", default_value_t = defaults::redis_url())]
    redis_url: String,
    /// gRPC URL of the order service.
    #[arg(long, env = "ORDER_GRPC_URL", default_value_t = grpc_url("order"))]
    order_grpc_url: String,
    /// gRPC URL of the product service.
    #[arg(long, env = "PRODUCT_GRPC_URL", default_value_t = grpc_url("product"))]
    product_grpc_url: String,
    /// gRPC URL of the user service.
    #[arg(long, env = "USER_GRPC_URL", default_value_t = grpc_url("user"))]
    user_grpc_url: String,
}

fn grpc_url(service: &str) -> String {
    let port = BackendService::named(service).map_or(0, |s| PORT_BASE + s.port_offset);
    format!("http://{HOST}:{port}")
}

/// How long a readiness probe waits for one dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AppState {
    redis: redis::Client,
    backends: Vec<(&'static str, tonic::transport::Channel)>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(LogFormat::Json, "info");
    let redis = redis::Client::open(args.redis_url.as_str()).context("invalid REDIS_URL")?;
    let mut backends = Vec::new();
    for (name, url) in
        [("order", &args.order_grpc_url), ("product", &args.product_grpc_url), ("user", &args.user_grpc_url)]
    {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid gRPC URL for {name}: {url}"))?;
        backends.push((name, endpoint.connect_timeout(PROBE_TIMEOUT).timeout(PROBE_TIMEOUT).connect_lazy()));
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { redis, backends });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "gateway listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(saga_runtime::shutdown::signal())
        .await
        .context("HTTP server failed")?;
    Ok(())
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: Redis and every backend service answer.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let redis_ok = tokio::time::timeout(PROBE_TIMEOUT, ping_redis(&state.redis)).await.is_ok_and(|r| r.is_ok());
    ready &= redis_ok;
    checks.insert("redis".into(), json!(if redis_ok { "ok" } else { "unreachable" }));
    for (name, channel) in &state.backends {
        let ok = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await.is_ok();
        ready &= ok;
        checks.insert((*name).into(), json!(if ok { "ok" } else { "unreachable" }));
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks })))
}

async fn ping_redis(client: &redis::Client) -> redis::RedisResult<()> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ())
}
