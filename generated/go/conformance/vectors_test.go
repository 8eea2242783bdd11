// Package conformance checks the generated Go package against the Rust implementation of
// the same saga, through the shared vectors the Rust crate's test writes
// (generated/tests/go_vectors.rs): every event as written with every published version of
// its schema, and the bytes of it read into the current version and written again.
package conformance

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	saga "sagaplatform/generated/go/orderfulfillment"
)

type vector struct {
	Event   string
	Version int
	Written string
	Current string
}

func load(t *testing.T) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Vectors []vector }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	return file.Vectors
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Each message Rust wrote, with any version, decodes here into the current types and
// encodes to exactly the bytes Rust writes for it.
func TestEveryVectorDecodesAndEncodesAsRustDoes(t *testing.T) {
	for _, v := range load(t) {
		written, current := unhex(t, v.Written), unhex(t, v.Current)
		message, err := saga.DecodeMessage(written)
		if err != nil {
			t.Errorf("%s v%d: %v", v.Event, v.Version, err)
			continue
		}
		if message.EventType() != v.Event {
			t.Errorf("%s v%d decoded as %s", v.Event, v.Version, message.EventType())
		}
		again, err := message.Encode()
		if err != nil {
			t.Errorf("%s v%d: encoding: %v", v.Event, v.Version, err)
			continue
		}
		if !bytes.Equal(again, current) {
			t.Errorf("%s v%d: encodes to\n%x\nRust writes\n%x", v.Event, v.Version, again, current)
		}
	}
}

// Every published version of every event has a vector: a new version cannot ship untested.
func TestEveryPublishedVersionHasAVector(t *testing.T) {
	have := map[string]bool{}
	for _, v := range load(t) {
		have[fmt.Sprintf("%s v%d", v.Event, v.Version)] = true
	}
	for _, s := range saga.Schemas() {
		if !have[fmt.Sprintf("%s v%d", s.Event, s.Version)] {
			t.Errorf("no vector for %s v%d", s.Event, s.Version)
		}
	}
}

// The typed view of one message, field by field: the decoded values are the ones Rust
// wrote (generated/tests/go_vectors.rs, event 5), and an older version's missing fields
// come back as their defaults.
func TestAPaymentDecodesIntoItsFields(t *testing.T) {
	for _, v := range load(t) {
		if v.Event != saga.EventPaymentCompleted {
			continue
		}
		e, err := saga.Decode[saga.PaymentCompleted](unhex(t, v.Written))
		if err != nil {
			t.Fatal(err)
		}
		if e.Payload.Amount != -7 && e.Payload.Amount != 0 {
			t.Errorf("v%d: amount %d", v.Version, e.Payload.Amount)
		}
		if e.Payload.Amount == 0 {
			// The bare sample: no trace, deadline or context.
			if e.Traceparent != nil || e.Deadline != nil || e.Context != nil {
				t.Errorf("v%d bare: %+v", v.Version, e)
			}
			continue
		}
		if e.Traceparent == nil || *e.Tracestate != "vendor=value" {
			t.Errorf("v%d: trace %v %v", v.Version, e.Traceparent, e.Tracestate)
		}
		// The deadline came in version 2 and the context in version 3.
		if (e.Deadline != nil) != (v.Version >= 2) || (e.Context != nil) != (v.Version >= 3) {
			t.Errorf("v%d: deadline %v, context %v", v.Version, e.Deadline, e.Context)
		}
		if e.Context != nil && (len(e.Context.Items) != 2 || e.Context.Items[1].Quantity != 6) {
			t.Errorf("v%d: context %+v", v.Version, e.Context)
		}
	}
}

// A reply keeps the saga key, trace and context of what it answers, and has its own id.
func TestAReplyCarriesTheSagaOn(t *testing.T) {
	for _, v := range load(t) {
		if v.Event != saga.EventPaymentCompleted || v.Version != 3 {
			continue
		}
		cause, err := saga.Decode[saga.PaymentCompleted](unhex(t, v.Written))
		if err != nil {
			t.Fatal(err)
		}
		if cause.Context == nil {
			continue
		}
		reply := saga.Reply(cause, saga.ShipmentBooked{Tracking: "PCL-1"})
		if reply.OrderID != cause.OrderID || reply.EventID == cause.EventID || reply.Deadline != nil ||
			reply.Traceparent != cause.Traceparent || reply.Context != cause.Context {
			t.Fatalf("reply %+v to %+v", reply, cause)
		}
		data, err := reply.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := saga.Decode[saga.ShipmentBooked](data)
		if err != nil || back.Payload.Tracking != "PCL-1" || back.OrderID != cause.OrderID {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
	}
}

// Bytes that are no event, or an event of another type, are errors.
func TestWrongBytesAreErrors(t *testing.T) {
	if _, err := saga.DecodeMessage([]byte("garbage")); err == nil {
		t.Fatal("garbage decoded")
	}
	for _, v := range load(t) {
		if v.Event == saga.EventOrderCreated {
			if _, err := saga.Decode[saga.PaymentCompleted](unhex(t, v.Written)); err == nil {
				t.Fatal("an order.created decoded as a payment.completed")
			}
			return
		}
	}
}
