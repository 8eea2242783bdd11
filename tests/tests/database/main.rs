//! Tests that need PostgreSQL only: the runtime's database machinery (migrations, the
//! connection shelf, the sweeper), the order store's committed query descriptions, the
//! generated scenarios over the real handlers, and the stack's PostgreSQL itself. Each test uses a scratch database of its own.

mod order_store_offline;
mod runtime_migrations;
mod runtime_shelf;
mod runtime_sweeper;
mod saga_scenarios;
mod stack_postgres;
