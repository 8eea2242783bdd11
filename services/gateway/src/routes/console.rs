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
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, ApiQuery, Validate, parse_id};
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
    forward_with_query(state, method, segments, &[], admin, body).await
}

/// [`forward`] with query parameters (each escaped).
async fn forward_with_query(
    state: &AppState,
    method: Method,
    segments: &[&str],
    query: &[(&str, &str)],
    admin: Option<&Admin>,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let mut url = state.console_url.clone();
    url.path_segments_mut()
        .map_err(|()| ApiError::Internal("CONSOLE_URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
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
                let stream = saga_process::shutdown::end_when(stream, ended, Ok(Bytes::from(farewell)));
                Body::from_stream(end_when_stopping(state.shutdown.clone(), stream))
            }
            None => Body::from_stream(end_when_stopping(state.shutdown.clone(), stream)),
        }
    } else {
        Body::from_stream(answer.bytes_stream())
    };
    response.body(body).map_err(|e| ApiError::Internal(format!("console response: {e}")))
}

/// A passed-through stream until the gateway stops, then a `reconnect` event.
fn end_when_stopping<E: Send + 'static>(
    stopping: saga_process::shutdown::Shutdown,
    stream: impl futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> impl futures::Stream<Item = Result<Bytes, E>> + Send + 'static {
    saga_process::shutdown::end_when(stream, async move { stopping.wait().await }, Ok(super::reconnect_bytes()))
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
    /// `overview` (data: the overview document), `trace` (data: the saga's trace),
    /// `error` (data: an `ErrorBody`; the stream goes on) or `reconnect` (the gateway or
    /// the console is stopping: open the stream again; this one closes).
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
    Reconnect,
}

/// The dead letters of every DLQ topic (the newest 200 each), with every header, each one's
/// `provenance` (`genuine` when its source topic holds the same record where it says, else
/// `forged` or `unverifiable`, with why), the SHA-256 of its value, and, for those
/// redriven, who redrove them and when.
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
    /// Redrive every dead letter not redriven yet, oldest first per saga key.
    #[serde(default)]
    pub all: bool,
    /// Redrive one letter the console marked `forged` or `unverifiable`: its own bytes go
    /// out, audited with their digest and the reason. Give it alone.
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_one: Option<RedriveOverride>,
}

/// An admin's decision to send one dead letter whose source topic does not hold it as it is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveOverride {
    /// The DLQ topic, e.g. `payment-events.dlq`.
    pub topic: String,
    #[schema(minimum = 0)]
    pub partition: i32,
    #[schema(minimum = 0)]
    pub offset: i64,
    /// The SHA-256 of the letter's value as the listing shows it (64 hex digits): the
    /// override is for exactly these bytes.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub value_sha256: String,
    /// Why these bytes are right to send (audited).
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

impl Validate for Redrive {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if !self.confirm {
            fields.push(FieldError::new("confirm", "must be true: a redrive sends the messages to the services again"));
        }
        let chosen = [self.all, !self.messages.is_empty(), self.override_one.is_some()];
        if chosen.iter().filter(|c| **c).count() != 1 {
            fields.push(FieldError::new("messages", "give one of messages, all: true or override"));
        }
        if let Some(one) = &self.override_one {
            if one.partition < 0 || one.offset < 0 {
                fields.push(FieldError::new("override", "partition and offset are not negative"));
            }
            if one.value_sha256.len() != 64 || !one.value_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                fields.push(FieldError::new("override.value_sha256", "the letter's SHA-256: 64 hex digits"));
            }
            if one.reason.trim().is_empty() || one.reason.chars().count() > 1000 {
                fields.push(FieldError::new("override.reason", "say why (1 to 1000 characters)"));
            }
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
/// admins at once) redrives nothing twice. What goes back is the record the source topic
/// holds at the letter's original position; a letter whose source does not hold it as it
/// is (`forged`, or `unverifiable` past the topic's retention) is refused unless this
/// request overrides that one letter. Every redrive is audited with the admin, the time,
/// the letter's provenance and, for an override, the value's digest and the reason
/// (`GET .../dlq/audit`).
#[utoipa::path(post, path = "/api/v1/admin/console/dlq/redrive", tag = "console", request_body = Redrive,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`redriven`: sent now; `already`: redriven before; `refused`: forged or unverifiable, with why", content_type = "application/json", body = serde_json::Value),
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

/// Which redrives to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only the redrives of this saga (its Kafka key, the order id).
    #[param(max_length = 200)]
    pub saga_key: Option<String>,
}

impl Validate for AuditQuery {
    fn validate(&self) -> Vec<FieldError> {
        match &self.saga_key {
            Some(key) if key.is_empty() || key.len() > 200 => {
                vec![FieldError::new("saga_key", "a saga key: 1 to 200 characters")]
            }
            _ => Vec::new(),
        }
    }
}

/// Who redrove which dead letter, and when; the newest 200, of one saga if asked.
#[utoipa::path(get, path = "/api/v1/admin/console/dlq/audit", tag = "console", params(AuditQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The redrive audit, newest first", content_type = "application/json", body = serde_json::Value),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "The console is unavailable", body = ErrorBody),
    ))]
pub async fn audit(
    State(state): State<AppState>,
    admin: Admin,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter: Vec<(&str, &str)> = query.saga_key.as_deref().map(|key| ("saga_key", key)).into_iter().collect();
    forward_with_query(&state, Method::GET, &["console", "api", "dlq", "audit"], &filter, Some(&admin), None).await
}
