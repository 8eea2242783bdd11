//! Sessions: opaque bearer tokens, kept in Redis only as a hash.
//!
//! A token is 32 random bytes (256 bits) sent to the client as base64url.
//! Redis holds `SHA-256(token) -> {user_id, role}` with a TTL that every
//! authenticated request renews (sliding expiry); logout deletes the key. A
//! leaked Redis dump therefore holds no usable token.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Admin,
}

/// What a session knows about its user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Uuid,
    pub role: Role,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

/// Length of a token in base64url without padding (32 bytes).
const TOKEN_LEN: usize = 43;

impl SessionStore {
    pub fn new(redis: ConnectionManager, prefix: &str, ttl: Duration) -> SessionStore {
        SessionStore { redis, prefix: prefix.to_owned(), ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}session:{hex}", self.prefix)
    }

    pub async fn create(&self, session: &Session) -> Result<Issued, ApiError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let value = serde_json::to_string(session).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut redis = self.redis.clone();
        let _: () = redis.set_ex(self.key(&token), value, self.ttl.as_secs()).await?;
        Ok(Issued { token, expires_at: Utc::now() + self.ttl })
    }

    /// The session of a token, renewing its TTL; `None` when unknown or expired.
    pub async fn touch(&self, token: &str) -> Result<Option<Session>, ApiError> {
        if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Ok(None);
        }
        let mut redis = self.redis.clone();
        // GETEX reads and renews in one step, so a session cannot expire between the two.
        let value: Option<String> = redis.get_ex(self.key(token), redis::Expiry::EX(self.ttl.as_secs())).await?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
    }

    pub async fn revoke(&self, token: &str) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        let _: () = redis.del(self.key(token)).await?;
        Ok(())
    }
}

/// An authenticated request: a valid bearer token (else 401).
#[derive(Debug, Clone)]
pub struct Auth {
    pub session: Session,
    pub token: String,
}

impl Auth {
    pub fn is_admin(&self) -> bool {
        self.session.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let session = state.sessions.touch(token).await?.ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        tracing::Span::current().record("user_id", tracing::field::display(session.user_id));
        Ok(Auth { session, token: token.to_owned() })
    }
}

/// An authenticated admin: 401 without a valid token, 403 for other roles.
#[derive(Debug, Clone)]
pub struct Admin(pub Auth);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        if auth.is_admin() { Ok(Admin(auth)) } else { Err(ApiError::Forbidden) }
    }
}
