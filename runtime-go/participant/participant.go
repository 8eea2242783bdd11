// Package participant is what a saga's generated package hands the runtime for one
// service, and what the runtime hands back: a decoded event to handle in a transaction,
// and the reply to keep in the outbox.
package participant

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
	Learn func(print wire.Fingerprint, json string) (event string, fresh bool, err error)
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

// Message is one event of a saga, decoded: what a generated package's *Envelope of any
// payload gives the runtime.
type Message interface {
	// ID is the event's id, unique per event.
	ID() uuid.UUID
	// EventType is the spec's name of the event, e.g. `order.created`.
	EventType() string
	// Topic is the logical topic the event travels on.
	Topic() string
	// Key is the saga key, which is also the Kafka partition key.
	Key() uuid.UUID
	// Trace is the W3C trace context the event carries.
	Trace() (traceparent, tracestate *string)
	// Due is when the status owner gives up on the saga unless it has the answer to this
	// event; nil when no answer is awaited.
	Due() *time.Time
	// Encode is the event single-object encoded with the schema version this build writes.
	Encode() ([]byte, error)
}

// AsMessage turns a typed decode's result into a Message, so that a failed decode is a nil
// interface and not an interface holding a nil pointer.
func AsMessage[M Message](m M, err error) (Message, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

// NewInbound is a decoded event and how to handle it.
func NewInbound(m Message, run func(ctx context.Context, tx pgx.Tx) (*Outbound, error)) *Inbound {
	traceparent, tracestate := m.Trace()
	return &Inbound{EventID: m.ID(), EventType: m.EventType(), Key: m.Key().String(),
		Traceparent: traceparent, Tracestate: tracestate, Run: run}
}

// Handle is m and how to handle it: on runs the service's handler method, and reply turns
// what it returned into the outbox row (a generated switch over the replies the spec
// allows).
func Handle[M Message, R any](m M, on func(context.Context, pgx.Tx, M) (R, error), reply func(R) (*Outbound, error)) *Inbound {
	return NewInbound(m, func(ctx context.Context, tx pgx.Tx) (*Outbound, error) {
		return Answer(reply)(on(ctx, tx, m))
	})
}

// Answer is what a handler's result becomes: its error; nothing for a nil reply (publish
// nothing); else reply's outbox row for it. Curried, so that a handler call's two results
// go straight in: `Answer(reply)(h.OnX(ctx, tx, e))`.
func Answer[R any](reply func(R) (*Outbound, error)) func(R, error) (*Outbound, error) {
	return func(r R, err error) (*Outbound, error) {
		if err != nil || any(r) == nil {
			return nil, err
		}
		return reply(r)
	}
}

// EncodeError is a reply that cannot be encoded (say, a nil pointer for a payload): a
// verdict on the event being handled, as in Rust (`HandleError::Encode`), so it is
// dead-lettered at once instead of waited out.
type EncodeError struct {
	EventType string
	Err       error
}

func (e *EncodeError) Error() string {
	return fmt.Sprintf("encoding the reply %s: %v", e.EventType, e.Err)
}

func (e *EncodeError) Unwrap() error { return e.Err }

// Class is [contract.Permanent].
func (e *EncodeError) Class() contract.FailureClass { return contract.Permanent }

// NewOutbound is a reply as the outbox keeps it: encoded, keyed and with its headers.
func NewOutbound(m Message) (*Outbound, error) {
	data, err := m.Encode()
	if err != nil {
		return nil, &EncodeError{EventType: m.EventType(), Err: err}
	}
	traceparent, tracestate := m.Trace()
	return &Outbound{
		EventID:   m.ID(),
		EventType: m.EventType(),
		Topic:     m.Topic(),
		Key:       m.Key().String(),
		Payload:   data,
		Headers:   wire.Headers(m.EventType(), m.ID(), traceparent, tracestate, m.Due()),
	}, nil
}

// NewEventID is a time-ordered (version 7) UUID, as the Rust producers give; it fails only
// when the system's random source does.
func NewEventID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// Now is the current time in UTC to the microsecond, what `timestamp-micros` keeps, so an
// envelope equals its decoded copy.
func Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Saga is what every service's binding of one saga shares (generated once per saga).
type Saga struct {
	// Schemas is every published version of every event's schema.
	Schemas []wire.Schema
	// Events says which service publishes each event, and which are retired.
	Events []contract.EventInfo
	// Learn takes a writer schema read from the saga's schema topic.
	Learn func(print wire.Fingerprint, json string) (event string, fresh bool, err error)
	// Decode reads any event of the saga by its writer schema (the generated
	// `DecodeMessage`).
	Decode           func(data []byte) (Message, error)
	DeadLetterSuffix string
	SchemaTopic      string
}

// Bind is service's binding: its consumer group, the schemas it writes (every published
// version of the events it publishes that are not retired), and its decoder: a message is
// decoded by the saga's Decode and handed to handle, which says how the service handles it
// (nil: not its event). An event of a later version of the saga, which no handler here
// knows, is skipped.
func (s Saga) Bind(service string, group contract.ConsumerGroup, handle func(Message) *Inbound) Binding {
	var writes []wire.Schema
	for _, schema := range s.Schemas {
		for _, e := range s.Events {
			if e.EventType == schema.Event && e.Publisher == service && !e.Retired {
				writes = append(writes, schema)
			}
		}
	}
	return Binding{
		Service:          service,
		Group:            group,
		Writes:           writes,
		Schemas:          slices.Clone(s.Schemas),
		DeadLetterSuffix: s.DeadLetterSuffix,
		SchemaTopic:      s.SchemaTopic,
		Decode: func(data []byte) (*Inbound, error) {
			m, err := s.Decode(data)
			if errors.Is(err, wire.ErrLaterEvent) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			return handle(m), nil
		},
		Learn: s.Learn,
	}
}
