//! A backend that is down or hangs: the gateway answers quickly with 503 or
//! 504 and an opaque body (never the cause), and `/readyz` names the backend.

use std::time::Duration;

use reqwest::StatusCode;
use saga_tests::http::PrivateGateway;
use saga_tests::stack;
use serde_json::json;

#[tokio::test]
async fn unreachable_backend_is_503_and_not_ready() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let gateway = PrivateGateway::spawn(&stack(), &[("PRODUCT_GRPC_URL", url.as_str())]);
    gateway.wait_for("/healthz").await;

    let ready = gateway.api.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["checks"]["product"], "unreachable", "{:?}", ready.body);
    assert_eq!(ready.body["checks"]["order"], "ok");

    let products = gateway.api.get("/api/v1/products", None).await;
    assert_eq!(products.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", products.body);
    assert_eq!(products.body, json!({ "code": "unavailable", "message": "a dependency is unavailable; retry later" }));
}

#[tokio::test]
async fn hanging_backend_hits_the_deadline_and_is_504() {
    // Accepts connections and never says a word, like a wedged server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let gateway = PrivateGateway::spawn(&stack(), &[("PRODUCT_GRPC_URL", url.as_str()), ("GRPC_TIMEOUT_MS", "500")]);
    gateway.wait_for("/healthz").await;

    let reply = tokio::time::timeout(Duration::from_secs(30), gateway.api.get("/api/v1/products", None))
        .await
        .expect("the gateway must give up on its own");
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", reply.body);
    assert_eq!(reply.body, json!({ "code": "timeout", "message": "a dependency did not answer in time" }));
    hold.abort();
}
