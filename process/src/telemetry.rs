//! Logging and tracing setup: JSON lines in services, filter from `RUST_LOG`; and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span exported as an OpenTelemetry trace over
//! OTLP/gRPC, its parent taken from the W3C `traceparent` the request or the event carries.
//! Without the endpoint nothing is exported and no OpenTelemetry layer is installed.

use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for services.
    Json,
    /// Human-readable, for tools run in a terminal.
    Pretty,
}

/// The exporting tracer provider, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global tracing subscriber for process `service` (the traces' service
/// name). `RUST_LOG` overrides `default_filter`. Calling it twice is harmless (the second
/// call keeps the first subscriber). Call it inside the Tokio runtime: the exporter's
/// client lives there.
pub fn init(format: LogFormat, default_filter: &str, service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let (json, pretty) = match format {
        LogFormat::Json => (Some(fmt.json().flatten_event(true).with_current_span(true)), None),
        LogFormat::Pretty => (None, Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).compact())),
    };
    let exported = exporter(service);
    let otel = exported.map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned())));
    let _ = tracing_subscriber::registry().with(filter).with(json).with(pretty).with(otel).try_init();
}

/// The exporting provider, when the environment asks for one.
fn exporter(service: &str) -> Option<&'static SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone()).build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("no traces exported to {endpoint}: {error}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    Some(PROVIDER.get_or_init(|| provider))
}

/// Exports what is still buffered; call on the way out.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// Makes `span` a child of the span `traceparent` names, when traces are exported.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if PROVIDER.get().is_none() {
        return;
    }
    let carrier = std::collections::HashMap::from([(crate::trace::TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
}

/// The `traceparent` that makes what follows a child of `span`, when traces are exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    PROVIDER.get()?;
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(crate::trace::TRACEPARENT).filter(|tp| crate::trace::is_valid(tp))
}
