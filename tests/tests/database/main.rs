//! Tests that need PostgreSQL only: the runtime's database machinery (migrations, the
//! connection shelf, the sweeper), the generated scenarios over the real handlers, and
//! the stack's PostgreSQL itself. Each test uses a scratch database of its own.

mod runtime_migrations;
mod runtime_shelf;
mod runtime_sweeper;
mod saga_scenarios;
mod stack_postgres;
