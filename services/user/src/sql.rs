//! Every statement the user service's saga handlers send, named, so that the
//! benchmark's database bound (`saga-tools`, `bench::bounds`) runs the very text the
//! service does instead of a transcript of it.

/// The order's payment row, locked, if the service has decided it: `$1` order.
pub const PAYMENT_STATUS: &str = "SELECT status FROM payments WHERE order_id = $1 FOR UPDATE";

/// The buyer's balance, locked: `$1` user.
pub const LOCK_BALANCE: &str = "SELECT balance_minor FROM balances WHERE user_id = $1 FOR UPDATE";

/// A refused payment (its tombstone): `$1` order, `$2` user, `$3` amount, `$4` reason.
pub const REFUSE: &str =
    "INSERT INTO payments (order_id, user_id, amount_minor, status, reason) VALUES ($1, $2, $3, 'failed', $4)";

/// Takes `$2` off user `$1`'s balance; returns the balance after.
pub const DEBIT: &str = "UPDATE balances SET balance_minor = balance_minor - $2, updated_at = now() WHERE user_id = $1 RETURNING balance_minor";

/// A debit: `$1` order, `$2` user, `$3` amount.
pub const DEBITED: &str =
    "INSERT INTO payments (order_id, user_id, amount_minor, status) VALUES ($1, $2, $3, 'debited')";

/// A ledger row: `$1` entry, `$2` user, `$3` kind, `$4` amount (signed), `$5` balance
/// after, `$6` the order, as text.
pub const LEDGER: &str = "INSERT INTO ledger (entry_id, user_id, kind, amount_minor, balance_after_minor, reference, order_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $6::uuid)";

/// The tombstone a cancellation leaves when it comes first: `$1` order.
pub const CANCEL: &str = "INSERT INTO payments (order_id, status, reason) VALUES ($1, 'cancelled', 'order cancelled') \
     ON CONFLICT (order_id) DO NOTHING";

/// Marks a debit refunded, once: `$1` order; returns its user and amount.
pub const REFUND: &str = "UPDATE payments SET status = 'refunded', updated_at = now() \
     WHERE order_id = $1 AND status = 'debited' RETURNING user_id, amount_minor";

/// Gives `$2` back to user `$1`; returns the balance after.
pub const CREDIT: &str = "UPDATE balances SET balance_minor = balance_minor + $2, updated_at = now() WHERE user_id = $1 RETURNING balance_minor";
