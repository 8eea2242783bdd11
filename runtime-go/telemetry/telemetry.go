// Package telemetry exports a Go participant's traces over OTLP, as the Rust services do
// (`process/src/telemetry.rs`): only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, under the
// service's name, each handled event a span `event` whose parent is the trace context its
// envelope carries, so a saga is one trace across every service whatever its language.
package telemetry

import (
	"context"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracer starts the spans of one service.
type Tracer struct {
	tracer   trace.Tracer
	provider *sdktrace.TracerProvider
}

// Init is the service's tracer: exporting over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT
// is set (the exporter and the batching read the standard OTEL_* variables), otherwise
// one that records nothing.
func Init(ctx context.Context, service string) (*Tracer, error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return &Tracer{tracer: noop.NewTracerProvider().Tracer(service)}, nil
	}
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, err
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))),
	)
	return &Tracer{tracer: provider.Tracer(service), provider: provider}, nil
}

// Event starts the span of handling one event: a child of the trace context the event
// carries (W3C traceparent and tracestate), with the saga's key, the event's id and type.
func (t *Tracer) Event(ctx context.Context, traceparent, tracestate *string, sagaKey, eventID, eventType string) (context.Context, trace.Span) {
	carrier := propagation.MapCarrier{}
	if traceparent != nil {
		carrier["traceparent"] = *traceparent
	}
	if tracestate != nil {
		carrier["tracestate"] = *tracestate
	}
	parent := propagation.TraceContext{}.Extract(ctx, carrier)
	traceID := ""
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
		traceID = sc.TraceID().String()
	}
	return t.tracer.Start(parent, "event", trace.WithAttributes(
		attribute.String("saga_key", sagaKey),
		attribute.String("event_id", eventID),
		attribute.String("event_type", eventType),
		attribute.String("trace_id", traceID),
	))
}

// Shutdown exports what is still buffered.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}
