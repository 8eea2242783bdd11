//! Every statement the shipping service's saga handlers send, named, so that the
//! benchmark's database bound (`saga-tools`, `bench::bounds`) runs the very text the
//! service does instead of a transcript of it.

/// A refused parcel, unless the order is known: `$1` order, `$2` units, `$3` reason.
pub const REFUSE: &str = "INSERT INTO shipments (order_id, status, units, reason) VALUES ($1, 'failed', $2, $3) \
     ON CONFLICT (order_id) DO NOTHING";

/// A booked parcel, unless the order is known: `$1` order, `$2` units (null: not
/// weighed), `$3` tracking number.
pub const BOOK: &str = "INSERT INTO shipments (order_id, status, units, tracking) VALUES ($1, 'booked', $2, $3) \
     ON CONFLICT (order_id) DO NOTHING";

/// The tombstone a cancellation leaves when it comes before the payment: `$1` order.
pub const TOMBSTONE: &str = "INSERT INTO shipments (order_id, status, units, reason, cancelled_at) \
     VALUES ($1, 'cancelled', 0, 'cancelled before payment', now()) ON CONFLICT (order_id) DO NOTHING";

/// Cancels a booked parcel, once: `$1` order.
pub const CANCEL: &str =
    "UPDATE shipments SET status = 'cancelled', cancelled_at = now() WHERE order_id = $1 AND status = 'booked'";
