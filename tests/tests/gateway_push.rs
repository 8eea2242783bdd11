//! The order event stream is pushed, not polled: a gateway whose streams
//! would read their order only once an hour (`SSE_POLL_MS` and
//! `SSE_RECHECK_MS`) still shows every status of a saga and ends its stream,
//! which only the order service's change feed (`WatchOrders`, fed by each
//! instance as its transitions commit) can have made it do; and what it sent from the
//! feed's changes is what a read of the order shows.

use std::time::Duration;

use reqwest::StatusCode;
use saga_tests::http::PrivateGateway;
use saga_tests::{stack, unique};
use serde_json::json;

/// Generous: the saga crosses Kafka twice; never a performance assertion.
const SAGA_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn an_event_stream_follows_its_order_by_the_change_feed_alone() {
    let stack = stack();
    let hour = "3600000";
    let gateway = PrivateGateway::start(&stack, &[("SSE_POLL_MS", hour), ("SSE_RECHECK_MS", hour)]).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 700, 100).await;
    api.credit(&admin, &customer_id, 10_000).await;
    // One order completes, one fails payment (14,000 is more than the balance left).
    let sagas = [
        (1, ["created", "inventory_reserved", "completed"]),
        (20, ["created", "inventory_reserved", "payment_failed"]),
    ];
    for (quantity, expected) in sagas {
        let placed =
            api.place_order(&customer, &unique("key"), &json!([{ "product_id": product, "quantity": quantity }])).await;
        assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
        let expected_status = expected[2];
        let order_id = placed.body["id"].as_str().expect("order id").to_owned();
        let events = api.order_events(&customer, &order_id, SAGA_DEADLINE).await;
        let statuses: Vec<&str> =
            events.iter().filter(|(name, _)| name == "status").filter_map(|(_, d)| d["to_status"].as_str()).collect();
        assert_eq!(statuses, expected, "events: {events:?}");
        let (last, order) = events.last().expect("an end event");
        assert_eq!((last.as_str(), order["status"].as_str()), ("end", Some(expected_status)), "{events:?}");
        // The streams built the final order from the feed's changes, without
        // reading it: it must be what a read shows.
        let read = api.get(&format!("/api/v1/orders/{order_id}"), Some(&customer)).await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(order, &read.body, "the `end` event against GET /orders/{{id}}");
        let rows: Vec<&serde_json::Value> =
            events.iter().filter(|(name, _)| name == "status").map(|(_, d)| d).collect();
        let history: Vec<&serde_json::Value> = read.body["history"].as_array().expect("history").iter().collect();
        assert_eq!(rows, history, "each `status` event is its history row as a read shows it");
    }
}
