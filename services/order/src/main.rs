//! The order service: places orders (the saga starts here), keeps each
//! order's status and history from the saga's events, and resolves sagas
//! stuck past the spec's deadlines.

use std::time::Duration;

use clap::Parser;
use order_service::{MIGRATOR, api, saga};
use saga_generated::OrderStatus;
use saga_generated::owner::OrderTimeouts;
use saga_generated::topology::ORDER_SERVICE;
use saga_proto::order::order_service_server::OrderServiceServer;
use saga_runtime::service::{self, Parts};
use saga_runtime::sweeper;
/// Order-service settings beyond the common ones (read from the environment only).
#[derive(Debug, Clone, Parser)]
struct OrderSettings {
    /// Scales every timeout of the spec, in percent (tests shorten them; 100 = as the spec says).
    #[arg(long, env = "ORDER_TIMEOUT_SCALE_PERCENT", default_value_t = 100)]
    timeout_scale_percent: u32,
    /// How often the timeout sweeper looks for overdue sagas, in milliseconds.
    #[arg(long, env = "ORDER_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    sweep_interval_ms: u64,
    /// How long after the caught-up clock passed a deadline the saga times
    /// out, in milliseconds: time for a reply published just before it.
    #[arg(long, env = "ORDER_TIMEOUT_GRACE_MS", default_value_t = 1000)]
    timeout_grace_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The chassis parses the common command line; these come from the environment.
    let settings = OrderSettings::parse_from(["order-service"]);
    let saga = saga::OrderSaga::new(saga::Timeouts { scale_percent: settings.timeout_scale_percent });
    let timing = sweeper::SweepTiming {
        interval: Duration::from_millis(settings.sweep_interval_ms.max(10)),
        grace: Duration::from_millis(settings.timeout_grace_ms),
    };
    service::run(&ORDER_SERVICE, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |booted, shutdown| {
        let (clock, sweeper) =
            sweeper::for_service(booted, &ORDER_SERVICE, OrderTimeouts(saga.clone()), timing, shutdown.clone());
        let api = OrderServiceServer::new(api::OrderApi {
            pool: booted.api_pool.clone(),
            saga: saga.clone(),
            clock,
            shutdown: shutdown.clone(),
        });
        let migrations = saga::migrate_statuses(booted.pool.clone(), saga.timeouts, OrderStatus::MIGRATIONS);
        Parts::new(saga, |router| router.add_service(api))
            .with_startup(async move { migrations.await.map(drop).map_err(|e| format!("status migrations: {e}")) })
            .with_background(sweeper)
    })
    .await?;
    Ok(())
}
