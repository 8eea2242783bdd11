//! Generic machinery shared by every service of the saga.
//!
//! Kept free of anything saga-specific: the generated crate and the services
//! call into it, never the other way round.

pub mod db;
pub mod defaults;
pub mod service;
pub mod shutdown;
pub mod telemetry;
