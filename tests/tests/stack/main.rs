//! Tests of the whole running stack: the gateway, the services, the console and the saga
//! end to end, and the stack commands. Tests that stop, kill or reconfigure a service do it
//! to a private copy of their own (`saga_tests::saga::PrivateSaga`, `PrivateGateway`), so
//! the tests of this binary can run side by side.

mod console;
mod console_tls;
mod gateway_admission;
mod gateway_auth;
mod gateway_contract;
mod gateway_docs;
mod gateway_flow;
mod gateway_push;
mod gateway_resilience;
mod gateway_schemathesis;
mod gateway_validation;
mod grpc_tls;
mod metrics;
mod order_feed;
mod saga_e2e;
mod saga_failures;
mod saga_trace;
mod secrets;
mod service_health;
mod spec_evolution;
mod stack_redis;
mod stack_services;
mod tracing_otlp;
mod wire_fastavro;
mod xtask_stack;
