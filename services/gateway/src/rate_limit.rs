//! Rate limits of the unauthenticated doors, login and registration, kept in
//! Redis so every gateway instance shares them.
//!
//! Each limit is a fixed window counter (the first attempt of a window starts
//! its TTL). An attempt *reserves* its place on every counter it is under,
//! atomically in one Lua script, before any password is hashed or checked: N
//! parallel attempts therefore count N times, and past a limit every attempt
//! is refused with 429 and `Retry-After` = the remaining window without
//! reaching the user service. What happens to the reservation afterwards is
//! the caller's: a failed login keeps it (it is what the counter counts); a
//! successful login, or an attempt the backend could not judge (the user
//! service away, its password queue full), gives it back.
//!
//! Login ([`LoginLimiter`]) counts failures on three counters (docs/security.md
//! says why):
//! - per account *and* client IP (small: one attacker guessing one password);
//! - per client IP (across accounts: one attacker spraying many);
//! - per account (across IPs, larger: a distributed guess at one account).
//!
//! A victim whose account is hammered from elsewhere keeps logging in from
//! their own address until the per-account counter, set well above the
//! pair's, fills; that lockout ends with its window.
//!
//! Successful logins are counted too, per account and per client IP: a
//! correct password costs the user service a password check like a wrong
//! one, and a few accounts logging in over and over from a handful of
//! addresses could otherwise keep its password queue full for everyone.
//!
//! Registration ([`RegistrationLimiter`]) counts every attempt, per client IP
//! and in total: each one costs an argon2 hash, and each 409 tells whether an
//! email has an account, so both a flood and an enumeration are slowed and
//! show in `gateway_rate_limited_total`.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Attempts refused by a limit, by `limit` (which counter was full).
pub const RATE_LIMITED: &str = "gateway_rate_limited_total";

/// Reserves one attempt on every counter of `KEYS`, or on none when one is at
/// its limit. ARGV: the window in seconds, then each key's limit. Returns
/// `{0, 0}` when reserved, else `{i, ttl}` of the first full counter (1-based).
const RESERVE: &str = r"
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[i + 1]) then
    return {i, redis.call('TTL', key)}
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 or redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, ARGV[1])
  end
end
return {0, 0}";

/// Gives back one reserved attempt on every counter of `KEYS` (a DECR keeps
/// the key's TTL; a counter that has expired meanwhile stays gone).
const RELEASE: &str = r"
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0";

/// One fixed-window counter: its Redis key, its limit, and its name in the
/// `limit` label of [`RATE_LIMITED`].
#[derive(Debug, Clone)]
struct Counter {
    key: String,
    limit: u64,
    name: &'static str,
}

/// The counters of one kind of attempt, in one Redis.
#[derive(Clone)]
struct Windows {
    redis: ConnectionManager,
    window: Duration,
}

impl Windows {
    /// Reserves an attempt on all `counters`, or refuses with 429 and the
    /// remaining window of the first that is full.
    async fn reserve(&self, counters: &[Counter]) -> Result<(), ApiError> {
        let mut command = redis::cmd("EVAL");
        command.arg(RESERVE).arg(counters.len());
        for counter in counters {
            command.arg(&counter.key);
        }
        command.arg(self.window.as_secs());
        for counter in counters {
            command.arg(counter.limit);
        }
        let (full, ttl): (usize, i64) = command.query_async(&mut self.redis.clone()).await?;
        let Some(counter) = full.checked_sub(1).and_then(|i| counters.get(i)) else { return Ok(()) };
        metrics::counter!(RATE_LIMITED, "limit" => counter.name).increment(1);
        tracing::warn!(limit = counter.name, "rate limit reached; attempt refused");
        let retry = if ttl > 0 { ttl as u64 } else { self.window.as_secs() };
        Err(ApiError::TooManyRequests(Duration::from_secs(retry)))
    }

    /// Gives back an attempt reserved on `counters`. Not giving it back only
    /// counts one attempt too many, so a Redis failure is logged, not
    /// turned into the request's failure.
    async fn release(&self, counters: &[Counter], and_delete: Option<&str>) {
        let mut command = redis::cmd("EVAL");
        command.arg(RELEASE).arg(counters.len());
        for counter in counters {
            command.arg(&counter.key);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(command).ignore();
        if let Some(key) = and_delete {
            pipe.del(key).ignore();
        }
        if let Err(error) = pipe.query_async::<()>(&mut self.redis.clone()).await {
            tracing::warn!(%error, "cannot give back a rate-limited attempt; it stays counted");
        }
    }
}

/// A client as the per-IP counters see it: an IPv4 address, or the /64 of an
/// IPv6 one (one subscriber's allocation: counting single IPv6 addresses
/// would let one client rotate through billions).
fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Hashed so the key space holds no email addresses.
fn account_key(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failures per account from one client IP.
    pub per_account_ip: u64,
    /// Failures per client IP, over all accounts.
    pub per_ip: u64,
    /// Failures per account, over all client IPs.
    pub per_account: u64,
    /// Successful logins per account, over all client IPs.
    pub success_per_account: u64,
    /// Successful logins per client IP, over all accounts.
    pub success_per_ip: u64,
    pub window: Duration,
}

#[derive(Clone)]
pub struct LoginLimiter {
    windows: Windows,
    prefix: String,
    limits: LoginLimits,
}

/// A login attempt that holds its place on the counters while its password
/// is checked: on the failure counters and the success counters at once, so
/// that N parallel attempts count N times on either. Its outcome then gives
/// back what it did not turn out to be ([`LoginLimiter::settle`]).
pub struct LoginAttempt {
    failures: Vec<Counter>,
    successes: Vec<Counter>,
}

/// How a login attempt ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Logged in: counted as a success.
    LoggedIn,
    /// A wrong email or password: counted as a failure.
    Refused,
    /// Not judged (the user service could not answer): counted as nothing.
    NotJudged,
}

impl LoginLimiter {
    pub fn new(redis: ConnectionManager, prefix: &str, limits: LoginLimits) -> LoginLimiter {
        LoginLimiter { windows: Windows { redis, window: limits.window }, prefix: prefix.to_owned(), limits }
    }

    fn counters(&self, email: &str, ip: IpAddr) -> Vec<Counter> {
        let (prefix, account, limits, ip) = (&self.prefix, account_key(email), self.limits, client_key(ip));
        vec![
            Counter {
                key: format!("{prefix}login-fail:account-ip:{account}:{ip}"),
                limit: limits.per_account_ip,
                name: "login_account_ip",
            },
            Counter { key: format!("{prefix}login-fail:ip:{ip}"), limit: limits.per_ip, name: "login_ip" },
            Counter {
                key: format!("{prefix}login-fail:account:{account}"),
                limit: limits.per_account,
                name: "login_account",
            },
        ]
    }

    fn success_counters(&self, email: &str, ip: IpAddr) -> Vec<Counter> {
        let (prefix, account, limits, ip) = (&self.prefix, account_key(email), self.limits, client_key(ip));
        vec![
            Counter {
                key: format!("{prefix}login-ok:account:{account}"),
                limit: limits.success_per_account,
                name: "login_success_account",
            },
            Counter {
                key: format!("{prefix}login-ok:ip:{ip}"),
                limit: limits.success_per_ip,
                name: "login_success_ip",
            },
        ]
    }

    /// Counts an attempt before its password is checked, on every counter at once; 429 when
    /// one is full.
    pub async fn reserve(&self, email: &str, ip: IpAddr) -> Result<LoginAttempt, ApiError> {
        let (failures, successes) = (self.counters(email, ip), self.success_counters(email, ip));
        let all: Vec<Counter> = failures.iter().chain(&successes).cloned().collect();
        self.windows.reserve(&all).await?;
        Ok(LoginAttempt { failures, successes })
    }

    /// Gives back what the attempt did not turn out to be. A successful login
    /// also clears the failures of its account from its IP, so a user who
    /// finally types the right password starts afresh there; the other
    /// counters keep what others did.
    pub async fn settle(&self, attempt: LoginAttempt, outcome: LoginOutcome) {
        match outcome {
            LoginOutcome::LoggedIn => {
                let account_ip = attempt.failures[0].key.as_str();
                self.windows.release(&attempt.failures, Some(account_ip)).await;
            }
            LoginOutcome::Refused => self.windows.release(&attempt.successes, None).await,
            LoginOutcome::NotJudged => {
                let all: Vec<Counter> = attempt.failures.into_iter().chain(attempt.successes).collect();
                self.windows.release(&all, None).await;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RegistrationLimits {
    /// Registrations per client IP.
    pub per_ip: u64,
    /// Registrations in total, from everywhere.
    pub total: u64,
    pub window: Duration,
}

#[derive(Clone)]
pub struct RegistrationLimiter {
    windows: Windows,
    prefix: String,
    limits: RegistrationLimits,
}

/// A registration that holds its place on the counters while it is made.
/// Dropped, it stays counted; released, it does not.
pub struct RegistrationAttempt {
    counters: Vec<Counter>,
}

impl RegistrationLimiter {
    pub fn new(redis: ConnectionManager, prefix: &str, limits: RegistrationLimits) -> RegistrationLimiter {
        RegistrationLimiter { windows: Windows { redis, window: limits.window }, prefix: prefix.to_owned(), limits }
    }

    /// Counts a registration before any work is done for it; 429 when a counter is full.
    pub async fn reserve(&self, ip: IpAddr) -> Result<RegistrationAttempt, ApiError> {
        let (prefix, ip) = (&self.prefix, client_key(ip));
        let counters = vec![
            Counter { key: format!("{prefix}register:ip:{ip}"), limit: self.limits.per_ip, name: "register_ip" },
            Counter { key: format!("{prefix}register:total"), limit: self.limits.total, name: "register_total" },
        ];
        self.windows.reserve(&counters).await?;
        Ok(RegistrationAttempt { counters })
    }

    /// The registration was not judged (the user service could not answer):
    /// it does not count. Every judged one counts, made or refused.
    pub async fn release(&self, attempt: RegistrationAttempt) {
        self.windows.release(&attempt.counters, None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_eq!(client_key(a), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_key(mapped), "192.0.2.7");
    }

    #[test]
    fn account_keys_ignore_case_and_hold_no_email() {
        assert_eq!(account_key(" Alice@Example.com"), account_key("alice@example.com"));
        assert!(!account_key("alice@example.com").contains("alice"));
    }
}
