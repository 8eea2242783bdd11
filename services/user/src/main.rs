//! The user service: accounts, credentials and balances over gRPC; debits and
//! refunds orders for the saga.

use saga_generated::topology::USER_SERVICE;
use saga_proto::user::user_service_server::UserServiceServer;
use saga_runtime::service::{self, Parts};
use user_service::{MIGRATOR, api, saga};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::run(&USER_SERVICE, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |booted, _| {
        let api = UserServiceServer::new(api::UserApi { pool: booted.api_pool.clone() });
        Parts::new(saga::UserSaga, |router| router.add_service(api))
    })
    .await?;
    Ok(())
}
