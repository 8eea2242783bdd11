//! Generic machinery shared by every service of the saga.
//!
//! Kept free of anything saga-specific: the generated crate and the services
//! call into it, never the other way round.

pub mod consumer;
pub mod db;
pub mod defaults;
pub mod grpc;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod participant;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
