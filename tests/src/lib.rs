//! Shared helpers of the integration and end-to-end tests.
//!
//! The tests talk to a real stack: the one `cargo xtask test` starts (it
//! exports the `SAGA_*` variables that describe it), or, when run with plain
//! `cargo test`, the development stack of `cargo xtask up`.

pub mod http;

use xtask::stack::StackConfig;

/// The stack under test.
pub fn stack() -> StackConfig {
    match StackConfig::from_env() {
        Ok(config) => config,
        Err(error) => panic!("invalid stack configuration in the environment: {error}"),
    }
}

/// A name no other test run uses, for topics, groups and keys.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
