//! Liveness and readiness.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::state::AppState;

/// How long a readiness probe waits for one dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: Redis and every backend service answer, and the admin account exists.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let redis_ok = tokio::time::timeout(PROBE_TIMEOUT, ping_redis(&state.redis)).await.is_ok_and(|r| r.is_ok());
    ready &= redis_ok;
    checks.insert("redis".into(), json!(if redis_ok { "ok" } else { "unreachable" }));
    for (name, channel) in &state.backends.channels {
        let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        request.set_timeout(PROBE_TIMEOUT);
        let ok = HealthClient::new(channel.clone()).check(request).await.is_ok();
        ready &= ok;
        checks.insert((*name).into(), json!(if ok { "ok" } else { "unreachable" }));
    }
    let admin_ok = state.admin_ready.load(Ordering::Acquire);
    ready &= admin_ok;
    checks.insert("admin_account".into(), json!(if admin_ok { "ok" } else { "pending" }));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks })))
}

async fn ping_redis(client: &redis::Client) -> redis::RedisResult<()> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ())
}
