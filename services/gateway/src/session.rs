//! Sessions: opaque bearer tokens, kept in Redis only as a hash.
//!
//! A token is 32 random bytes (256 bits) sent to the client as base64url.
//! Redis holds `SHA-256(token) -> {user_id, role, ends_at}` with a TTL that
//! every authenticated request renews (sliding expiry), never past `ends_at`
//! (the absolute lifetime: a stolen token in steady use still dies); logout
//! deletes the key. A leaked Redis dump therefore holds no usable token.
//!
//! An event stream outlives the request that checked its token, so it asks
//! again every `SESSION_CHECK_MS` and ends with an `error` event once its
//! session is revoked or has expired ([`SessionStore::ended`]).

use std::future::Future;
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
    /// The end of the absolute lifetime, in Unix seconds. A session stored
    /// before there was one has 0: it has ended.
    #[serde(default)]
    pub ends_at: i64,
}

impl Session {
    /// A session of `user_id` that ends `lifetime` from now at the latest.
    pub fn new(user_id: Uuid, role: Role, lifetime: Duration) -> Session {
        let ends_at = Utc::now().timestamp().saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
        Session { user_id, role, ends_at }
    }

    /// Seconds left of the absolute lifetime (0 once it has ended).
    fn seconds_left(&self) -> u64 {
        u64::try_from(self.ends_at.saturating_sub(Utc::now().timestamp())).unwrap_or(0)
    }
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// When it expires unless used.
    pub expires_at: DateTime<Utc>,
    /// When it expires however it is used.
    pub ends_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// How often an event stream checks that its session still lives.
    check_every: Duration,
    /// Sessions one user may hold at once; a new one past it ends the oldest.
    per_user: u64,
}

/// Stores a session (KEYS[1], value ARGV[1], TTL ARGV[2] seconds) and indexes it under its
/// user (KEYS[2], a sorted set by creation time ARGV[3]); sessions that ended meanwhile
/// (logged out, expired) leave the index first, then past ARGV[4] live sessions the oldest
/// are deleted. The index lives as long as a session can (ARGV[5] seconds). Returns how
/// many sessions were ended. One script, so parallel logins cannot overshoot the cap.
const CREATE: &str = r"
for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[2], key) end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over <= 0 then return 0 end
local oldest = redis.call('ZRANGE', KEYS[2], 0, over - 1)
for _, key in ipairs(oldest) do redis.call('DEL', key) end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
return over";

/// Length of a token in base64url without padding (32 bytes).
const TOKEN_LEN: usize = 43;

impl SessionStore {
    pub fn new(
        redis: ConnectionManager,
        prefix: &str,
        ttl: Duration,
        check_every: Duration,
        per_user: u64,
    ) -> SessionStore {
        SessionStore { redis, prefix: prefix.to_owned(), ttl, check_every, per_user }
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
        let ttl = self.ttl.as_secs().min(session.seconds_left()).max(1);
        let mut redis = self.redis.clone();
        let ended: u64 = redis::cmd("EVAL")
            .arg(CREATE)
            .arg(2)
            .arg(self.key(&token))
            .arg(format!("{}sessions-of:{}", self.prefix, session.user_id))
            .arg(value)
            .arg(ttl)
            .arg(Utc::now().timestamp_micros())
            .arg(self.per_user)
            .arg(session.seconds_left().max(1))
            .query_async(&mut redis)
            .await?;
        if ended > 0 {
            tracing::info!(user_id = %session.user_id, ended, "oldest sessions ended: too many at once");
        }
        let ends_at = DateTime::from_timestamp(session.ends_at, 0).unwrap_or_else(Utc::now);
        Ok(Issued { token, expires_at: Utc::now() + Duration::from_secs(ttl), ends_at })
    }

    /// The session of a token, renewing its TTL; `None` when unknown or
    /// expired, by either lifetime.
    pub async fn touch(&self, token: &str) -> Result<Option<Session>, ApiError> {
        if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Ok(None);
        }
        let key = self.key(token);
        let mut redis = self.redis.clone();
        // GETEX reads and renews in one step, so a session cannot expire between the two.
        let value: Option<String> = redis.get_ex(&key, redis::Expiry::EX(self.ttl.as_secs())).await?;
        let Some(session) = value.and_then(|v| serde_json::from_str::<Session>(&v).ok()) else { return Ok(None) };
        let left = session.seconds_left();
        if left == 0 {
            let _: () = redis.del(&key).await?;
            return Ok(None);
        }
        // The last stretch: Redis drops the key when the absolute lifetime ends.
        if left < self.ttl.as_secs() {
            let _: () = redis.expire(&key, i64::try_from(left).unwrap_or(i64::MAX)).await?;
        }
        Ok(Some(session))
    }

    /// Resolves once the session of `auth` has ended: revoked, expired
    /// unused, or at the end of its absolute lifetime. Checked every
    /// `check_every` without renewing it (a stream is not a use); a check
    /// Redis cannot answer counts as alive until the next.
    pub fn ended(&self, auth: &Auth) -> impl Future<Output = ()> + Send + use<> {
        let (store, key, session) = (self.clone(), self.key(&auth.token), auth.session.clone());
        async move {
            loop {
                let left = session.seconds_left();
                if left == 0 {
                    return;
                }
                tokio::time::sleep(store.check_every.min(Duration::from_secs(left))).await;
                let mut redis = store.redis.clone();
                match redis.exists::<_, bool>(&key).await {
                    Ok(false) => return,
                    Ok(true) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cannot check an event stream's session; checking again later")
                    }
                }
            }
        }
    }

    pub async fn revoke(&self, token: &str) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        let _: () = redis.del(self.key(token)).await?;
        Ok(())
    }
}

/// What an event stream's client gets when its session has ended.
pub const SESSION_ENDED: &str = "the session has ended: log in again";

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

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_session_stored_before_absolute_lifetimes_has_ended() {
        let old: Session =
            serde_json::from_str(r#"{"user_id":"9f0c1b7e-6d7a-4a59-9a43-2f4f7f1f2b11","role":"customer"}"#)
                .expect("parses");
        assert_eq!(old.seconds_left(), 0);
        assert!(Session::new(old.user_id, Role::Customer, Duration::from_secs(60)).seconds_left() >= 59);
    }
}
