//! The services `up` started answer: gRPC health on each backend, the
//! gateway's readiness, which itself checks Redis and every backend, and
//! every consumer group of the spec has joined (so a first saga is consumed
//! at once).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use saga_generated::topology::CONSUMER_GROUPS;
use saga_proto::tls::OPERATOR;
use saga_stack::config::services;
use saga_tests::stack;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn every_backend_reports_serving() {
    let stack = stack();
    for service in services() {
        let channel = saga_stack::services::channel_as(&stack, OPERATOR, service.name, &stack.grpc_url(service))
            .expect("endpoint")
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
    for check in ["redis", "admin_account"] {
        assert_eq!(body["checks"][check], "ok", "{check} in {body}");
    }
    for backend in ["order", "product", "user"] {
        assert_eq!(body["backends"][backend], "ok", "{backend} in {body}");
    }
}

#[test]
fn every_consumer_group_has_joined_once_up_returned() {
    let stack = stack();
    let client: BaseConsumer =
        saga_runtime::kafka::client(&stack.kafka_brokers()).set("log_level", "3").create().expect("client");
    for group in CONSUMER_GROUPS {
        // One look, no waiting: `up` returns only once the groups are stable.
        let list = client.fetch_group_list(Some(group.group_id), Duration::from_secs(10)).expect("group list");
        let info = list.groups().iter().find(|g| g.name() == group.group_id).expect("group known to the broker");
        assert_eq!(info.state(), "Stable", "{}", group.group_id);
        assert!(!info.members().is_empty(), "{} has no member", group.group_id);
    }
}
