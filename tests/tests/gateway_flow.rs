//! The whole journey through the REST gateway against the real stack:
//! register -> login -> admin creates a product and credits the user ->
//! order -> the SSE stream shows `completed`; and the Idempotency-Key.

use std::time::Duration;

use reqwest::StatusCode;
use saga_tests::http::Api;
use saga_tests::{stack, unique};
use serde_json::json;

/// Generous: the saga crosses Kafka twice; never a performance assertion.
const SAGA_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn order_completes_and_the_event_stream_shows_it() {
    let api = Api::of_stack(&stack());
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 1_250, 10).await;
    api.credit(&admin, &customer_id, 10_000).await;

    let me = api.get("/api/v1/me", Some(&customer)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["balance_minor"], 10_000);
    assert_eq!(me.body["role"], "customer");

    let placed = api.place_order(&customer, &unique("key"), &json!([{ "product_id": product, "quantity": 2 }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order_id = placed.body["id"].as_str().expect("order id").to_owned();
    assert_eq!(placed.body["user_id"], customer_id.as_str());

    let events = api.order_events(&customer, &order_id, SAGA_DEADLINE).await;
    let statuses: Vec<&str> =
        events.iter().filter(|(name, _)| name == "status").filter_map(|(_, d)| d["to_status"].as_str()).collect();
    assert_eq!(statuses, ["created", "inventory_reserved", "completed"], "events: {events:?}");
    let (last, order) = events.last().expect("an end event");
    assert_eq!(last, "end");
    assert_eq!(order["status"], "completed");
    assert_eq!(order["total_minor"], 2_500);

    let fetched = api.get(&format!("/api/v1/orders/{order_id}"), Some(&customer)).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["status"], "completed");
    assert_eq!(fetched.body["history"].as_array().map(Vec::len), Some(3), "{:?}", fetched.body);

    let mine = api.get("/api/v1/orders", Some(&customer)).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["items"][0]["id"], order_id.as_str(), "{:?}", mine.body);

    let me = api.get("/api/v1/me", Some(&customer)).await;
    assert_eq!(me.body["balance_minor"], 10_000 - 2_500);
    let stocked = api.get(&format!("/api/v1/products/{product}"), None).await;
    assert_eq!(stocked.body["stock_available"], 8, "{:?}", stocked.body);
}

#[tokio::test]
async fn idempotency_key_gives_the_same_order_and_rejects_another_body() {
    let api = Api::of_stack(&stack());
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 100, 10).await;
    api.credit(&admin, &customer_id, 1_000).await;
    let key = unique("key");
    let items = json!([{ "product_id": product, "quantity": 1 }]);

    let first = api.place_order(&customer, &key, &items).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = api.place_order(&customer, &key, &items).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);

    let other = api.place_order(&customer, &key, &json!([{ "product_id": product, "quantity": 2 }])).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{:?}", other.body);
    assert_eq!(other.body["code"], "conflict");

    // Keys are per user: another customer's identical key is a new order.
    let (someone, _) = api.customer().await;
    let theirs = api.place_order(&someone, &key, &items).await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{:?}", theirs.body);
    assert_ne!(theirs.body["id"], first.body["id"]);

    // One order, one saga: the customer's list holds exactly one order.
    let mine = api.get("/api/v1/orders", Some(&customer)).await;
    assert_eq!(mine.body["items"].as_array().map(Vec::len), Some(1), "{:?}", mine.body);
}
