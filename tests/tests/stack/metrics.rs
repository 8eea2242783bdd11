//! Prometheus metrics on the real stack: after a few sagas, every service's, the gateway's
//! and the console's `/metrics` is scraped and parsed by an independent parser (the Python
//! `prometheus_client`'s text-format parser), and the values say what happened: sagas
//! completed, messages handled by every consumer group, events published, requests by route.

use std::collections::BTreeMap;
use std::process::Command;

use saga_stack::config::services;
use serde_json::Value;

use saga_tests::saga::Clients;

const PROMETHEUS_CLIENT: &str = "prometheus-client==0.21.1";

/// Parses the scrape on stdin; prints `{name: {"type": .., "samples": [[name, labels, value]]}}`.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {"type": family.type, "help": family.documentation,
                        "samples": [[s.name, s.labels, s.value] for s in family.samples]}
print(json.dumps(out))
"#;

/// The scrape of `url`, parsed.
async fn scrape(python: &std::path::Path, url: &str) -> BTreeMap<String, Value> {
    let text = reqwest::get(url).await.expect("scrape").error_for_status().expect("200").text().await.expect("body");
    let mut child = Command::new(python)
        .arg("-c")
        .arg(PARSER)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the parser starts");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the scrape");
    }
    let output = child.wait_with_output().expect("the parser ends");
    assert!(output.status.success(), "{url} does not parse:\n{}\n{text}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the parser's JSON")
}

/// The sum of the samples named `sample` whose labels include `labels`.
fn total(families: &BTreeMap<String, Value>, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(f) = families.get(family) else { panic!("no family {family} in {:?}", families.keys()) };
    f["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().expect("a value"))
        .sum()
}

#[tokio::test]
async fn every_process_serves_metrics_that_parse_and_count_what_happened() {
    let stack = saga_tests::stack();
    let root = stack.root.clone();
    let python = tokio::task::spawn_blocking(move || {
        saga_tests::python::venv_bin(&root, PROMETHEUS_CLIENT, "SAGA_PROMETHEUS_CLIENT_VENV").join("python")
    })
    .await
    .expect("install prometheus_client");

    let mut c = Clients::of_stack(&stack).await;
    let buyer = c.user(10_000).await;
    let product = c.product(100, 10).await;
    for _ in 0..3 {
        let order = c.order(&buyer, &[(&product, 1)]).await;
        c.wait_status(&order.order_id, "completed").await;
    }
    // Through the gateway too, so its request metrics have a route to count.
    let api = saga_tests::http::Api::of_stack(&stack);
    assert_eq!(api.get("/healthz", None).await.status, 200);

    let order = scrape(&python, &stack.metrics_url(stack.service_port(services()[0]))).await;
    assert_eq!(order["saga_outcomes"]["type"], "counter");
    assert!(total(&order, "saga_outcomes", "saga_outcomes_total", &[("status", "completed")]) >= 3.0);
    assert_eq!(order["saga_duration_seconds"]["type"], "histogram");
    assert!(total(&order, "saga_duration_seconds", "saga_duration_seconds_count", &[("status", "completed")]) >= 3.0);
    assert!(
        total(
            &order,
            "saga_step_duration_seconds",
            "saga_step_duration_seconds_count",
            &[("from", "created"), ("to", "inventory_reserved")]
        ) >= 3.0
    );
    assert!(order["saga_outcomes"]["help"].as_str().is_some_and(|h| !h.is_empty()), "every metric has its help");

    for service in services() {
        let families = scrape(&python, &stack.metrics_url(stack.service_port(service))).await;
        let group = format!("order_fulfillment.{}", service.name);
        let handled = total(&families, "saga_messages_handled", "saga_messages_handled_total", &[("group", &group)]);
        assert!(handled >= 3.0, "{}: handled {handled}", service.name);
        assert!(
            total(&families, "saga_outbox_published", "saga_outbox_published_total", &[]) >= 3.0,
            "{}",
            service.name
        );
        assert!(
            total(&families, "saga_outbox_publish_latency_seconds", "saga_outbox_publish_latency_seconds_count", &[])
                >= 3.0
        );
        assert!(total(&families, "saga_handler_duration_seconds", "saga_handler_duration_seconds_count", &[]) >= 1.0);
        let acquired = |pool| {
            total(&families, "saga_db_pool_acquire_seconds", "saga_db_pool_acquire_seconds_count", &[("pool", pool)])
        };
        assert!(acquired("work") >= 3.0, "{}: every handler transaction waited for its connection", service.name);
        // The shipping service has no API of its own to call.
        if service.name != "shipping" {
            assert!(acquired("api") >= 1.0, "{}: the gRPC calls of the test took connections", service.name);
        }
        // Once the sagas are done nobody waits: every waiter counted leaves the gauge again.
        saga_tests::saga::eventually(&format!("{}: no task waiting for a connection", service.name), || {
            let (python, url) = (python.clone(), stack.metrics_url(stack.service_port(service)));
            async move {
                let families = scrape(&python, &url).await;
                let waiting: f64 = ["work", "api"]
                    .iter()
                    .map(|pool| {
                        total(&families, "saga_db_pool_waiting_tasks", "saga_db_pool_waiting_tasks", &[("pool", pool)])
                    })
                    .sum();
                (waiting == 0.0).then_some(())
            }
        })
        .await;
        // Gauges sampled every few seconds: present once sampled.
        for gauge in ["saga_db_pool_connections", "saga_outbox_backlog_rows", "saga_consumer_lag_messages"] {
            let present = saga_tests::saga::eventually(&format!("{} {gauge}", service.name), || {
                let (python, url) = (python.clone(), stack.metrics_url(stack.service_port(service)));
                async move { scrape(&python, &url).await.contains_key(gauge).then_some(()) }
            })
            .await;
            let () = present;
        }
    }

    let gateway = scrape(&python, &stack.metrics_url(stack.ports.gateway)).await;
    assert!(
        total(
            &gateway,
            "http_requests",
            "http_requests_total",
            &[("route", "/healthz"), ("method", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert_eq!(gateway["http_request_duration_seconds"]["type"], "histogram");

    // The console counts what the gateway forwarded to it, and has its redrive counter from
    // the start.
    let admin = api.admin_token().await;
    assert_eq!(api.get("/api/v1/admin/console/dlq/audit", Some(&admin)).await.status, 200);
    let console = scrape(&python, &stack.metrics_url(stack.ports.console)).await;
    let audits = [("route", "/console/api/dlq/audit"), ("method", "GET"), ("status", "200")];
    assert!(total(&console, "http_requests", "http_requests_total", &audits) >= 1.0, "{console:?}");
    assert_eq!(console["http_request_duration_seconds"]["type"], "histogram");
    assert_eq!(console["console_redrives"]["type"], "counter");
    for outcome in ["redriven", "already", "refused"] {
        let samples = console["console_redrives"]["samples"].as_array().expect("samples");
        assert!(samples.iter().any(|s| s[1]["outcome"] == outcome), "{outcome}: {samples:?}");
    }
}
