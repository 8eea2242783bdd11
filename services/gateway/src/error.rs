//! The one error type of the HTTP API and its JSON body.
//!
//! Every failure a client sees has the same shape (`ErrorBody`), whatever
//! produced it: validation, authentication, a backend's gRPC status, a
//! rejected extractor or an unknown route. Server-side failures (5xx) carry a
//! fixed, opaque message; their detail goes to the log only.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable error code (`validation_failed`, `unauthorized`, ...).
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Human-readable summary.
    #[schema(example = "the request is invalid")]
    pub message: String,
    /// One entry per invalid field; present only for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(nullable = false)]
    pub fields: Vec<FieldError>,
}

/// What is wrong with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field: `email`, `items[0].quantity`, the header `Idempotency-Key`, ...
    #[schema(example = "email")]
    pub field: String,
    #[schema(example = "must be an email address")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input, with one message per offending field.
    #[error("validation failed: {fields:?}")]
    Validation { fields: Vec<FieldError> },
    /// The body is not JSON or not of the expected shape as a whole.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("forbidden")]
    Forbidden,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("too many requests, retry after {0:?}")]
    TooManyRequests(Duration),
    /// A dependency (Redis, a backend) cannot be reached or answered too late.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Admission control: the saga backlog is over the limit; retry after this.
    #[error("overloaded, retry after {0:?}")]
    Overloaded(Duration),
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else: logged in full, answered opaquely.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation { fields: vec![FieldError::new(field, message)] }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (code, message, fields) = match self {
            ApiError::Validation { fields } => {
                ("validation_failed", "the request is invalid".to_owned(), fields.clone())
            }
            ApiError::BadRequest(message) => ("bad_request", message.clone(), Vec::new()),
            ApiError::Unauthorized(message) => ("unauthorized", (*message).to_owned(), Vec::new()),
            ApiError::Forbidden => ("forbidden", "this needs the admin role".to_owned(), Vec::new()),
            ApiError::NotFound(message) => ("not_found", message.clone(), Vec::new()),
            ApiError::MethodNotAllowed => {
                ("method_not_allowed", "this method is not allowed here".to_owned(), Vec::new())
            }
            ApiError::Conflict(message) => ("conflict", message.clone(), Vec::new()),
            ApiError::PayloadTooLarge => ("payload_too_large", "the request body is too large".to_owned(), Vec::new()),
            ApiError::HeadersTooLarge => {
                ("headers_too_large", "the request headers are too large".to_owned(), Vec::new())
            }
            ApiError::UnsupportedMediaType => (
                "unsupported_media_type",
                "the request body must be JSON (Content-Type: application/json)".to_owned(),
                Vec::new(),
            ),
            ApiError::TooManyRequests(_) => {
                ("too_many_requests", "too many attempts; retry later".to_owned(), Vec::new())
            }
            // 5xx: fixed messages only, never the cause.
            ApiError::Unavailable(_) => {
                ("unavailable", "a dependency is unavailable; retry later".to_owned(), Vec::new())
            }
            ApiError::Overloaded(_) => (
                "overloaded",
                "too many orders are waiting to finish; retry after the Retry-After seconds".to_owned(),
                Vec::new(),
            ),
            ApiError::Timeout(_) => ("timeout", "a dependency did not answer in time".to_owned(), Vec::new()),
            ApiError::Internal(_) => ("internal", "internal error".to_owned(), Vec::new()),
        };
        ErrorBody { code: code.to_owned(), message, fields }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The only place a 5xx cause is recorded; the client gets `body()`.
            tracing::error!(error = %self, %status, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request rejected");
        }
        let mut response = (status, Json(self.body())).into_response();
        let retry_after = match self {
            ApiError::TooManyRequests(after) | ApiError::Overloaded(after) => Some(after.as_secs().max(1)),
            // Short outages and busy moments: worth another try soon, spread
            // so that the clients of one busy second do not all come back together.
            ApiError::Unavailable(_) => Some(crate::admission::jittered(Duration::from_secs(2)).as_secs()),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// gRPC status -> HTTP. Client-side codes keep the backend's message, which
/// the services write for clients; everything else is opaque.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        use crate::balance::Failure;
        use tonic::Code;
        let message = status.message().to_owned();
        // The connection to the instance failed under the call (and no other
        // instance took it): the service is away for now, whatever code the
        // client made up for it (CANCELLED, INTERNAL for a reset stream).
        if matches!(Failure::of(&status), Failure::NeverSent | Failure::Broken) {
            return ApiError::Unavailable(format!("gRPC {:?}, the connection failed: {message}", status.code()));
        }
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => ApiError::BadRequest(message),
            Code::NotFound => ApiError::NotFound(message),
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => ApiError::Conflict(message),
            Code::PermissionDenied => ApiError::Forbidden,
            Code::Unauthenticated => ApiError::Unauthorized("invalid credentials"),
            Code::ResourceExhausted => ApiError::TooManyRequests(Duration::from_secs(1)),
            // tonic reports its client-side deadline as Cancelled("Timeout expired").
            Code::DeadlineExceeded | Code::Cancelled => ApiError::Timeout(format!("gRPC deadline exceeded: {message}")),
            Code::Unavailable => ApiError::Unavailable(format!("gRPC unavailable: {message}")),
            code => ApiError::Internal(format!("gRPC {code:?}: {message}")),
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(error: redis::RedisError) -> ApiError {
        ApiError::Unavailable(format!("redis: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http() {
        let cases = [
            (tonic::Code::NotFound, 404),
            (tonic::Code::InvalidArgument, 400),
            (tonic::Code::AlreadyExists, 409),
            (tonic::Code::FailedPrecondition, 409),
            (tonic::Code::PermissionDenied, 403),
            (tonic::Code::Unauthenticated, 401),
            (tonic::Code::DeadlineExceeded, 504),
            (tonic::Code::Cancelled, 504),
            (tonic::Code::Unavailable, 503),
            (tonic::Code::Internal, 500),
            (tonic::Code::Unknown, 500),
        ];
        for (code, http) in cases {
            assert_eq!(ApiError::from(tonic::Status::new(code, "x")).status().as_u16(), http, "{code:?}");
        }
        // Made up by the client because the connection failed: away, not slow or broken.
        let mut closed = tonic::Status::cancelled("operation was canceled");
        closed.set_source(std::sync::Arc::new(std::io::Error::other("connection closed")));
        assert_eq!(ApiError::from(closed).status().as_u16(), 503);
        let mut reset = tonic::Status::internal("h2 protocol error: http2 error");
        reset.set_source(std::sync::Arc::new(std::io::Error::other("stream reset")));
        assert_eq!(ApiError::from(reset).status().as_u16(), 503);
        // tonic's own deadline: a timeout.
        let mut expired = tonic::Status::cancelled("Timeout expired");
        expired.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
        assert_eq!(ApiError::from(expired).status().as_u16(), 504);
    }

    #[test]
    fn an_unavailable_backend_says_when_to_retry() {
        let response = ApiError::from(tonic::Status::unavailable("database away")).into_response();
        assert_eq!(response.status().as_u16(), 503);
        let after = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        assert!(after.is_some_and(|s| (1..=3).contains(&s)), "{after:?}");
        let internal = ApiError::from(tonic::Status::internal("x")).into_response();
        assert!(internal.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn server_errors_do_not_leak_their_cause() {
        let error = ApiError::from(tonic::Status::internal("relation \"orders\" does not exist"));
        let body = serde_json::to_string(&error.body()).expect("json");
        assert!(!body.contains("relation"), "{body}");
        assert_eq!(error.body().message, "internal error");
    }
}
