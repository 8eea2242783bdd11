//! What the two HTTP servers (the gateway and the console) do alike: count
//! and time every request, and end an event stream whose server is stopping.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::response::sse::Event;

use crate::metrics::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};

/// Middleware (`axum::middleware::from_fn`): counts and times each request by its route
/// pattern (`/api/v1/orders/{id}`, never the id itself, so the labels stay few), method and
/// status. Outermost, so requests refused by another layer count too.
pub async fn request_metrics(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(HTTP_REQUEST_DURATION, "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => response.status().as_str().to_owned())
        .increment(1);
    response
}

/// How soon a client told to reconnect tries again (the SSE `retry` field).
pub const RECONNECT_AFTER: Duration = Duration::from_millis(250);

/// The data of a `reconnect` event: `{"code": "reconnect", "message": ...}`.
fn reconnect_data(message: &str) -> String {
    serde_json::json!({ "code": "reconnect", "message": message }).to_string()
}

/// The last event of a stream its server ends because it is stopping: `reconnect`, with
/// no id (a client resumes with the last one it had), saying why in `message`.
pub fn reconnect_event(message: &str) -> Event {
    Event::default().event("reconnect").retry(RECONNECT_AFTER).data(reconnect_data(message))
}

/// [`reconnect_event`] as the bytes of a stream a server passes through.
pub fn reconnect_bytes(message: &str) -> axum::body::Bytes {
    format!("event: reconnect\nretry: {}\ndata: {}\n\n", RECONNECT_AFTER.as_millis(), reconnect_data(message)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_through_reconnect_reads_as_the_event_it_stands_for() {
        let text = String::from_utf8(reconnect_bytes("stopping").to_vec()).expect("utf-8");
        assert!(text.starts_with("event: reconnect\nretry: 250\ndata: "), "{text}");
        assert!(text.ends_with("\n\n"), "{text}");
        let data: serde_json::Value =
            serde_json::from_str(text.lines().nth(2).and_then(|l| l.strip_prefix("data: ")).expect("data"))
                .expect("json");
        assert_eq!((data["code"].as_str(), data["message"].as_str()), (Some("reconnect"), Some("stopping")));
    }
}
