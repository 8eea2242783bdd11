//! The shipping service: books one parcel per paid order for the saga, and cancels it
//! when the order is given up on.

use clap::Parser;
use saga_generated::topology::SHIPPING_SERVICE;
use saga_runtime::service::{self, Parts};
use shipping_service::MIGRATOR;
use shipping_service::handlers::{DEFAULT_MAX_PARCEL_UNITS, ShippingSaga};

/// Shipping-service settings beyond the common ones (read from the environment only).
#[derive(Debug, Clone, Parser)]
struct ShippingSettings {
    /// The largest parcel, in units (the sum of an order's quantities); a larger
    /// order is refused with `shipment.failed` (`parcel_too_large`).
    #[arg(long, env = "SHIPPING_MAX_PARCEL_UNITS", default_value_t = DEFAULT_MAX_PARCEL_UNITS,
          value_parser = clap::value_parser!(i64).range(1..))]
    max_parcel_units: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The chassis parses the common command line; these come from the environment.
    let settings = ShippingSettings::parse_from(["shipping-service"]);
    let saga = ShippingSaga { max_parcel_units: settings.max_parcel_units };
    service::run(&SHIPPING_SERVICE, &MIGRATOR, saga_proto::FILE_DESCRIPTOR_SET, |_booted, _shutdown| {
        Parts::new(saga, |router| router)
    })
    .await?;
    Ok(())
}
