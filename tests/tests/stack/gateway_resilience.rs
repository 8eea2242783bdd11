//! A backend that is down or hangs: the gateway answers quickly with 503 or
//! 504 and an opaque body (never the cause), and stays ready itself: `/readyz`
//! names the backend among its `backends`, which its readiness does not
//! depend on (a backend's health steers the balancing, not the gateway).

use std::time::Duration;

use reqwest::StatusCode;
use saga_tests::http::PrivateGateway;
use saga_tests::stack;
use serde_json::json;

#[tokio::test]
async fn unreachable_backend_is_503_and_the_gateway_stays_ready() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let url = format!("https://127.0.0.1:{port}");
    let gateway = PrivateGateway::spawn(&stack(), &[("PRODUCT_GRPC_URL", url.as_str())]).await;
    gateway.wait_for("/healthz").await;

    // Each instance's watcher asks it every 500 ms; `/readyz` says what they last heard.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = gateway.api.get("/readyz", None).await;
        if ready.body["backends"]["product"] == "unreachable" && ready.body["backends"]["order"] == "ok" {
            break ready;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", ready.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    assert_eq!(ready.body["checks"]["redis"], "ok", "{:?}", ready.body);

    let products = gateway.api.get("/api/v1/products", None).await;
    assert_eq!(products.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", products.body);
    assert_eq!(products.body, json!({ "code": "unavailable", "message": "a dependency is unavailable; retry later" }));
}

/// A backend that accepts connections and never answers: the gateway gives
/// up on its own. A call made before the instance's watcher first asked it
/// waits for the deadline (504); once the watcher saw it does not answer
/// health checks either, calls fail at once (503).
#[tokio::test]
async fn hanging_backend_hits_the_deadline_and_is_504_then_503() {
    // Accepts connections and never says a word, like a wedged server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let gateway =
        PrivateGateway::spawn(&stack(), &[("PRODUCT_GRPC_URL", url.as_str()), ("GRPC_TIMEOUT_MS", "500")]).await;
    gateway.wait_for("/healthz").await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let reply = tokio::time::timeout(Duration::from_secs(30), gateway.api.get("/api/v1/products", None))
            .await
            .expect("the gateway must give up on its own");
        match reply.status {
            StatusCode::GATEWAY_TIMEOUT => {
                assert_eq!(reply.body, json!({ "code": "timeout", "message": "a dependency did not answer in time" }))
            }
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(
                reply.body,
                json!({ "code": "unavailable", "message": "a dependency is unavailable; retry later" })
            ),
            other => panic!("{other}: {:?}", reply.body),
        }
        seen.insert(reply.status);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert!(seen.contains(&StatusCode::SERVICE_UNAVAILABLE), "the watcher took it out: {seen:?}");
    hold.abort();
}

/// A service's instances are balanced over: one that does not answer beside
/// one that does costs no request (calls that meet the dead one before its
/// watcher takes it out are sent again), and `/readyz` is ready, naming each.
#[tokio::test]
async fn a_dead_instance_beside_a_live_one_costs_no_request() {
    let stack = stack();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let dead = format!("https://127.0.0.1:{port}");
    let live = stack.grpc_url(saga_stack::config::services()[1]);
    let both = format!("{dead},{live}");
    let gateway = PrivateGateway::start(&stack, &[("PRODUCT_GRPC_URL", both.as_str())]).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = gateway.api.get("/readyz", None).await;
        if ready.body["backends"]["product instances"][&dead] == "unreachable" {
            break ready;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", ready.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    assert_eq!(ready.body["backends"]["product"], "ok");
    assert_eq!(ready.body["backends"]["product instances"][&live], "ok", "{:?}", ready.body);
    for _ in 0..40 {
        let products = gateway.api.get("/api/v1/products", None).await;
        assert_eq!(products.status, StatusCode::OK, "{:?}", products.body);
    }
}
