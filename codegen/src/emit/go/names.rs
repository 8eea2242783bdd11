//! Every Go name the generator gives, in one place: exported identifiers in Go's style
//! (`order_id` -> `OrderID`), the package, the files.

use crate::ir::Saga;

/// Words Go writes in capitals wherever they appear in a name (Go's own convention, as in
/// `golint`'s list), so `order_id` becomes `OrderID`, not `OrderId`.
const INITIALISMS: &[&str] = &["api", "dlq", "grpc", "http", "id", "json", "sql", "url", "uuid"];

/// An exported Go identifier from a spec name: `payment.completed` -> `PaymentCompleted`,
/// `user_id` -> `UserID`, `SagaContext` -> `SagaContext`.
pub(super) fn exported(name: &str) -> String {
    name.split(['.', '_', '-', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            if INITIALISMS.contains(&w.to_ascii_lowercase().as_str()) {
                w.to_ascii_uppercase()
            } else {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            }
        })
        .collect()
}

/// An unexported name from an exported one: `Shipping` -> `shipping`, `OrderID` ->
/// `orderID`, `ID` -> `id` (a leading initialism lowers as a whole).
pub(super) fn unexported(name: &str) -> String {
    let upper = name.chars().take_while(|c| c.is_ascii_uppercase()).count();
    let cut = if upper > 1 && upper < name.len() { upper - 1 } else { upper.max(1).min(name.len()) };
    name[..cut].to_ascii_lowercase() + &name[cut..]
}

/// The package of a saga: its name in lower case without separators (`order_fulfillment`
/// -> `orderfulfillment`), as Go names packages.
pub(super) fn package(saga: &Saga) -> String {
    saga.name.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// The constant of a topic's name: `order-events` -> `TopicOrderEvents`.
pub(super) fn topic(name: &str) -> String {
    format!("Topic{}", exported(name))
}

/// The constant of an event's type name: `order.created` -> `EventOrderCreated`.
pub(super) fn event_type(name: &str) -> String {
    format!("Event{}", exported(name))
}

/// The constant of an enum's symbol: `StockFailure`, `insufficient_stock` ->
/// `StockFailureInsufficientStock`.
pub(super) fn symbol(enum_name: &str, symbol: &str) -> String {
    format!("{}{}", exported(enum_name), exported(symbol))
}

/// The type of the status owner's statuses: owner `order` -> `OrderStatus`.
pub(super) fn status_type(owner: &str) -> String {
    format!("{}Status", exported(owner))
}

/// The constant of a status: `OrderStatus`, `inventory_reserved` -> `OrderStatusInventoryReserved`.
pub(super) fn status(owner: &str, state: &str) -> String {
    format!("{}{}", status_type(owner), exported(state))
}

/// The variable holding the status machine's tables: owner `order` -> `OrderMachine`.
pub(super) fn machine(owner: &str) -> String {
    format!("{}Machine", exported(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_go_style() {
        assert_eq!(exported("order_id"), "OrderID");
        assert_eq!(exported("payment.completed"), "PaymentCompleted");
        assert_eq!(exported("SagaContext"), "SagaContext");
        assert_eq!(exported("dlq_url"), "DLQURL");
        assert_eq!(topic("order-events"), "TopicOrderEvents");
        assert_eq!(unexported("OrderID"), "orderID");
        assert_eq!(unexported("Shipping"), "shipping");
        assert_eq!(unexported("ID"), "id");
        assert_eq!(unexported("URLPath"), "urlPath");
        assert_eq!(symbol("StockFailure", "insufficient_stock"), "StockFailureInsufficientStock");
        assert_eq!(status("order", "inventory_reserved"), "OrderStatusInventoryReserved");
        assert_eq!(machine("order"), "OrderMachine");
    }
}
