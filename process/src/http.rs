//! What the two HTTP servers (the gateway and the console) do alike: count
//! and time every request, and end an event stream whose server is stopping; and how
//! their clients (the benchmark, the tests) read such a stream.

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

/// Parses a `text/event-stream` body into (event name, JSON data) pairs.
pub fn parse_sse(text: &str) -> Vec<(String, serde_json::Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = "message".to_owned();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
        if !data.is_empty() {
            events.push((name, serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data))));
        }
    }
    events
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

    #[test]
    fn a_stream_reads_as_named_events_with_json_data() {
        let text = "event: snapshot\nid: 1\ndata: {\"status\":\"created\"}\n\n: keep-alive\n\ndata: plain\n\n";
        let mut text = text.to_owned();
        text.push_str(std::str::from_utf8(&reconnect_bytes("stopping")).expect("utf-8"));
        let events = parse_sse(&text);
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["snapshot", "message", "reconnect"]);
        assert_eq!(events[0].1["status"], "created");
        assert_eq!(events[1].1, serde_json::Value::String("plain".into()));
        assert_eq!(events[2].1["code"], "reconnect");
    }
}
