//! Liveness and readiness.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::state::AppState;

/// How long a readiness probe waits for one dependency.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: Redis answers, every backend service has an instance that says
/// SERVING (which it does only while its consumer, relay and sweeper work),
/// and the admin account exists with the configured password and the admin
/// role (else the reason). A backend that is not serving is named with
/// the component that is not; with several instances each one's word is
/// listed too.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let redis_ok = tokio::time::timeout(PROBE_TIMEOUT, ping_redis(&state.redis)).await.is_ok_and(|r| r.is_ok());
    ready &= redis_ok;
    checks.insert("redis".into(), json!(if redis_ok { "ok" } else { "unreachable" }));
    for instances in &state.backends.instances {
        let (check, each) = instances.check().await;
        ready &= check == "ok";
        checks.insert(instances.service.into(), json!(check));
        if each.len() > 1 {
            let each: serde_json::Map<String, serde_json::Value> =
                each.into_iter().map(|(url, check)| (url, json!(check))).collect();
            checks.insert(format!("{} instances", instances.service), json!(each));
        }
    }
    let admin = state.admin_account.check();
    ready &= admin == "ok";
    checks.insert("admin_account".into(), json!(admin));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks })))
}

/// The components a backend reports on its own (`saga_runtime::health`).
const COMPONENTS: [&str; 3] = ["saga.consumer", "saga.relay", "saga.sweeper"];

/// `ok`, `unreachable`, or `not serving: <components>`.
pub async fn backend_check(channel: &tonic::transport::Channel) -> String {
    let client = HealthClient::new(channel.clone());
    match status_of(&client, "").await {
        Some(ServingStatus::Serving) => return "ok".to_owned(),
        None => return "unreachable".to_owned(),
        Some(_) => {}
    }
    let mut failing = Vec::new();
    for component in COMPONENTS {
        // A component the backend does not have (no sweeper) is NOT_FOUND: not failing.
        if matches!(status_of(&client, component).await, Some(status) if status != ServingStatus::Serving) {
            failing.push(component);
        }
    }
    format!("not serving: {}", if failing.is_empty() { "unknown".to_owned() } else { failing.join(", ") })
}

async fn status_of(client: &HealthClient<tonic::transport::Channel>, service: &str) -> Option<ServingStatus> {
    let mut request = tonic::Request::new(HealthCheckRequest { service: service.to_owned() });
    request.set_timeout(PROBE_TIMEOUT);
    let reply = client.clone().check(request).await.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

async fn ping_redis(client: &redis::Client) -> redis::RedisResult<()> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ())
}
