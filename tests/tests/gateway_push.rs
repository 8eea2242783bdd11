//! The order event stream is pushed, not polled: a gateway whose streams
//! would read their order only once an hour (`SSE_POLL_MS` and
//! `SSE_RECHECK_MS`) still shows every status of a saga and ends its stream,
//! which only the order service's change feed (`WatchOrders`, fed by each
//! instance as its transitions commit) can have made it do; and what it sent from the
//! feed's changes is what a read of the order shows.

mod saga_common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use saga_common::PrivateSaga;
use saga_tests::http::{Api, PrivateGateway};
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
        follow_to_the_end(api, &customer, &product, quantity, expected).await;
    }
}

/// Places an order of `quantity` and follows its event stream to the end:
/// its `status` events are `expected` and each is its history row as a read
/// shows it, and the `end` event is the order as a read shows it.
async fn follow_to_the_end(api: &Api, customer: &str, product: &str, quantity: i32, expected: [&str; 3]) -> String {
    let placed =
        api.place_order(customer, &unique("key"), &json!([{ "product_id": product, "quantity": quantity }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let expected_status = expected[2];
    let order_id = placed.body["id"].as_str().expect("order id").to_owned();
    let events = api.order_events(customer, &order_id, SAGA_DEADLINE).await;
    let statuses: Vec<&str> =
        events.iter().filter(|(name, _)| name == "status").filter_map(|(_, d)| d["to_status"].as_str()).collect();
    assert_eq!(statuses, expected, "events: {events:?}");
    let (last, order) = events.last().expect("an end event");
    assert_eq!((last.as_str(), order["status"].as_str()), ("end", Some(expected_status)), "{events:?}");
    // The streams built the final order from the feed's changes, without
    // reading it: it must be what a read shows.
    let read = api.get(&format!("/api/v1/orders/{order_id}"), Some(customer)).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(order, &read.body, "the `end` event against GET /orders/{{id}}");
    let rows: Vec<&serde_json::Value> = events.iter().filter(|(name, _)| name == "status").map(|(_, d)| d).collect();
    let history: Vec<&serde_json::Value> = read.body["history"].as_array().expect("history").iter().collect();
    assert_eq!(rows, history, "each `status` event is its history row as a read shows it");
    order_id
}

/// The sagas (by trace id) an order instance's log shows moving into each status.
fn transitions(log: &Path) -> HashMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(log).expect("the instance's log");
    let mut moved: HashMap<String, BTreeSet<String>> = HashMap::new();
    for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if line["message"] != "order status changed" {
            continue;
        }
        let trace = line["spans"].as_array().into_iter().flatten().find_map(|s| s["trace_id"].as_str());
        if let (Some(trace), Some(to)) = (trace, line["to"].as_str()) {
            moved.entry(to.to_owned()).or_default().insert(trace.to_owned());
        }
    }
    moved
}

/// Two order instances: each tells only of the changes it commits itself,
/// and a saga created by one moves on in whichever instance's consumer owns
/// its partition. A gateway that follows every instance still streams each
/// saga to its end with no poll and no re-read; the instances' logs show
/// sagas that one instance created and the other moved on.
#[tokio::test]
async fn an_event_stream_hears_the_changes_of_every_order_instance() {
    let stack = stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let (second, second_log) = saga.start_replica(&stack, "order").await;
    let orders = format!("{},{second}", saga.url("order"));
    let (product_url, user_url) = (saga.url("product"), saga.url("user"));
    let hour = "3600000";
    let gateway = PrivateGateway::start(
        &stack,
        &[
            ("ORDER_GRPC_URL", &orders),
            ("PRODUCT_GRPC_URL", &product_url),
            ("USER_GRPC_URL", &user_url),
            ("SSE_POLL_MS", hour),
            ("SSE_RECHECK_MS", hour),
        ],
    )
    .await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 100, 1_000).await;
    api.credit(&admin, &customer_id, 1_000_000).await;
    for _ in 0..12 {
        follow_to_the_end(api, &customer, &product, 1, ["created", "inventory_reserved", "completed"]).await;
    }
    let (first, second) = (transitions(&saga.log_of("order")), transitions(&second_log));
    let crossed = |a: &HashMap<String, BTreeSet<String>>, b: &HashMap<String, BTreeSet<String>>| {
        a.get("created")
            .into_iter()
            .flatten()
            .filter(|t| b.get("completed").is_some_and(|done| done.contains(*t)))
            .count()
    };
    assert!(
        crossed(&first, &second) + crossed(&second, &first) > 0,
        "no saga was created by one instance and completed by the other: {first:?} / {second:?}"
    );
    drop(gateway);
    saga.shutdown(&stack).await;
}
