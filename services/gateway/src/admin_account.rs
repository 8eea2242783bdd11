//! The first admin: an account `ADMIN_EMAIL` / `ADMIN_PASSWORD` with the
//! admin role that the gateway ensures at start-up, and what `/readyz` says
//! about it.
//!
//! The built-in password is printed in the README for the local stack, so a
//! gateway that anyone else can reach must not run with it: off loopback it
//! refuses to start with a known placeholder unless told it is a
//! development machine. An account under the admin email that is not the
//! admin's (another password, or no admin role) keeps the gateway unready,
//! with the reason, until it is put right.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga_proto::user as user_pb;

use crate::balance::Idempotence;
use crate::config::{Config, LOCAL_ADMIN_PASSWORD};
use crate::state::AppState;

/// Passwords anyone can read: the local stack's, and the Kubernetes
/// manifests' placeholder (deploy/kubernetes/config.yaml).
const PLACEHOLDER_PASSWORDS: [&str; 2] = [LOCAL_ADMIN_PASSWORD, "change-me"];

/// How often an admin account found in conflict is looked at again.
const RECHECK_CONFLICT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error(
    "ADMIN_PASSWORD is a placeholder everyone knows, and the gateway listens on {listen}, not on loopback: \
     set a password of your own (or, on a development machine, --allow-default-admin / ALLOW_DEFAULT_ADMIN=true)"
)]
pub struct PlaceholderPassword {
    listen: std::net::SocketAddr,
}

/// Refuses a placeholder admin password on an address other machines reach.
pub fn refuse_placeholder(config: &Config) -> Result<(), PlaceholderPassword> {
    let placeholder = PLACEHOLDER_PASSWORDS.contains(&config.admin_password.as_str());
    if placeholder && !config.listen.ip().is_loopback() && !config.allow_default_admin {
        return Err(PlaceholderPassword { listen: config.listen });
    }
    Ok(())
}

/// What is known of the admin account: `ok`, `pending`, or why it is not usable.
#[derive(Clone, Default)]
pub struct AdminAccount(Arc<Mutex<Option<Result<(), String>>>>);

impl AdminAccount {
    /// `ok`, `pending` (not yet known), or the reason the account is not the admin's.
    pub fn check(&self) -> String {
        match &*self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            None => "pending".to_owned(),
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(reason)) => reason.clone(),
        }
    }

    fn set(&self, found: Result<(), String>) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(found);
    }
}

/// Makes sure the configured admin account exists, retrying until the user
/// service answers. An account in conflict is looked at again every 30 s, so
/// that putting it right (or removing it) makes the gateway ready.
pub async fn ensure(state: AppState) {
    let mut delay = Duration::from_millis(200);
    loop {
        match ensure_once(&state).await {
            Some(Ok(())) => {
                state.admin_account.set(Ok(()));
                return;
            }
            Some(Err(reason)) => {
                tracing::error!(email = %state.config.admin_email, %reason, "the admin account is not usable");
                state.admin_account.set(Err(reason));
                tokio::time::sleep(RECHECK_CONFLICT).await;
            }
            None => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One try: `None` when the user service could not answer.
async fn ensure_once(state: &AppState) -> Option<Result<(), String>> {
    let config = &state.config;
    let request = user_pb::CreateUserRequest {
        email: config.admin_email.trim().to_lowercase(),
        password: config.admin_password.clone(),
        display_name: "Administrator".to_owned(),
        role: user_pb::Role::Admin as i32,
        initial_balance_minor: 0,
    };
    match state.backends.user_call(Idempotence::Once, &request, |mut c, r| async move { c.create_user(r).await }).await
    {
        Ok(_) => {
            tracing::info!(email = %config.admin_email, "admin account created");
            Some(Ok(()))
        }
        Err(status) if status.code() == tonic::Code::AlreadyExists => check_existing(state).await,
        // Retrying cannot fix these (a malformed email or password).
        Err(status) if matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::Unimplemented) => {
            Some(Err(format!("cannot create the admin account: {}", status.message())))
        }
        Err(status) => {
            tracing::warn!(%status, "cannot ensure the admin account yet; retrying");
            None
        }
    }
}

/// An existing account under the admin email: the admin's only if the
/// configured password opens it and it has the admin role.
async fn check_existing(state: &AppState) -> Option<Result<(), String>> {
    let request = user_pb::VerifyCredentialsRequest {
        email: state.config.admin_email.trim().to_lowercase(),
        password: state.config.admin_password.clone(),
    };
    let reply = state
        .backends
        .user_call(Idempotence::Idempotent, &request, |mut c, r| async move { c.verify_credentials(r).await });
    match reply.await {
        Ok(reply) if reply.get_ref().role() == user_pb::Role::Admin => {
            tracing::info!(email = %state.config.admin_email, "admin account exists");
            Some(Ok(()))
        }
        Ok(_) => Some(Err("the admin email belongs to an account without the admin role".to_owned())),
        Err(status) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::NotFound) => {
            Some(Err("the admin email belongs to an account with another password".to_owned()))
        }
        Err(status) => {
            tracing::warn!(%status, "cannot check the admin account yet; retrying");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from([&["gateway"], args].concat()).expect("valid flags")
    }

    #[test]
    fn the_built_in_password_is_refused_off_loopback_only() {
        assert!(refuse_placeholder(&config(&["--listen", "127.0.0.1:8080"])).is_ok());
        assert!(refuse_placeholder(&config(&["--listen", "[::1]:8080"])).is_ok());
        let error = refuse_placeholder(&config(&["--listen", "0.0.0.0:8080"])).expect_err("refused");
        assert!(error.to_string().contains("0.0.0.0:8080"), "{error}");
        let placeholder = ["--listen", "10.0.0.5:8080", "--admin-password", "change-me"];
        assert!(refuse_placeholder(&config(&placeholder)).is_err());
        let own = ["--listen", "0.0.0.0:8080", "--admin-password", "a password of our own"];
        assert!(refuse_placeholder(&config(&own)).is_ok());
        let development = ["--listen", "0.0.0.0:8080", "--allow-default-admin"];
        assert!(refuse_placeholder(&config(&development)).is_ok());
    }
}
