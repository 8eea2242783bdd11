//! gRPC contracts of the order, product and user services: messages plus
//! tonic clients and servers, compiled from `proto/*.proto` at build time,
//! and the mutual TLS both sides of every call use ([`tls`]).

pub mod tls;

/// `saga.order.v1`: create, get and list orders.
pub mod order {
    tonic::include_proto!("saga.order.v1");

    impl OrderChanged {
        /// The change a transition made: its history `row` at `position` (from
        /// 1), and `order` as the transition left it (without items and history).
        pub fn after(order: Order, row: StatusChange, position: u32) -> OrderChanged {
            OrderChanged {
                order_id: order.order_id.clone(),
                status: order.status.clone(),
                resync: false,
                row: Some(row),
                position,
                total_minor: order.total_minor,
                failure_reason: order.failure_reason.clone(),
                updated_at: order.updated_at.clone(),
                order: Some(order),
            }
        }
    }

    /// The order service's rules for a `CreateOrderRequest`. The service
    /// refuses a request that breaks one with INVALID_ARGUMENT carrying every
    /// violation ([`CreateOrderRequest::refusal`]); the gateway maps that
    /// refusal to its error body field by field ([`violations_of`]) and runs
    /// the same check on a body before it spends admission on it, so the two
    /// cannot disagree.
    pub mod rules {
        /// Lines of an order.
        pub const MAX_ITEMS: usize = 100;
        /// Units of one line.
        pub const MAX_QUANTITY: i32 = 10_000;
        /// Characters of an idempotency key.
        pub const MAX_KEY_LEN: usize = 200;
    }

    /// One field of a request that breaks a rule: its path (`items[0].quantity`) and why.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Violation {
        pub field: String,
        pub message: String,
    }

    impl Violation {
        fn new(field: impl Into<String>, message: impl Into<String>) -> Violation {
            Violation { field: field.into(), message: message.into() }
        }
    }

    impl CreateOrderRequest {
        /// Every rule `items` break: 1 to [`rules::MAX_ITEMS`] lines, each a
        /// product (a UUID) listed once, 1 to [`rules::MAX_QUANTITY`] units.
        pub fn item_violations(items: &[OrderItem]) -> Vec<Violation> {
            use rules::{MAX_ITEMS, MAX_QUANTITY};
            let mut found = Vec::new();
            if items.is_empty() {
                found.push(Violation::new("items", "must contain at least one item"));
            } else if items.len() > MAX_ITEMS {
                found.push(Violation::new("items", format!("must contain at most {MAX_ITEMS} items")));
            }
            let mut seen = std::collections::HashSet::new();
            for (index, item) in items.iter().enumerate() {
                match uuid::Uuid::parse_str(&item.product_id) {
                    Ok(id) if !seen.insert(id) => {
                        found.push(Violation::new(format!("items[{index}].product_id"), "is listed twice"))
                    }
                    Ok(_) => {}
                    Err(_) => found.push(Violation::new(format!("items[{index}].product_id"), "must be a UUID")),
                }
                if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                    found.push(Violation::new(
                        format!("items[{index}].quantity"),
                        format!("must be between 1 and {MAX_QUANTITY}"),
                    ));
                }
            }
            found
        }

        /// Why `key` is not an idempotency key: 1 to [`rules::MAX_KEY_LEN`]
        /// printable ASCII characters without spaces.
        pub fn key_violation(key: &str) -> Option<Violation> {
            let valid = !key.is_empty() && key.len() <= rules::MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic());
            (!valid).then(|| {
                Violation::new(
                    "idempotency_key",
                    format!("must be 1 to {} printable ASCII characters without spaces", rules::MAX_KEY_LEN),
                )
            })
        }

        /// Every rule the request breaks (its user id is the caller's, not the client's: checked apart).
        pub fn violations(&self) -> Vec<Violation> {
            let mut found = Self::item_violations(&self.items);
            found.extend(Self::key_violation(&self.idempotency_key));
            found
        }

        /// The service's refusal of a request with `violations`: INVALID_ARGUMENT,
        /// each violation in the details (one `field<TAB>message` line each).
        pub fn refusal(violations: &[Violation]) -> tonic::Status {
            let listed: Vec<String> = violations.iter().map(|v| format!("{} {}", v.field, v.message)).collect();
            let details: String = violations.iter().map(|v| format!("{}\t{}\n", v.field, v.message)).collect();
            tonic::Status::with_details(
                tonic::Code::InvalidArgument,
                format!("the request is invalid: {}", listed.join("; ")),
                details.into_bytes().into(),
            )
        }
    }

    /// The violations a [`CreateOrderRequest::refusal`] carries; `None` for any other status.
    pub fn violations_of(status: &tonic::Status) -> Option<Vec<Violation>> {
        if status.code() != tonic::Code::InvalidArgument || status.details().is_empty() {
            return None;
        }
        let text = std::str::from_utf8(status.details()).ok()?;
        text.lines().map(|line| line.split_once('\t').map(|(field, message)| Violation::new(field, message))).collect()
    }

    impl Order {
        /// Applies `changes` to the order as `GetOrder` would return it after
        /// them; `false` when it cannot be sure to (a change without its row
        /// or its order, or one after a row it never heard of): read the
        /// order then. A change it already holds is skipped.
        pub fn apply(&mut self, changes: impl IntoIterator<Item = OrderChanged>) -> bool {
            for change in changes {
                let (Some(row), Some(mut after)) = (change.row, change.order) else { return false };
                let position = change.position as usize;
                if position <= self.history.len() {
                    continue; // the read it started from had it
                }
                if position != self.history.len() + 1 {
                    return false;
                }
                after.items = std::mem::take(&mut self.items);
                after.history = std::mem::take(&mut self.history);
                after.history.push(row);
                *self = after;
            }
            true
        }
    }
}

/// `saga.product.v1`: catalogue and stock.
pub mod product {
    tonic::include_proto!("saga.product.v1");
}

/// `saga.user.v1`: accounts, credentials and balances.
pub mod user {
    tonic::include_proto!("saga.user.v1");
}

/// Encoded `FileDescriptorSet` of all three packages, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/saga_descriptor.bin"));

#[cfg(test)]
mod tests {
    use super::order::{CreateOrderRequest, OrderItem, Violation, violations_of};

    fn item(product_id: &str, quantity: i32) -> OrderItem {
        OrderItem { product_id: product_id.to_owned(), quantity }
    }

    const P: &str = "0190d9b4-0000-7000-8000-000000000001";

    #[test]
    fn a_refusal_carries_every_violation_to_the_caller() {
        let request = CreateOrderRequest {
            user_id: String::new(),
            items: vec![item(P, 0), item(P, 10_001), item("x", 1)],
            idempotency_key: "has space".to_owned(),
        };
        let found = request.violations();
        let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["items[0].quantity", "items[1].product_id", "items[1].quantity", "items[2].product_id", "idempotency_key"]
        );
        assert_eq!(found[0].message, "must be between 1 and 10000");
        let status = CreateOrderRequest::refusal(&found);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(violations_of(&status), Some(found));
        assert_eq!(violations_of(&tonic::Status::invalid_argument("other")), None);
    }

    #[test]
    fn the_limits_are_inclusive() {
        let at_limits = CreateOrderRequest {
            user_id: String::new(),
            items: vec![item(P, 1), item("0190d9b4-0000-7000-8000-000000000002", 10_000)],
            idempotency_key: "k".repeat(200),
        };
        assert_eq!(at_limits.violations(), Vec::<Violation>::new());
        assert!(CreateOrderRequest::key_violation(&"k".repeat(201)).is_some());
        assert!(CreateOrderRequest::key_violation("").is_some());
        let many: Vec<OrderItem> = (0..101).map(|n| item(&format!("0190d9b4-0000-7000-8000-{n:012}"), 1)).collect();
        assert_eq!(CreateOrderRequest::item_violations(&many)[0].field, "items");
        assert_eq!(CreateOrderRequest::item_violations(&[])[0].message, "must contain at least one item");
    }
}
