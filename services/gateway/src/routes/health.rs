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

/// Readiness: whether this gateway can serve its own API. It depends on the
/// gateway itself (it answers this) and on Redis (every session and rate
/// limit is there), and on its admin account not being in conflict with its
/// configuration (`checks.admin_account`: an account under `ADMIN_EMAIL` with
/// another password or without the admin role; a fact of this gateway's own
/// configuration, the same in every replica, so a rollout that brings it stops
/// at its first pod while the others serve). An admin account not yet ensured
/// (`pending`: the user service has not answered yet) does not count: that is
/// the user service's state, not the gateway's.
///
/// A backend's health is not the gateway's: a backend that cannot serve is
/// taken out of the balancing (or, with no instance serving, its requests
/// are answered 503), and the rest of the API goes on. `backends` lists what
/// each service's instances say, for information: `ok`, `ok; pipeline stuck:
/// <components>` (its API serves, its saga work does not flow), `not serving:
/// saga.api` (its API cannot serve: its database is away) or `unreachable`;
/// with several instances each one's word is listed too.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut checks = serde_json::Map::new();
    let redis_ok = tokio::time::timeout(PROBE_TIMEOUT, ping_redis(&state.redis)).await.is_ok_and(|r| r.is_ok());
    checks.insert("redis".into(), json!(if redis_ok { "ok" } else { "unreachable" }));
    let admin = state.admin_account.check();
    let admin_ok = admin == "ok" || admin == "pending";
    checks.insert("admin_account".into(), json!(admin));
    let mut backends = serde_json::Map::new();
    for instances in &state.backends.instances {
        let (check, each) = instances.check();
        backends.insert(instances.service.into(), json!(check));
        if each.len() > 1 {
            let each: serde_json::Map<String, serde_json::Value> =
                each.into_iter().map(|(url, check)| (url, json!(check))).collect();
            backends.insert(format!("{} instances", instances.service), json!(each));
        }
    }
    let ready = redis_ok && admin_ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "status": if ready { "ready" } else { "not ready" }, "checks": checks, "backends": backends });
    (status, Json(body))
}

/// The loops of a backend's saga pipeline, each reported on its own
/// (`saga_runtime::health`).
const PIPELINE_COMPONENTS: [&str; 4] = ["saga.consumer", "saga.relay", "saga.sweeper", "saga.broker"];

/// What an instance that answered its health check says, as `/readyz` lists
/// it: `ok`; `ok; pipeline stuck: <components>` when its API serves
/// (`api_serves`: its overall status) but `saga.pipeline` does not; `not
/// serving: saga.api`, with the stuck pipeline after it if it is. The
/// pipeline's components are asked only when it is stuck.
pub async fn describe(client: &HealthClient<tonic::transport::Channel>, api_serves: bool) -> String {
    // A backend without a pipeline check (NOT_FOUND, an older version) has nothing to say of it.
    let stuck = matches!(status_of(client, "saga.pipeline").await, Some(status) if status != ServingStatus::Serving);
    let mut pipeline = Vec::new();
    if stuck {
        for component in PIPELINE_COMPONENTS {
            // A component the backend does not have (no sweeper) is NOT_FOUND: not failing.
            if matches!(status_of(client, component).await, Some(status) if status != ServingStatus::Serving) {
                pipeline.push(component);
            }
        }
        if pipeline.is_empty() {
            pipeline.push("unknown");
        }
    }
    let pipeline = (!pipeline.is_empty()).then(|| format!("pipeline stuck: {}", pipeline.join(", ")));
    match (api_serves, pipeline) {
        (true, None) => "ok".to_owned(),
        (true, Some(pipeline)) => format!("ok; {pipeline}"),
        (false, None) => "not serving: saga.api".to_owned(),
        (false, Some(pipeline)) => format!("not serving: saga.api; {pipeline}"),
    }
}

async fn status_of(client: &HealthClient<tonic::transport::Channel>, service: &str) -> Option<ServingStatus> {
    let mut request = tonic::Request::new(HealthCheckRequest { service: service.to_owned() });
    request.set_timeout(PROBE_TIMEOUT);
    let reply = tokio::time::timeout(PROBE_TIMEOUT, client.clone().check(request)).await.ok()?.ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

async fn ping_redis(client: &redis::Client) -> redis::RedisResult<()> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut connection).await.map(|_| ())
}
