package participant

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/wire"
)

// event is a Message as a generated envelope gives it, without a registry.
type event struct {
	id, key     uuid.UUID
	kind, topic string
	traceparent *string
	due         *time.Time
	encodeErr   error
}

func (e *event) ID() uuid.UUID           { return e.id }
func (e *event) EventType() string       { return e.kind }
func (e *event) Topic() string           { return e.topic }
func (e *event) Key() uuid.UUID          { return e.key }
func (e *event) Trace() (tp, ts *string) { return e.traceparent, nil }
func (e *event) Due() *time.Time         { return e.due }
func (e *event) Encode() ([]byte, error) { return []byte(e.kind), e.encodeErr }
func newEvent(kind string) *event {
	return &event{id: NewEventID(), key: uuid.New(), kind: kind, topic: "t"}
}
func (e *event) withTrace(tp string) *event       { e.traceparent = &tp; return e }
func (e *event) withDue(at time.Time) *event      { e.due = &at; return e }
func (e *event) failingToEncode(err error) *event { e.encodeErr = err; return e }

type reply interface{ isReply() }
type booked struct{}

func (booked) isReply() {}

func TestANilReplyPublishesNothingAndAnErrorIsTheHandlers(t *testing.T) {
	in := newEvent("a").withTrace("00-trace-01")
	var noReply reply
	handled := Handle(in, func(context.Context, pgx.Tx, *event) (reply, error) { return noReply, nil },
		func(reply) (*Outbound, error) { t.Fatal("reply mapped for a nil reply"); return nil, nil })
	if handled.EventID != in.id || handled.Key != in.key.String() || *handled.Traceparent != "00-trace-01" {
		t.Fatalf("inbound: %+v", handled)
	}
	if out, err := handled.Run(context.Background(), nil); out != nil || err != nil {
		t.Fatalf("nil reply: %v, %v", out, err)
	}

	failing := errors.New("the handler's")
	handled = Handle(in, func(context.Context, pgx.Tx, *event) (reply, error) { return booked{}, failing },
		func(reply) (*Outbound, error) { t.Fatal("reply mapped after an error"); return nil, nil })
	if _, err := handled.Run(context.Background(), nil); !errors.Is(err, failing) {
		t.Fatalf("error: %v", err)
	}
}

func TestAReplyBecomesAnOutboxRowWithItsHeaders(t *testing.T) {
	due := time.Date(2026, 12, 5, 10, 0, 0, 123456000, time.UTC)
	r := newEvent("shipment.booked").withTrace("00-trace-01").withDue(due)
	out, err := NewOutbound(r)
	if err != nil {
		t.Fatal(err)
	}
	if out.EventID != r.id || out.Topic != "t" || out.Key != r.key.String() || string(out.Payload) != "shipment.booked" {
		t.Fatalf("row: %+v", out)
	}
	want := wire.Headers("shipment.booked", r.id, r.traceparent, nil, &due)
	for k, v := range want {
		if out.Headers[k] != v {
			t.Errorf("header %s: %q, want %q", k, out.Headers[k], v)
		}
	}
	_, err = NewOutbound(newEvent("x").failingToEncode(errors.New("no schema")))
	var encode *EncodeError
	if !errors.As(err, &encode) || encode.Class() != contract.Permanent || encode.EventType != "x" {
		t.Fatalf("an encoding error is a verdict on the event: %v", err)
	}
}

func TestABindingWritesOnlyWhatItsServicePublishesAndIsNotRetired(t *testing.T) {
	schemas := []wire.Schema{{Event: "a", Version: 1}, {Event: "a", Version: 2}, {Event: "b", Version: 1}, {Event: "old", Version: 1}}
	saga := Saga{
		Schemas: schemas,
		Events: []contract.EventInfo{
			{EventType: "a", Publisher: "shipping"},
			{EventType: "b", Publisher: "order"},
			{EventType: "old", Publisher: "shipping", Retired: true},
		},
		DeadLetterSuffix: ".dlq",
		SchemaTopic:      "schemas",
	}
	b := saga.Bind("shipping", contract.ConsumerGroup{GroupID: "g"}, func(Message) *Inbound { return nil })
	if len(b.Writes) != 2 || b.Writes[0].Version != 1 || b.Writes[1].Version != 2 || b.Writes[0].Event != "a" {
		t.Fatalf("writes: %+v", b.Writes)
	}
	if len(b.Schemas) != len(schemas) || b.Group.GroupID != "g" || b.DeadLetterSuffix != ".dlq" || b.SchemaTopic != "schemas" {
		t.Fatalf("binding: %+v", b)
	}
	b.Schemas[0].Event = "changed"
	if schemas[0].Event != "a" {
		t.Fatal("the binding shares the saga's schema slice")
	}
}

// A binding decodes by the saga's decoder and hands the message to the service's cases;
// an event of a later version of the saga is skipped, anything else undecodable is an
// error for the consumer to classify.
func TestABindingSkipsALaterEventAndReturnsOtherDecodeErrors(t *testing.T) {
	known, broken := newEvent("a"), errors.New("not an event")
	saga := Saga{Decode: func(data []byte) (Message, error) {
		switch string(data) {
		case "known":
			return known, nil
		case "later":
			return nil, fmt.Errorf("decoding: %w", wire.ErrLaterEvent)
		}
		return nil, broken
	}}
	b := saga.Bind("shipping", contract.ConsumerGroup{}, func(m Message) *Inbound {
		return NewInbound(m, nil)
	})
	if in, err := b.Decode([]byte("known")); err != nil || in == nil || in.EventID != known.id {
		t.Fatalf("known: %+v, %v", in, err)
	}
	if in, err := b.Decode([]byte("later")); err != nil || in != nil {
		t.Fatalf("a later event: %+v, %v", in, err)
	}
	if _, err := b.Decode([]byte("garbage")); !errors.Is(err, broken) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestNowKeepsWhatTimestampMicrosKeeps(t *testing.T) {
	now := Now()
	if now.Location() != time.UTC || now.Nanosecond()%1000 != 0 {
		t.Fatalf("%v", now)
	}
	if NewEventID().Version() != 7 {
		t.Fatal("event ids are not version 7")
	}
}
