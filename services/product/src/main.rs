//! The product service: catalogue and stock over gRPC; reserves and releases
//! stock for the saga.

mod api;
mod saga;

use saga_generated::topology::PRODUCT_SERVICE;
use saga_proto::product::product_service_server::ProductServiceServer;
use saga_runtime::service::{self, Parts};
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/product");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run(&PRODUCT_SERVICE, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |booted, _| {
        let api = ProductServiceServer::new(api::ProductApi { pool: booted.pool.clone() });
        Parts::new(saga::ProductSaga, |router| router.add_service(api))
    })
    .await?;
    Ok(())
}
