//! OpenTelemetry traces on a real saga: the services and a gateway of their own export
//! spans over OTLP/gRPC to a real OTLP trace receiver (a tonic server on the
//! `opentelemetry-proto` trace service), and one order placed over REST is one trace, with
//! spans from the gateway and all four services (shipping in Go when the stack runs it so),
//! each a child of what caused it and in
//! causal order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;

use saga_tests::http::PrivateGateway;
use saga_tests::saga::PrivateSaga;

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    start: u64,
    attributes: BTreeMap<String, String>,
}

#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(AnyValue::StringValue(s)) => s.clone(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        let mut spans = self.0.lock().expect("spans");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    start: span.start_time_unix_nano,
                    attributes: span.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test]
async fn one_order_over_rest_is_one_trace_across_the_gateway_and_every_service() {
    let stack = saga_tests::stack();
    let receiver = Receiver::default();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let endpoint = format!("http://{addr}");
    tokio::spawn(
        tonic::transport::Server::builder().add_service(TraceServiceServer::new(receiver.clone())).serve(addr),
    );
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let saga = PrivateSaga::start(&stack, &otel).await;
    let urls: Vec<(String, String)> =
        ["order", "product", "user"].iter().map(|s| (format!("{}_GRPC_URL", s.to_uppercase()), saga.url(s))).collect();
    let mut env: Vec<(&str, &str)> = urls.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend(otel);
    let gateway = PrivateGateway::start(&stack, &env).await;
    let api = &gateway.api;

    let admin = api.admin_token().await;
    let (customer, user_id) = api.customer().await;
    api.credit(&admin, &user_id, 10_000).await;
    let product = api.create_product(&admin, 500, 5).await;
    let placed = api.place_order(&customer, "trace-1", &json!([{ "product_id": product, "quantity": 1 }])).await;
    let order_id = placed.body["id"].as_str().expect("an order id").to_owned();
    let events = api.order_events(&customer, &order_id, Duration::from_secs(60)).await;
    assert_eq!(events.last().map(|(_, v)| v["status"].clone()), Some(json!("completed")), "{events:?}");

    // The last handled event of the saga is the order service's payment.completed.
    let trace: Vec<Received> = saga_tests::saga::eventually("the saga's spans exported", || {
        let spans = receiver.0.lock().expect("spans").clone();
        let order_id = order_id.clone();
        async move {
            let last = spans.iter().find(|s| {
                s.service == "order"
                    && s.attributes.get("event_type").map(String::as_str) == Some("payment.completed")
                    && s.attributes.get("saga_key") == Some(&order_id)
            })?;
            let trace: Vec<Received> = spans.iter().filter(|s| s.trace_id == last.trace_id).cloned().collect();
            ["gateway", "order", "product", "user", "shipping"]
                .iter()
                .all(|service| trace.iter().any(|s| s.service == *service))
                .then_some(trace)
        }
    })
    .await;

    // The root is the gateway's request; every other span's parent is in the trace.
    let ids: Vec<&Vec<u8>> = trace.iter().map(|s| &s.span_id).collect();
    let roots: Vec<&Received> = trace.iter().filter(|s| !ids.contains(&&s.parent_span_id)).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!((roots[0].service.as_str(), roots[0].name.as_str()), ("gateway", "request"));
    assert!(roots[0].parent_span_id.is_empty(), "the gateway started the trace: {:?}", roots[0]);

    // Causal order: the request, the order service's call, then each handler of the saga.
    let start = |service: &str, name: &str, event: Option<&str>| {
        trace
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .filter(|s| event.is_none_or(|e| s.attributes.get("event_type").map(String::as_str) == Some(e)))
            .map(|s| s.start)
            .min()
            .unwrap_or_else(|| panic!("no {service} {name} {event:?} span in {trace:#?}"))
    };
    let steps = [
        start("gateway", "request", None),
        start("order", "grpc", None),
        start("product", "event", Some("order.created")),
        start("user", "event", Some("stock.reduction.success")),
        start("order", "event", Some("payment.completed")),
    ];
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "spans in causal order: {steps:?}");
    // The shipping service (in Go when the stack runs it so) joins the same trace: its span
    // for the payment, after the user service's for the reservation that led to it.
    let shipped = start("shipping", "event", Some("payment.completed"));
    assert!(shipped >= steps[3], "shipping after the payment was decided: {steps:?}, {shipped}");
    saga.shutdown(&stack).await;
}
