//! What the OpenAPI document promises about idempotency references and
//! unknown products, the code does: a reference spent on one change answers
//! a retry of that change as done and anything else with 409, and an order
//! for a product that does not exist is placed and fails at the stock step.

use std::time::Duration;

use reqwest::StatusCode;
use saga_tests::http::Api;
use saga_tests::{stack, unique};
use serde_json::json;

#[tokio::test]
async fn a_credit_reference_applies_once_and_refuses_another_amount() {
    let api = Api::of_stack(&stack());
    let admin = api.admin_token().await;
    let (_, user_id) = api.customer().await;
    let path = format!("/api/v1/admin/users/{user_id}/credit");
    let reference = unique("payment");
    let first = api.post(&path, Some(&admin), &json!({ "amount_minor": 500, "reference": reference })).await;
    assert_eq!((first.status, &first.body["applied"]), (StatusCode::OK, &json!(true)), "{:?}", first.body);
    let retry = api.post(&path, Some(&admin), &json!({ "amount_minor": 500, "reference": reference })).await;
    assert_eq!((retry.status, &retry.body["applied"]), (StatusCode::OK, &json!(false)), "{:?}", retry.body);
    assert_eq!(retry.body["balance_minor"], 500);
    let other = api.post(&path, Some(&admin), &json!({ "amount_minor": 900, "reference": reference })).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{:?}", other.body);
    assert!(other.body["message"].as_str().is_some_and(|m| m.contains("credit of 500")), "{:?}", other.body);
}

#[tokio::test]
async fn a_stock_reference_applies_once_and_refuses_another_change_or_product() {
    let api = Api::of_stack(&stack());
    let admin = api.admin_token().await;
    let (first_product, second_product) =
        (api.create_product(&admin, 100, 10).await, api.create_product(&admin, 100, 10).await);
    let reference = unique("delivery");
    let change = |product: &str, delta: i64| {
        let (api, admin, reference) = (&api, &admin, &reference);
        let path = format!("/api/v1/products/{product}/stock");
        async move { api.post(&path, Some(admin), &json!({ "delta": delta, "reference": reference })).await }
    };
    let first = change(&first_product, 5).await;
    assert_eq!((first.status, &first.body["stock_available"]), (StatusCode::OK, &json!(15)), "{:?}", first.body);
    let retry = change(&first_product, 5).await;
    assert_eq!(
        (retry.status, &retry.body["stock_available"]),
        (StatusCode::OK, &json!(15)),
        "applied once: {:?}",
        retry.body
    );
    assert_eq!(change(&first_product, 7).await.status, StatusCode::CONFLICT, "another change");
    let elsewhere = change(&second_product, 5).await;
    assert_eq!(elsewhere.status, StatusCode::CONFLICT, "another product: {:?}", elsewhere.body);
    let second = api.get(&format!("/api/v1/products/{second_product}"), None).await;
    assert_eq!(second.body["stock_available"], 10, "untouched: {:?}", second.body);
}

#[tokio::test]
async fn an_order_for_a_product_that_does_not_exist_is_placed_and_fails_at_the_stock_step() {
    let api = Api::of_stack(&stack());
    let (customer, _) = api.customer().await;
    let missing = uuid::Uuid::new_v4().to_string();
    let placed = api.place_order(&customer, &unique("key"), &json!([{ "product_id": missing, "quantity": 1 }])).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order_id = placed.body["id"].as_str().expect("order id");
    let events = api.order_events(&customer, order_id, Duration::from_secs(90)).await;
    let (last, order) = events.last().expect("an end event");
    assert_eq!((last.as_str(), order["status"].as_str()), ("end", Some("inventory_reserved_failed")), "{events:?}");
}
