//! Register, login, logout and the caller's own profile.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, StatusCode, header};
use chrono::{DateTime, Utc};
use saga_proto::user as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::balance::Idempotence;
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::extract::{ApiJson, Validate};
use crate::rate_limit::LoginOutcome;
use crate::session::{Auth, Role, Session};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The login name; compared case-insensitively.
    #[schema(example = "alice@example.com", format = Email, max_length = 254)]
    pub email: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128)]
    pub password: String,
    /// Shown name; defaults to the part of the email before `@`.
    #[schema(example = "Alice", max_length = 100, pattern = "\\S")]
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "alice@example.com", min_length = 1, max_length = 254)]
    pub email: String,
    #[schema(example = "correct horse battery", min_length = 1, max_length = 128)]
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Opaque bearer token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: String,
    /// When the token expires unless used; every use extends it by
    /// `expires_in` seconds, up to `absolute_expires_at`.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    pub expires_in: u64,
    /// When the token expires however it is used: log in again then.
    #[schema(value_type = String, format = DateTime)]
    pub absolute_expires_at: DateTime<Utc>,
}

/// A user's profile and balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserProfile {
    #[schema(value_type = uuid::Uuid)]
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// Balance in minor units (cents).
    pub balance_minor: i64,
    pub created_at: String,
}

impl From<pb::User> for UserProfile {
    fn from(user: pb::User) -> UserProfile {
        let role = role_of(user.role());
        UserProfile {
            id: user.user_id,
            email: user.email,
            display_name: user.display_name,
            role,
            balance_minor: user.balance_minor,
            created_at: user.created_at,
        }
    }
}

pub fn role_of(role: pb::Role) -> Role {
    if role == pb::Role::Admin { Role::Admin } else { Role::Customer }
}

/// A plausible email: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn email_problem(email: &str) -> Option<&'static str> {
    if email.is_empty() {
        return Some("must not be empty");
    }
    if email.len() > 254 {
        return Some("must be at most 254 characters");
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if valid { None } else { Some("must be an email address") }
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if let Some(problem) = email_problem(&self.email) {
            fields.push(FieldError::new("email", problem));
        }
        let length = self.password.chars().count();
        if length < 8 {
            fields.push(FieldError::new("password", "must be at least 8 characters"));
        } else if length > 128 {
            fields.push(FieldError::new("password", "must be at most 128 characters"));
        }
        if let Some(name) = &self.display_name {
            if name.trim().is_empty() {
                fields.push(FieldError::new("display_name", "must not be blank"));
            } else if name.chars().count() > 100 {
                fields.push(FieldError::new("display_name", "must be at most 100 characters"));
            } else if name.chars().any(char::is_control) {
                fields.push(FieldError::new("display_name", "must not contain control characters"));
            }
        }
        fields
    }
}

impl Validate for LoginRequest {
    fn validate(&self) -> Vec<FieldError> {
        let mut fields = Vec::new();
        if self.email.is_empty() {
            fields.push(FieldError::new("email", "must not be empty"));
        } else if self.email.len() > 254 {
            fields.push(FieldError::new("email", "must be at most 254 characters"));
        }
        if self.password.is_empty() {
            fields.push(FieldError::new("password", "must not be empty"));
        } else if self.password.chars().count() > 128 {
            fields.push(FieldError::new("password", "must be at most 128 characters"));
        }
        fields
    }
}

/// Create a customer account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserProfile),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 409, description = "The email is already registered", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many registrations from this client, or from all", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until registrations are allowed again"))),
        (status = 503, description = "Too many password checks waiting, or the user service is away", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserProfile>), ApiError> {
    // Counted before the password is hashed: every attempt costs argon2 work,
    // and a 409 says the email has an account (docs/security.md).
    let attempt = state.registration_limiter.reserve(peer.ip()).await?;
    let email = body.email.trim().to_lowercase();
    let display_name = body
        .display_name
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    let request = pb::CreateUserRequest {
        email,
        password: body.password,
        display_name,
        role: pb::Role::Customer as i32,
        initial_balance_minor: 0,
    };
    let user = match state
        .backends
        .user_call(Idempotence::Once, &request, |mut c, r| async move { c.create_user(r).await })
        .await
    {
        Ok(user) => user,
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            return Err(ApiError::Conflict("this email is already registered".to_owned()));
        }
        Err(status) => {
            // Not judged (the user service away or its password queue full): not counted.
            if status.code() == tonic::Code::Unavailable {
                state.registration_limiter.release(attempt).await;
            }
            return Err(status.into());
        }
    };
    Ok((StatusCode::CREATED, Json(user.into_inner().into())))
}

/// Exchange email and password for a bearer token.
///
/// Failed attempts are limited per account from one client IP, per client IP
/// and per account; every attempt counts while its password is checked, so
/// parallel guesses count too. Over a limit every attempt gets 429 with
/// `Retry-After` until the window ends.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "Too many failed attempts", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until attempts are allowed again"))),
        (status = 503, description = "Too many password checks waiting, or the user service is away", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<([(HeaderName, &'static str); 1], Json<LoginResponse>), ApiError> {
    let email = body.email.trim().to_lowercase();
    let ip = peer.ip();
    let attempt = state.login_limiter.reserve(&email, ip).await?;
    let request = pb::VerifyCredentialsRequest { email: email.clone(), password: body.password };
    let verified = match state
        .backends
        .user_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.verify_credentials(r).await })
        .await
    {
        Ok(reply) => reply.into_inner(),
        // A failure keeps the attempt counted. An email the user service finds
        // malformed cannot belong to an account.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::NotFound | tonic::Code::InvalidArgument
            ) =>
        {
            state.login_limiter.settle(attempt, LoginOutcome::Refused).await;
            return Err(ApiError::Unauthorized("wrong email or password"));
        }
        // Not judged: the user service away, its queue full, or too slow.
        Err(status) => {
            state.login_limiter.settle(attempt, LoginOutcome::NotJudged).await;
            return Err(status.into());
        }
    };
    state.login_limiter.settle(attempt, LoginOutcome::LoggedIn).await;
    let user_id = uuid::Uuid::parse_str(&verified.user_id)
        .map_err(|_| ApiError::Internal(format!("user service returned a bad id {:?}", verified.user_id)))?;
    let session = Session::new(user_id, role_of(verified.role()), state.config.session_max());
    let issued = state.sessions.create(&session).await?;
    tracing::info!(%user_id, "logged in");
    // A bearer token must not land in any cache on the way.
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    Ok((
        no_store,
        Json(LoginResponse {
            token: issued.token,
            token_type: "Bearer".to_owned(),
            expires_at: issued.expires_at,
            expires_in: state.sessions.ttl().as_secs(),
            absolute_expires_at: issued.ends_at,
        }),
    ))
}

/// Revoke the token of this request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Token revoked"),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
    ))]
pub async fn logout(State(state): State<AppState>, auth: Auth) -> Result<StatusCode, ApiError> {
    state.sessions.revoke(&auth.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's profile and balance.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserProfile),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, auth: Auth) -> Result<Json<UserProfile>, ApiError> {
    let request = pb::GetUserRequest { user_id: auth.session.user_id.to_string() };
    let user = state
        .backends
        .user_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.get_user(r).await })
        .await
        .map_err(|status| {
            if status.code() == tonic::Code::NotFound {
                // The account of a live session is gone: the token is worthless.
                ApiError::Unauthorized("invalid or expired token")
            } else {
                status.into()
            }
        })?;
    Ok(Json(user.into_inner().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["a@b.co", "alice.smith+x@example.com"] {
            assert_eq!(email_problem(good), None, "{good}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a@@b.co", "a b@c.de", "a@.co", "a@co."] {
            assert!(email_problem(bad).is_some(), "{bad}");
        }
    }
}
