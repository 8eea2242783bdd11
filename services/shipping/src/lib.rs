// Written by `cargo xtask new service shipping`: this file is yours to edit.

//! The service as a library, so tests can drive its handlers against a real database.
pub mod handlers;
pub mod sql;

use sqlx::migrate::Migrator;

/// The service's own tables (the runtime's come first, see `saga_runtime::db::migrate`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/shipping");
