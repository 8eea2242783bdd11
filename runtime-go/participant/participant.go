// Package participant is what a saga's generated package hands the runtime for one
// service, and what the runtime hands back: a decoded event to handle in a transaction,
// and the reply to keep in the outbox.
package participant

import (
	"context"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/wire"
)

// Binding is a service's handler bound to its part of the spec (generated:
// `<Service>Binding(handler)`).
type Binding struct {
	Service string
	// Group is the service's consumer group: its topics and retry policy.
	Group contract.ConsumerGroup
	// Writes is every published version of the schemas of the events the service
	// publishes: registered on the schema topic before it publishes.
	Writes []wire.Schema
	// Schemas is every published version of every event's schema.
	Schemas []wire.Schema
	// DeadLetterSuffix names a topic's dead-letter twin: `<topic><suffix>`.
	DeadLetterSuffix string
	// SchemaTopic is the saga's schema topic (logical name).
	SchemaTopic string
	// Decode reads one message of the group's topics: nil for an event the service does
	// not handle (or one of a later version of the saga); an error for bytes no known
	// schema decodes (a *wire.UnknownSchemaError when the schema topic may know it).
	Decode func(data []byte) (*Inbound, error)
	// Learn takes a writer schema read from the saga's schema topic.
	Learn func(print wire.Fingerprint, json string) (string, error)
}

// Inbound is one event the service handles, decoded.
type Inbound struct {
	EventID   uuid.UUID
	EventType string
	// Key is the saga key, as text: the Kafka partition key.
	Key string
	// Traceparent and Tracestate are the trace context the event carries.
	Traceparent, Tracestate *string
	// Run handles the event in tx, the transaction that also holds its inbox row; the
	// reply, if any, goes into the outbox in the same transaction.
	Run func(ctx context.Context, tx pgx.Tx) (*Outbound, error)
}

// Outbound is a reply as the outbox keeps it.
type Outbound struct {
	EventID   uuid.UUID
	EventType string
	// Topic is the logical topic, without any deployment prefix.
	Topic   string
	Key     string
	Payload []byte
	Headers map[string]string
}
