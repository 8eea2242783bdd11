//! The services `up` started answer: gRPC health on each backend, and the
//! gateway's readiness, which itself checks Redis and every backend.

use saga_runtime::defaults::SERVICES;
use saga_tests::stack;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn every_backend_reports_serving() {
    let stack = stack();
    for service in SERVICES {
        let channel = tonic::transport::Endpoint::from_shared(stack.grpc_url(service))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = HealthClient::new(channel);
        let reply = client.check(HealthCheckRequest { service: String::new() }).await.expect("health check");
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32, "{}", service.name);
    }
}

#[tokio::test]
async fn gateway_is_live_and_ready() {
    let stack = stack();
    let http = reqwest::Client::new();
    let live = http.get(format!("{}/healthz", stack.gateway_url())).send().await.expect("healthz");
    assert_eq!(live.status(), 200);
    let ready = http.get(format!("{}/readyz", stack.gateway_url())).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    for check in ["redis", "order", "product", "user"] {
        assert_eq!(body["checks"][check], "ok", "{check} in {body}");
    }
}
