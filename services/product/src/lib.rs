//! The product service as a library: its gRPC API and its part of the saga (reserve
//! and release stock), so that tests can drive them against a real database. The
//! binary (`main.rs`) wires them into the service chassis.

pub mod api;
pub mod saga;
pub mod sql;

use sqlx::migrate::Migrator;

/// The service's own tables (the runtime's come first, see `saga_runtime::db::migrate`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/product");
