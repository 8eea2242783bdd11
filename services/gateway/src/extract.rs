//! Strict request extractors: their rejections are `ApiError`s, so a bad body,
//! query or path gives the same JSON error body as everything else.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// Checks a request's own values after it parsed (lengths, ranges, formats).
pub trait Validate {
    /// Every problem found, one per field; empty when valid.
    fn validate(&self) -> Vec<FieldError>;
}

/// A JSON body: `Content-Type: application/json` (else 415), within the body
/// limit (else 413), parsed strictly (unknown fields are errors) and then
/// validated; parse errors name the field's path.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("cannot read the request body".to_owned())
            }
        })?;
        let value = parse_json::<T>(&bytes)?;
        let fields = value.validate();
        if fields.is_empty() { Ok(ApiJson(value)) } else { Err(ApiError::Validation { fields }) }
    }
}

/// Parses JSON; an error names the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(value) => Ok(value),
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let message = strip_position(&inner.to_string());
            match inner.classify() {
                serde_json::error::Category::Data => {
                    // A missing field is reported at the enclosing object; name the field itself.
                    let field = missing_field(&message)
                        .map(|name| if path == "." { name.clone() } else { format!("{path}.{name}") })
                        .unwrap_or_else(|| if path == "." { "body".to_owned() } else { path.clone() });
                    Err(ApiError::field(field, message))
                }
                _ => Err(ApiError::BadRequest(format!("the body is not valid JSON: {message}"))),
            }
        }
    }
}

/// serde_json appends " at line 1 column 17": noise for a client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// The field named by "missing field `x`".
fn missing_field(message: &str) -> Option<String> {
    message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()).map(str::to_owned)
}

/// The field named by "missing field `x`" / "unknown field `x`, expected ...".
fn field_of_message(message: &str) -> Option<String> {
    missing_field(message)
        .or_else(|| message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()).map(str::to_owned))
}

/// A query string, parsed strictly; errors are 400 with the field named.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let value: T = serde_urlencoded_strict(query)?;
        let fields = value.validate();
        if fields.is_empty() { Ok(ApiQuery(value)) } else { Err(ApiError::Validation { fields }) }
    }
}

fn serde_urlencoded_strict<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}").parse().map_err(|_| ApiError::BadRequest("the query string is malformed".to_owned()))?,
    )
    .map(|axum::extract::Query(value)| value)
    .map_err(|rejection| {
        let text = rejection.body_text();
        let message = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_owned();
        // "page_size: invalid digit found in string": the field, then the problem.
        let (field, message) = match message.split_once(": ") {
            Some((field, rest)) if !field.contains(' ') => (field.to_owned(), rest.to_owned()),
            _ => (field_of_message(&message).unwrap_or_else(|| "query".to_owned()), message.clone()),
        };
        ApiError::field(field, message)
    })
}

/// An id from the path; not a UUID gives 400 naming the parameter.
pub fn parse_id(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::field(name, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        quantity: i32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        items: Vec<Item>,
    }

    fn fields(json: &str) -> Vec<FieldError> {
        match parse_json::<Body>(json.as_bytes()) {
            Err(ApiError::Validation { fields }) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(fields(r#"{"items": []}"#)[0].field, "name");
        assert_eq!(fields(r#"{"name": "a", "items": [], "x": 1}"#)[0].field, "x");
        assert_eq!(fields(r#"{"name": 1, "items": []}"#)[0].field, "name");
        let nested = fields(r#"{"name": "a", "items": [{"quantity": 1.5}]}"#);
        assert_eq!(nested[0].field, "items[0].quantity");
        assert_eq!(nested[0].message, "invalid type: floating point `1.5`, expected i32");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(parse_json::<Body>(b"{"), Err(ApiError::BadRequest(_))));
    }
}
