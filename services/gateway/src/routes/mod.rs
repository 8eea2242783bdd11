//! The REST API under `/api/v1`, plus health and docs.

pub mod admin;
pub mod auth;
pub mod console;
pub mod health;
pub mod orders;
pub mod products;

use std::time::Duration;

use axum::response::sse::Event;

/// What a client is told when this gateway stops while its event stream is open: reconnect
/// (to any gateway; an order stream resumes after the `Last-Event-ID` it had) soon.
const STOPPING: &str = "this gateway is stopping: reconnect to continue (order streams resume after Last-Event-ID)";

/// How soon a client told to reconnect tries again (the SSE `retry` field).
const RECONNECT_AFTER: Duration = Duration::from_millis(250);

fn stopping_body() -> String {
    serde_json::json!({ "code": "reconnect", "message": STOPPING }).to_string()
}

/// The last event of a stream the gateway ends because it is stopping: `reconnect`, with
/// no id (the client keeps the last one it had).
pub fn reconnect_event() -> Event {
    Event::default().event("reconnect").retry(RECONNECT_AFTER).data(stopping_body())
}

/// [`reconnect_event`] as the bytes of a stream the gateway passes through.
pub fn reconnect_bytes() -> axum::body::Bytes {
    format!("event: reconnect\nretry: {}\ndata: {}\n\n", RECONNECT_AFTER.as_millis(), stopping_body()).into()
}
