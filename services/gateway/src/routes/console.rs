//! The operator console. The console service draws the page and answers its API; the
//! gateway is its only door: it serves the page (which holds no data) to anyone, lets only
//! admins through to the API, and names the admin to the console in `x-saga-admin`, which
//! the console audits redrives under. The console believes that header only from the
//! gateway's certificate (mutual TLS, `app::console_client`). Streams are passed through as
//! they come.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, Validate, parse_id};
use crate::session::Admin;
use crate::state::AppState;

/// The header the console reads the admin from.
const ADMIN_HEADER: &str = "x-saga-admin";

/// Sends the request on to the console at `path` (segments, each escaped) and passes its
/// answer back, streaming. The console away is a 503 like any backend away.
async fn forward(
    state: &AppState,
    method: Method,
    segments: &[&str],
    admin: Option<&Admin>,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let mut url = state.console_url.clone();
    url.path_segments_mut()
        .map_err(|()| ApiError::Internal("CONSOLE_URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    let mut request = state.console.request(method, url);
    if let Some(Admin(auth)) = admin {
        request = request.header(ADMIN_HEADER, auth.session.user_id.to_string());
    }
    if let Some(body) = body {
        request = request.header(header::CONTENT_TYPE, "application/json").body(body);
    }
    let answer = request.send().await.map_err(|e| ApiError::Unavailable(format!("the console: {e}")))?;
    let mut response =
        Response::builder().status(StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY));
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(value) =
            answer.headers().get(name.as_str()).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            response = response.header(name, value);
        }
    }
    // A stream lives no longer than the gateway's own (`SSE_MAX_SECS`); the page reconnects.
    let is_stream =
        answer.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let body = if is_stream {
        let until = tokio::time::sleep(Duration::from_secs(state.config.sse_max_secs));
        let stream = answer.bytes_stream().take_until(until);
        match admin {
            // Ends once the admin's session does, telling the page why.
            Some(Admin(auth)) => {
                let error = ApiError::Unauthorized(crate::session::SESSION_ENDED).body();
                let farewell = format!("event: error\ndata: {}\n\n", serde_json::to_string(&error).unwrap_or_default());
                let ended = state.sessions.ended(auth);
                Body::from_stream(crate::session::until_session_ends(stream, ended, Ok(Bytes::from(farewell))))
            }
            None => Body::from_stream(stream),
        }
    } else {
        Body::from_stream(answer.bytes_stream())
    };
    response.body(body).map_err(|e| ApiError::Internal(format!("console response: {e}")))
}

/// `GET /console`: the page. It holds no data; it asks for a login and reads the API below.
pub async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &["console"], None, None).await
}

/// `GET /console/assets/{name}`: the page's script, style sheet and the spec's status diagram.
pub async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &["console", "assets", &name], None, None).await
}

/// The platform at a glance: sagas per status (every state of the spec's status machine),
/// terminal outcomes per minute, p50/p99 saga duration, consumer lag per group and topic,
/// outbox backlog per service and the messages in each dead-letter topic. Parts that cannot
/// be read now are named in `unavailable`.
#[utoipa::path(get, path = "/api/v1/admin/console/overview", tag = "console",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The overview", content_type = "application/json", body = serde_json::Value),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "The console is unavailable", body = ErrorBody),
    ))]
pub async fn overview(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &["console", "api", "overview"], Some(&admin), None).await
}

/// The overview, live: a server-sent `overview` event at once and then every few seconds
/// (the console's `OVERVIEW_EVERY_MS`), with the same document as `GET .../overview`.
#[utoipa::path(get, path = "/api/v1/admin/console/overview/stream", tag = "console",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-sent `overview` events", content_type = "text/event-stream", body = ConsoleStreamEvent),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "The console is unavailable", body = ErrorBody),
    ))]
pub async fn overview_stream(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &["console", "api", "overview", "stream"], Some(&admin), None).await
}

/// One saga across the services: its status, deadline, trace id, what its status machine
/// allows next (the timeout with the time left), and its timeline: every status change,
/// event published (outbox) and consumed (inbox, with topic, partition and offset), parked
/// and dead-lettered message.
#[utoipa::path(get, path = "/api/v1/admin/console/sagas/{id}", tag = "console",
    params(("id" = uuid::Uuid, Path, description = "Order id (the saga key)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The saga's trace", content_type = "application/json", body = serde_json::Value),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 503, description = "The console or a database it reads is unavailable", body = ErrorBody),
    ))]
pub async fn saga(State(state): State<AppState>, admin: Admin, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id("id", &id)?.to_string();
    forward(&state, Method::GET, &["console", "api", "sagas", &id], Some(&admin), None).await
}

/// One saga, live: a server-sent `trace` event (the document of `GET .../sagas/{id}`) every
/// second while it runs, the last once it ended; `error` events while a database is away.
#[utoipa::path(get, path = "/api/v1/admin/console/sagas/{id}/stream", tag = "console",
    params(("id" = uuid::Uuid, Path, description = "Order id (the saga key)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-sent `trace` events, `error` while a database is away", content_type = "text/event-stream", body = ConsoleStreamEvent),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 503, description = "The console or a database it reads is unavailable", body = ErrorBody),
    ))]
pub async fn saga_stream(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id("id", &id)?.to_string();
    forward(&state, Method::GET, &["console", "api", "sagas", &id, "stream"], Some(&admin), None).await
}

/// One server-sent event of the console's streams, as a client's SSE parser sees it.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes the stream in the OpenAPI document; the console writes the events")]
pub struct ConsoleStreamEvent {
    /// `overview` (data: the overview document), `trace` (data: the saga's trace) or
    /// `error` (data: an `ErrorBody`; the stream goes on).
    pub event: ConsoleStreamEventKind,
    /// The event's JSON document.
    pub data: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "describes the stream in the OpenAPI document")]
pub enum ConsoleStreamEventKind {
    Overview,
    Trace,
    Error,
}

/// The dead letters of every DLQ topic (the newest 200 each), with every header and, for
/// those redriven, who redrove them and when.
#[utoipa::path(get, path = "/api/v1/admin/console/dlq", tag = "console",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Dead letters per topic", content_type = "application/json", body = serde_json::Value),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "The console or Kafka is unavailable", body = ErrorBody),
    ))]
pub async fn dead_letters(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &["console", "api", "dlq"], Some(&admin), None).await
}

/// One dead letter, by its place in its DLQ topic.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterRef {
    /// The DLQ topic, e.g. `order-events.dlq`.
    pub topic: String,
    #[schema(minimum = 0)]
    pub partition: i32,
    #[schema(minimum = 0)]
    pub offset: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    /// Must be `true`: a redrive puts messages back where the services handle them again.
    pub confirm: bool,
    /// The dead letters to redrive; or leave it out and set `all`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<DeadLetterRef>,
    /// Redrive every dead letter not redriven yet.
    #[serde(default)]
    pub all: bool,
}

impl Validate for Redrive {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if !self.confirm {
            fields.push(FieldError::new("confirm", "must be true: a redrive sends the messages to the services again"));
        }
        if self.all != self.messages.is_empty() {
            fields.push(FieldError::new("messages", "give either messages or all: true"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.partition < 0 || m.offset < 0 {
                fields.push(FieldError::new(format!("messages[{i}]"), "partition and offset are not negative"));
            }
        }
        fields
    }
}

/// Puts dead letters back on the topic they came from, each once: asking again (or two
/// admins at once) redrives nothing twice. Every redrive is audited with the admin and the
/// time (`GET .../dlq/audit`).
#[utoipa::path(post, path = "/api/v1/admin/console/dlq/redrive", tag = "console", request_body = Redrive,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`redriven`: sent now; `already`: redriven before", content_type = "application/json", body = serde_json::Value),
        (status = 400, description = "Invalid request, unknown DLQ topic or no such message", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "The console or Kafka is unavailable", body = ErrorBody),
    ))]
pub async fn redrive(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<Redrive>,
) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(format!("redrive request: {e}")))?;
    forward(&state, Method::POST, &["console", "api", "dlq", "redrive"], Some(&admin), Some(body.into())).await
}

/// Who redrove which dead letter, and when; the newest 200.
#[utoipa::path(get, path = "/api/v1/admin/console/dlq/audit", tag = "console",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The redrive audit, newest first", content_type = "application/json", body = serde_json::Value),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "The console is unavailable", body = ErrorBody),
    ))]
pub async fn audit(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    forward(&state, Method::GET, &["console", "api", "dlq", "audit"], Some(&admin), None).await
}
