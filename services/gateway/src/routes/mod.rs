//! The REST API under `/api/v1`, plus health and docs.

pub mod admin;
pub mod auth;
pub mod console;
pub mod health;
pub mod orders;
pub mod products;
