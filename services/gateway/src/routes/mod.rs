//! The REST API under `/api/v1`, plus health and docs.

pub mod admin;
pub mod auth;
pub mod console;
pub mod health;
pub mod orders;
pub mod products;

/// What a client is told when this gateway stops while its event stream is open: reconnect
/// (to any gateway; an order stream resumes after the `Last-Event-ID` it had) soon.
const STOPPING: &str = "this gateway is stopping: reconnect to continue (order streams resume after Last-Event-ID)";

/// The last event of a stream the gateway ends because it is stopping.
pub fn reconnect_event() -> axum::response::sse::Event {
    saga_process::http::reconnect_event(STOPPING)
}

/// [`reconnect_event`] as the bytes of a stream the gateway passes through.
pub fn reconnect_bytes() -> axum::body::Bytes {
    saga_process::http::reconnect_bytes(STOPPING)
}
