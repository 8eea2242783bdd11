//! Project automation behind `cargo xtask`: the local stack (PostgreSQL,
//! Redis, Kafka and the services), the test runner and the code generator.
//!
//! A library as well as a binary so that tests can ask the same
//! [`stack::StackConfig`] where the running stack is.

pub mod bench;
pub mod chaos;
pub mod dlq;
pub mod r#gen;
pub mod stack;
pub mod trace;
