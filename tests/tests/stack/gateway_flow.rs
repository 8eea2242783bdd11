//! The whole journey through the REST gateway against the real stack:
//! register -> login -> admin creates a product and credits the user ->
//! order -> the SSE stream shows `completed`; the Idempotency-Key; and the
//! client's `traceparent` as the trace of every event of its saga.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use saga_tests::http::Api;
use saga_tests::saga::{COMPLETED_PATH, header, messages_with_keys};
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
    assert_eq!(statuses, COMPLETED_PATH, "events: {events:?}");
    let (last, order) = events.last().expect("an end event");
    assert_eq!(last, "end");
    assert_eq!(order["status"], "completed");
    assert_eq!(order["total_minor"], 2_500);

    let fetched = api.get(&format!("/api/v1/orders/{order_id}"), Some(&customer)).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["status"], "completed");
    assert_eq!(fetched.body["history"].as_array().map(Vec::len), Some(4), "{:?}", fetched.body);

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

#[tokio::test]
async fn the_clients_traceparent_is_the_trace_of_every_saga_event() {
    let stack = stack();
    let api = Api::of_stack(&stack);
    let admin = api.admin_token().await;
    let (customer, customer_id) = api.customer().await;
    let product = api.create_product(&admin, 500, 10).await;
    api.credit(&admin, &customer_id, 10_000).await;
    let items = json!({ "items": [{ "product_id": product, "quantity": 1 }] });
    let order = |traceparent: &'static str| {
        let (api, customer, items) = (&api, &customer, &items);
        async move {
            let key = unique("key");
            let headers = [("Idempotency-Key", key.as_str()), ("traceparent", traceparent)];
            let placed = api.call(Method::POST, "/api/v1/orders", Some(customer), &headers, Some(items)).await;
            assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
            let order_id = placed.body["id"].as_str().expect("order id").to_owned();
            let events = api.order_events(customer, &order_id, SAGA_DEADLINE).await;
            assert_eq!(events.last().map(|(e, _)| e.as_str()), Some("end"), "{events:?}");
            order_id
        }
    };
    let client_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let traced = order(client_trace).await;
    let malformed = order("00-not-a-trace-01").await;

    let brokers = stack.kafka_brokers();
    for topic in ["order-events", "inventory-events", "payment-events"] {
        let messages = messages_with_keys(&brokers, topic, &[&traced, &malformed]);
        for message in &messages {
            let key = String::from_utf8_lossy(rdkafka::Message::key(message).unwrap_or_default()).into_owned();
            let traceparent = header(message, "traceparent").unwrap_or_default();
            if key == traced {
                assert_eq!(traceparent, client_trace, "{topic}: {:?}", header(message, "event-type"));
            } else {
                // A malformed one is replaced by a fresh trace, never passed on.
                assert!(saga_process::trace::is_valid(&traceparent), "{topic}: {traceparent:?}");
            }
        }
        if topic == "order-events" {
            assert!(messages.len() >= 4, "order.created and order.completed of both orders: {}", messages.len());
        }
    }
    // The order service logs the gRPC call under the same trace id.
    let trace_id = saga_process::trace::trace_id(client_trace).expect("trace id");
    let log = std::fs::read_to_string(stack.logs_dir().join("order.log")).expect("order service log");
    assert!(
        log.lines().any(|l| l.contains("order created; saga started") && l.contains(&traced) && l.contains(trace_id)),
        "no log line of order {traced} with trace id {trace_id}"
    );
}
