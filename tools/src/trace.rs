//! `cargo xtask saga trace <order-id>`: one saga's timeline, read by `saga_operator::trace`,
//! printed for a terminal (coloured when stdout is one) or as JSON (`--json`), which also
//! carries each event's bytes, so a scenario can replay the saga.

use std::io::IsTerminal;

use uuid::Uuid;

use saga_stack::StackConfig;

use saga_operator::trace::{collect, render};

/// `cargo xtask saga ...`: questions about one saga.
#[derive(Debug, clap::Subcommand)]
pub enum SagaCommand {
    /// One saga's timeline across the services: status changes, events published and
    /// consumed (topic, partition, offset), parked and dead-lettered messages, the trace id,
    /// and what the status machine allows next.
    Trace {
        /// The order id (the saga key).
        order_id: Uuid,
        /// Print JSON for scripts (with each event's bytes, for a scenario to replay).
        #[arg(long)]
        json: bool,
        /// Topic prefix of the services (their TOPIC_PREFIX).
        #[arg(long, env = "TOPIC_PREFIX", default_value = "")]
        prefix: String,
    },
}

/// `cargo xtask saga trace`: prints the trace, as JSON or for a terminal.
pub async fn run(config: &StackConfig, order_id: Uuid, json: bool, prefix: &str) -> anyhow::Result<()> {
    let trace = collect(&config.sources(prefix), order_id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", render(&trace, std::io::stdout().is_terminal()));
    }
    Ok(())
}
