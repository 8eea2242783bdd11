//! What every saga's envelope does alike, whatever its key: its times, kept to what Avro's
//! `timestamp-micros` keeps, and its Kafka headers. The generated `Envelope<E>` (whose
//! saga key field the spec names) calls these.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::TraceContext;

/// `at` truncated to the microsecond (what `timestamp-micros` keeps), so an envelope
/// equals its decoded copy.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// Now, to the microsecond.
pub fn now_micros() -> DateTime<Utc> {
    to_micros(Utc::now())
}

/// The Kafka headers of an event: for humans and tools; consumers decode from the
/// payload alone.
pub fn headers(
    event_type: &str,
    event_id: Uuid,
    trace: &TraceContext,
    deadline: Option<DateTime<Utc>>,
) -> Vec<(String, String)> {
    let mut h = Vec::from([
        ("event-type".to_string(), event_type.to_string()),
        ("event-id".to_string(), event_id.to_string()),
        ("content-type".to_string(), "application/vnd.apache.avro+binary".to_string()),
    ]);
    if let Some(tp) = &trace.traceparent {
        h.push(("traceparent".to_string(), tp.clone()));
    }
    if let Some(ts) = &trace.tracestate {
        h.push(("tracestate".to_string(), ts.clone()));
    }
    if let Some(deadline) = deadline {
        h.push(("saga-deadline".to_string(), deadline.to_rfc3339_opts(SecondsFormat::Micros, true)));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_kept_to_the_microsecond() {
        let at = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        assert_eq!(to_micros(at).timestamp_nanos_opt(), Some(1_700_000_000_123_456_000));
        assert_eq!(now_micros().timestamp_subsec_nanos() % 1_000, 0);
    }

    #[test]
    fn headers_name_the_event_and_carry_its_trace_and_deadline() {
        let id = Uuid::nil();
        let bare = headers("order.created", id, &TraceContext::default(), None);
        assert_eq!(
            bare,
            [
                ("event-type".to_string(), "order.created".to_string()),
                ("event-id".to_string(), id.to_string()),
                ("content-type".to_string(), "application/vnd.apache.avro+binary".to_string()),
            ]
        );
        let trace = TraceContext { traceparent: Some("00-abc-def-01".into()), tracestate: Some("k=v".into()) };
        let deadline = DateTime::from_timestamp_nanos(1_700_000_000_123_456_000);
        let full = headers("order.created", id, &trace, Some(deadline));
        assert_eq!(
            full[3..],
            [
                ("traceparent".to_string(), "00-abc-def-01".to_string()),
                ("tracestate".to_string(), "k=v".to_string()),
                ("saga-deadline".to_string(), "2023-11-14T22:13:20.123456Z".to_string()),
            ]
        );
    }
}
