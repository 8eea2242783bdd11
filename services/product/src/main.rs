//! The product service: catalogue and stock over gRPC; reserves and releases
//! stock for the saga.

use product_service::{MIGRATOR, api, saga};
use saga_generated::topology::{ORDER_SERVICE, PRODUCT_SERVICE};
use saga_proto::product::product_service_server::ProductServiceServer;
use saga_runtime::caught_up;
use saga_runtime::health::Component;
use saga_runtime::service::{self, Parts};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run(&PRODUCT_SERVICE, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |booted, shutdown| {
        let api = ProductServiceServer::new(api::ProductApi { pool: booted.api_pool.clone() });
        // The order service's clock, to shed reservations for orders it gave up on.
        let (owner_clock, keep_clock) =
            caught_up::of_service(booted, &ORDER_SERVICE, Component::Consumer, shutdown.clone());
        Parts::new(saga::ProductSaga { owner_clock }, |router| router.add_service(api)).with_background(keep_clock)
    })
    .await?;
    Ok(())
}
