//! Helpers every gRPC service shares: the caller's trace context, argument
//! parsing into typed values and opaque internal errors.

use chrono::{DateTime, Utc};
use saga_process::trace;
use tonic::Status;
use uuid::Uuid;

/// The `traceparent` a request carries, when it is well formed.
pub fn traceparent<T>(request: &tonic::Request<T>) -> Option<String> {
    let value = request.metadata().get(trace::TRACEPARENT)?.to_str().ok()?;
    trace::is_valid(value).then(|| value.to_owned())
}

/// The request's trace context, or a new one when it has none.
pub fn traceparent_or_new<T>(request: &tonic::Request<T>) -> String {
    // With traces exported, what the call starts is a child of the call's own span.
    saga_process::telemetry::traceparent_of(&tracing::Span::current())
        .or_else(|| traceparent(request))
        .unwrap_or_else(trace::new_traceparent)
}

/// Parses a UUID argument; INVALID_ARGUMENT naming the field otherwise.
pub fn parse_uuid(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("{field} is not a UUID: {value:?}")))
}

/// Logs the real error and returns an opaque INTERNAL, so no database detail
/// leaks to clients.
pub fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "internal error");
    Status::internal("internal error")
}

/// A database error as a gRPC status: UNAVAILABLE when the database is away
/// or no pooled connection freed up in time (the caller may retry: the
/// gateway answers 503 with Retry-After), else the opaque INTERNAL.
pub fn database(error: sqlx::Error) -> Status {
    match crate::db::class_of(&error) {
        saga_contract::FailureClass::Infrastructure => {
            // A busy pool is the caller's cue to retry, not news for the log;
            // a database that is away is reported by the service's own loops too.
            if matches!(error, sqlx::Error::PoolTimedOut) {
                tracing::debug!(%error, "no database connection free for a request");
            } else {
                tracing::warn!(%error, "database unavailable for a request");
            }
            Status::unavailable("the service's database is unavailable; retry later")
        }
        _ => internal(error),
    }
}

/// The wire format of timestamps: RFC 3339, UTC, microseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Page size of a list call: 0 means `default`; at most `max`.
pub fn page_size(requested: i32, default: i64, max: i64) -> Result<i64, Status> {
    match requested {
        0 => Ok(default),
        n if n < 0 => Err(Status::invalid_argument("page_size must not be negative")),
        n => Ok(i64::from(n).min(max)),
    }
}

/// Whether a database error is the violation of the named constraint.
pub fn is_constraint(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.constraint() == Some(constraint))
}
