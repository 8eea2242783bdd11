package wire

import (
	"time"

	"github.com/google/uuid"
)

// ContentType is the `content-type` header of every event.
const ContentType = "application/vnd.apache.avro+binary"

// Headers is the Kafka headers of an event, for humans and tools: consumers decode from
// the payload alone. The same names and values as the Rust `saga_wire::headers`.
func Headers(eventType string, eventID uuid.UUID, traceparent, tracestate *string, deadline *time.Time) map[string]string {
	h := map[string]string{
		"event-type":   eventType,
		"event-id":     eventID.String(),
		"content-type": ContentType,
	}
	if traceparent != nil {
		h["traceparent"] = *traceparent
	}
	if tracestate != nil {
		h["tracestate"] = *tracestate
	}
	if deadline != nil {
		h["saga-deadline"] = deadline.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	}
	return h
}
