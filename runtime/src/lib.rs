//! Generic machinery shared by every service of the saga.
//!
//! Kept free of anything saga-specific: the generated crate and the services
//! call into it, never the other way round. What the gateway shares too
//! (logging, trace context, shutdown) is in the lighter `saga-process`.

pub mod callers;
pub mod caught_up;
pub mod consumer;
pub mod db;
pub mod grpc;
pub mod health;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod participant;
pub mod schema_registry;
pub mod service;
pub mod sweeper;
