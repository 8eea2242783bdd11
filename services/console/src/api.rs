//! The console's HTTP API, under `/console/api`. The gateway forwards admins here from
//! `/api/v1/admin/console/*` and names them in [`ADMIN_HEADER`]; everything here assumes
//! that check was made, which is why nothing reaches a route unless [`crate::callers`]
//! saw the gateway's certificate. Every request is counted by route, method and status,
//! and every letter a redrive was asked for by its outcome.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures::Stream;
use saga_operator::Sources;
use saga_operator::overview::{self, Databases};
use saga_operator::trace::{self, TraceError};
use saga_process::shutdown::{Shutdown, end_when};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::callers::Callers;
use crate::config::Config;
use crate::redrive::{self, RedriveRequest};

/// The header the gateway names the authenticated admin in.
pub const ADMIN_HEADER: &str = "x-saga-admin";

#[derive(Clone)]
pub struct State {
    pub sources: Arc<Sources>,
    pub databases: Databases,
    /// The console's own database: the redrive audit.
    pub audit: PgPool,
    pub producer: Arc<saga_operator::dlq::Producer>,
    pub overview_every: Duration,
    pub saga_every: Duration,
    /// Requested on SIGTERM: live streams end with a `reconnect` event.
    pub shutdown: Shutdown,
}

impl State {
    pub fn new(config: &Config, audit: PgPool, shutdown: Shutdown) -> anyhow::Result<State> {
        let sources = config.sources();
        Ok(State {
            shutdown,
            databases: Databases::lazy(&sources)?,
            producer: Arc::new(saga_operator::dlq::producer(&sources.brokers)?),
            sources: Arc::new(sources),
            audit,
            overview_every: Duration::from_millis(config.overview_every_ms),
            saga_every: Duration::from_millis(config.saga_every_ms),
        })
    }
}

/// Every route, behind the caller check, behind the request metrics (so refusals count too).
pub fn router(state: State, callers: Callers) -> Router {
    // Every outcome from the start, so a scrape shows a 0 rather than nothing.
    count_redrives(&redrive::Outcome { redriven: Vec::new(), already: Vec::new(), refused: Vec::new() });
    Router::new()
        .route(crate::callers::HEALTH, get(healthz))
        .route("/console", get(crate::page::index))
        .route("/console/assets/{name}", get(crate::page::asset))
        .route("/console/api/overview", get(overview))
        .route("/console/api/overview/stream", get(overview_stream))
        .route("/console/api/sagas/{id}", get(saga))
        .route("/console/api/sagas/{id}/stream", get(saga_stream))
        .route("/console/api/dlq", get(dead_letters))
        .route("/console/api/dlq/redrive", post(redrive_messages))
        .route("/console/api/dlq/audit", get(audit))
        .with_state(state)
        .layer(middleware::from_fn_with_state(callers, crate::callers::check))
        .layer(middleware::from_fn(saga_process::http::request_metrics))
}

/// Counts the letters of a redrive's answer by outcome in `console_redrives_total{outcome}`:
/// `redriven`, `already` (redriven before) and `refused` (forged or unverifiable).
fn count_redrives(outcome: &redrive::Outcome) {
    let counts =
        [("redriven", outcome.redriven.len()), ("already", outcome.already.len()), ("refused", outcome.refused.len())];
    for (name, letters) in counts {
        metrics::counter!(saga_process::metrics::CONSOLE_REDRIVES, "outcome" => name).increment(letters as u64);
    }
}

/// Liveness: the console answers (any caller the authority certified).
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0:?} is not an order id: an order id is a UUID, like 0190f5c2-8d4e-7a3b-9c1d-2e3f4a5b6c7d")]
    MalformedId(String),
    #[error("no order {0}")]
    UnknownOrder(Uuid),
    #[error("{0}")]
    BadRequest(String),
    #[error("no admin named in {ADMIN_HEADER}: the console answers through the gateway only")]
    NoAdmin,
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

impl ConsoleError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ConsoleError::MalformedId(_) | ConsoleError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ConsoleError::UnknownOrder(_) => (StatusCode::NOT_FOUND, "not_found"),
            ConsoleError::NoAdmin => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ConsoleError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody { code: self.status().1, message: self.to_string() }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, _) = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        }
        (status, Json(self.body())).into_response()
    }
}

impl From<TraceError> for ConsoleError {
    fn from(error: TraceError) -> ConsoleError {
        match error {
            TraceError::UnknownOrder(id) => ConsoleError::UnknownOrder(id),
            other => ConsoleError::Unavailable(other.to_string()),
        }
    }
}

fn order_id(text: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(text.trim()).map_err(|_| ConsoleError::MalformedId(text.to_owned()))
}

async fn overview(Extract(state): Extract<State>) -> Json<overview::Overview> {
    Json(overview::read(&state.sources, &state.databases).await)
}

/// The last event of a stream the console ends because it is stopping.
fn reconnect_event() -> Event {
    saga_process::http::reconnect_event("the console is stopping: open the stream again")
}

/// `stream` until the console stops, then [`reconnect_event`].
fn until_stopping(
    stopping: Shutdown,
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    end_when(stream, async move { stopping.wait().await }, Ok(reconnect_event()))
}

/// Server-sent `overview` events: one at once, then one every `OVERVIEW_EVERY_MS`.
async fn overview_stream(Extract(state): Extract<State>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stopping = state.shutdown.clone();
    let stream = futures::stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(state.overview_every).await;
        }
        let now = overview::read(&state.sources, &state.databases).await;
        let event = Event::default().event("overview").json_data(&now).unwrap_or_else(|_| Event::default());
        Some((Ok(event), (state, false)))
    });
    Sse::new(until_stopping(stopping, stream)).keep_alive(KeepAlive::default())
}

async fn saga(Extract(state): Extract<State>, Path(id): Path<String>) -> Result<Json<trace::Trace>, ConsoleError> {
    let id = order_id(&id)?;
    Ok(Json(trace::collect(&state.sources, id).await?))
}

/// Server-sent `trace` events for one saga, every `SAGA_EVERY_MS` while it runs; the last
/// one once it is terminal, then the stream ends. An unknown or malformed id is answered
/// before the stream starts.
async fn saga_stream(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    let id = order_id(&id)?;
    let first = trace::collect(&state.sources, id).await?;
    let stopping = state.shutdown.clone();
    let stream = futures::stream::unfold((state, Some(first), false), move |(state, ready, done)| async move {
        if done {
            return None;
        }
        let current = match ready {
            Some(trace) => Ok(trace),
            None => {
                tokio::time::sleep(state.saga_every).await;
                trace::collect(&state.sources, id).await
            }
        };
        Some(match current {
            Ok(trace) => {
                let ended = trace.deadline.is_none() && trace.next.is_empty();
                let event = Event::default().event("trace").json_data(&trace).unwrap_or_else(|_| Event::default());
                (Ok(event), (state, None, ended))
            }
            // A database away for a moment: say so, and keep following.
            Err(error) => {
                let body = ConsoleError::from(error).body();
                let event = Event::default().event("error").json_data(&body).unwrap_or_else(|_| Event::default());
                (Ok(event), (state, None, false))
            }
        })
    });
    Ok(Sse::new(until_stopping(stopping, stream)).keep_alive(KeepAlive::default()))
}

async fn dead_letters(Extract(state): Extract<State>) -> Result<Json<redrive::Listing>, ConsoleError> {
    Ok(Json(redrive::list(&state).await?))
}

async fn redrive_messages(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<redrive::Outcome>, ConsoleError> {
    let admin = headers
        .get(ADMIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(ConsoleError::NoAdmin)?
        .to_owned();
    let request: RedriveRequest = serde_json::from_slice(&body)
        .map_err(|e| ConsoleError::BadRequest(format!("the request body is not a redrive request: {e}")))?;
    let outcome = redrive::redrive(&state, &admin, request).await?;
    count_redrives(&outcome);
    Ok(Json(outcome))
}

/// Which redrives to list: one saga's, or the newest of all.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    saga_key: Option<String>,
}

async fn audit(
    Extract(state): Extract<State>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<redrive::AuditRow>>, ConsoleError> {
    Ok(Json(redrive::audit(&state.audit, query.saga_key.as_deref()).await?))
}
