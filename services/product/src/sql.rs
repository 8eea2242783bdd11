//! Every statement the product service's saga handlers send, named, so that the
//! benchmark's database bound (`saga-tools`, `bench::bounds`) runs the very text the
//! service does instead of a transcript of it.

/// The order's reservation row, if the service has seen the order: `$1` order.
pub const RESERVATION_STATUS: &str = "SELECT status FROM reservations WHERE order_id = $1";

/// The stock rows of the order's products, locked in product order (concurrent
/// reservations cannot deadlock), with their prices: `$1` product ids.
pub const LOCK_STOCK: &str = "SELECT s.product_id, s.available, p.price_minor FROM stock s JOIN products p USING (product_id) \
     WHERE s.product_id = ANY($1) ORDER BY s.product_id FOR UPDATE OF s";

/// A refused reservation (its tombstone): `$1` order, `$2` user, `$3` reason.
pub const REJECT: &str = "INSERT INTO reservations (order_id, user_id, status, reason) VALUES ($1, $2, 'rejected', $3)";

/// A reservation: `$1` order, `$2` user, `$3` its total.
pub const RESERVE: &str =
    "INSERT INTO reservations (order_id, user_id, status, total_minor) VALUES ($1, $2, 'reserved', $3)";

/// Moves `$2` units of product `$1` from available to reserved.
pub const TAKE_STOCK: &str =
    "UPDATE stock SET available = available - $2, reserved = reserved + $2, updated_at = now() WHERE product_id = $1";

/// A line of a reservation: `$1` order, `$2` product, `$3` quantity, `$4` unit price.
pub const RESERVE_ITEM: &str =
    "INSERT INTO reservation_items (order_id, product_id, quantity, unit_price_minor) VALUES ($1, $2, $3, $4)";

/// The tombstone a cancellation leaves when it comes first: `$1` order, `$2` nil user.
pub const CANCEL: &str = "INSERT INTO reservations (order_id, user_id, status, reason) \
     VALUES ($1, $2, 'cancelled', 'cancelled') ON CONFLICT (order_id) DO NOTHING";

/// Marks a live reservation released, once: `$1` order.
pub const RELEASE: &str = "UPDATE reservations SET status = 'released', released_at = now() \
     WHERE order_id = $1 AND status = 'reserved' RETURNING order_id";

/// The lines of a reservation: `$1` order.
pub const RESERVED_ITEMS: &str =
    "SELECT product_id, quantity FROM reservation_items WHERE order_id = $1 ORDER BY product_id";

/// Gives `$2` units of product `$1` back.
pub const GIVE_BACK_STOCK: &str =
    "UPDATE stock SET available = available + $2, reserved = reserved - $2, updated_at = now() WHERE product_id = $1";
