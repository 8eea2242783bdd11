//! Admission control: while more sagas are at risk of missing their deadline
//! than the gateway allows, `POST /orders` is refused with 503 and
//! `Retry-After` (nothing is placed), and orders are accepted again once the
//! backlog has drained. A private saga and gateway, so the stack's shared
//! services are never disturbed.

use std::time::Duration;

use reqwest::StatusCode;
use saga_proto::order::GetSagaBacklogRequest;
use saga_tests::http::PrivateGateway;
use saga_tests::saga::{PrivateSaga, eventually};
use saga_tests::stack;
use serde_json::json;

#[tokio::test]
async fn orders_are_refused_while_too_many_sagas_are_at_risk_and_accepted_once_they_drain() {
    let stack = stack();
    let mut saga = PrivateSaga::start(&stack, &[]).await;
    let urls: Vec<(String, String)> =
        ["order", "product", "user"].iter().map(|s| (format!("{}_GRPC_URL", s.to_uppercase()), saga.url(s))).collect();
    let mut env: Vec<(&str, &str)> = urls.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // A saga is at risk after 2 % of its status's timeout (0.6 s of the 30 s
    // `created` allows); more than 2 at risk refuses new orders.
    env.extend([
        ("ADMISSION_MAX_AT_RISK", "2"),
        ("ADMISSION_AT_RISK_PERCENT", "2"),
        ("ADMISSION_CHECK_MS", "100"),
        ("ADMISSION_RETRY_AFTER_SECS", "3"),
    ]);
    let gateway = PrivateGateway::start(&stack, &env).await;
    let api = &gateway.api;
    let admin = api.admin_token().await;
    let product = api.create_product(&admin, 100, 1_000).await;
    let (token, user_id) = api.customer().await;
    api.credit(&admin, &user_id, 1_000_000).await;
    let items = json!([{ "product_id": product, "quantity": 1 }]);

    // Without the product service no stock is reserved: sagas wait in `created`.
    saga.stop("product").await;
    for i in 0..3 {
        let reply = api.place_order(&token, &format!("waiting-{i}"), &items).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }
    // The order service's own measure first, then one more gateway check.
    let mut order = saga.clients().await.order;
    eventually("three sagas to be at risk", || {
        let mut order = order.clone();
        async move {
            let backlog = order.get_saga_backlog(GetSagaBacklogRequest { at_risk_percent: 2 }).await.ok()?.into_inner();
            (backlog.at_risk >= 3).then_some(())
        }
    })
    .await;
    let backlog = order.get_saga_backlog(GetSagaBacklogRequest { at_risk_percent: 2 }).await.expect("backlog");
    assert_eq!(backlog.into_inner().running, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = api.place_order(&token, "the-next-one", &items).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", refused.body);
    // 3 s ± 50 %, in whole seconds.
    let retry_after: u64 = refused.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("a Retry-After");
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.body["code"], "overloaded", "{:?}", refused.body);
    let mine = api.get("/api/v1/orders", Some(&token)).await;
    assert_eq!(mine.body["items"].as_array().map(Vec::len), Some(3), "a refused order is not placed: {:?}", mine.body);

    // The product service is back: the waiting sagas finish, the same key goes through.
    saga.restart(&stack, "product").await;
    let accepted = eventually("the gateway to accept orders again", || async {
        let reply = api.place_order(&token, "the-next-one", &items).await;
        (reply.status == StatusCode::CREATED).then_some(reply)
    })
    .await;
    assert!(accepted.body["id"].is_string(), "{:?}", accepted.body);
    drop(gateway);
    saga.shutdown(&stack).await;
}
