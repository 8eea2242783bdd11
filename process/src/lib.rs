//! What every process of the platform does the same way, and nothing
//! heavier: the gateway links this crate without the database and Kafka
//! clients the saga runtime needs.
//!
//! Knows no saga: service names come from the generated topology, each
//! caller passes its own.

pub mod http;
pub mod local;
pub mod metrics;
pub mod redact;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
