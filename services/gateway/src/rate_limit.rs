//! Login rate limit, per account and per client IP, kept in Redis so every
//! gateway instance shares it.
//!
//! Fixed windows of failed attempts: a failed login increments both counters
//! (the first increment starts the window's TTL); while either counter is at
//! its limit, every login for that account or from that IP is refused with
//! 429 and `Retry-After` = the window's remaining time, before the password
//! is even checked. Successful logins do not count, and reset the account's
//! counter, so a user who finally types the right password starts afresh.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_ip: u64,
    pub per_account: u64,
    pub window: Duration,
}

#[derive(Clone)]
pub struct LoginLimiter {
    redis: ConnectionManager,
    prefix: String,
    limits: Limits,
}

/// INCR, and start the window's TTL on the first failure of a window.
const RECORD_FAILURE: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n";

impl LoginLimiter {
    pub fn new(redis: ConnectionManager, prefix: &str, limits: Limits) -> LoginLimiter {
        LoginLimiter { redis, prefix: prefix.to_owned(), limits }
    }

    fn keys(&self, email: &str, ip: IpAddr) -> [(String, u64); 2] {
        // Hashed so the key space holds no email addresses.
        let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
        let account: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        [
            (format!("{}login-fail:account:{account}", self.prefix), self.limits.per_account),
            (format!("{}login-fail:ip:{ip}", self.prefix), self.limits.per_ip),
        ]
    }

    /// 429 when this account or this IP has used up its failures.
    pub async fn check(&self, email: &str, ip: IpAddr) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        for (key, limit) in self.keys(email, ip) {
            let (count, ttl): (Option<u64>, i64) = redis::pipe().get(&key).ttl(&key).query_async(&mut redis).await?;
            if count.unwrap_or(0) >= limit {
                let retry = if ttl > 0 { ttl as u64 } else { self.limits.window.as_secs() };
                return Err(ApiError::TooManyRequests(Duration::from_secs(retry)));
            }
        }
        Ok(())
    }

    pub async fn record_failure(&self, email: &str, ip: IpAddr) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        for (key, _) in self.keys(email, ip) {
            let _: u64 = redis::cmd("EVAL")
                .arg(RECORD_FAILURE)
                .arg(1)
                .arg(&key)
                .arg(self.limits.window.as_secs())
                .query_async(&mut redis)
                .await?;
        }
        Ok(())
    }

    pub async fn record_success(&self, email: &str, ip: IpAddr) -> Result<(), ApiError> {
        let mut redis = self.redis.clone();
        let [(account, _), _] = self.keys(email, ip);
        let _: () = redis::cmd("DEL").arg(account).query_async(&mut redis).await?;
        Ok(())
    }
}
