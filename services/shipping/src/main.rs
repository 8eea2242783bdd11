//! The shipping service: books one parcel per paid order for the saga, and cancels it
//! when the order is given up on.
//!
//! `SHIPPING_MAX_PARCEL_UNITS` (default 50) is the largest parcel, in units; a larger
//! order is refused with `shipment.failed` (`parcel_too_large`).

use anyhow::Context as _;
use saga_generated::topology::SHIPPING_SERVICE;
use saga_runtime::service::{self, Parts};
use shipping_service::MIGRATOR;
use shipping_service::handlers::{DEFAULT_MAX_PARCEL_UNITS, ShippingSaga};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let max_parcel_units = match std::env::var("SHIPPING_MAX_PARCEL_UNITS") {
        Ok(text) => text
            .parse::<i64>()
            .ok()
            .filter(|units| *units > 0)
            .with_context(|| format!("SHIPPING_MAX_PARCEL_UNITS={text:?} is not a positive number of units"))?,
        Err(_) => DEFAULT_MAX_PARCEL_UNITS,
    };
    service::run(&SHIPPING_SERVICE, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |_booted, _shutdown| {
        Parts::new(ShippingSaga { max_parcel_units }, |router| router)
    })
    .await?;
    Ok(())
}
