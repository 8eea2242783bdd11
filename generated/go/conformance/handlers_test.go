package conformance

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	saga "sagaplatform/generated/go/orderfulfillment"
)

// A shipping handler that books every paid order and cancels nothing.
type booking struct{ seen []string }

func (b *booking) OnPaymentCompleted(_ context.Context, _ pgx.Tx, e *saga.Envelope[saga.PaymentCompleted]) (saga.ShippingOnPaymentCompleted, error) {
	b.seen = append(b.seen, e.EventType())
	return saga.ShipmentBooked{Tracking: "PCL-" + e.OrderID.String()[:8]}, nil
}

func (b *booking) OnOrderCancelled(_ context.Context, _ pgx.Tx, e *saga.Envelope[saga.OrderCancelled]) (saga.ShippingOnOrderCancelled, error) {
	b.seen = append(b.seen, e.EventType())
	return nil, nil
}

// The binding decodes what the service subscribes to, runs its handler, and gives the
// reply as the outbox keeps it: keyed, on the reply's topic, with its headers.
func TestABindingRunsTheHandlerAndGivesItsReplyForTheOutbox(t *testing.T) {
	h := &booking{}
	binding := saga.ShippingBinding(h)
	if binding.Service != "shipping" || binding.Group.GroupID != "order_fulfillment.shipping" {
		t.Fatalf("binding: %s, %s", binding.Service, binding.Group.GroupID)
	}
	for _, s := range binding.Writes {
		if !strings.HasPrefix(s.Event, "shipment.") {
			t.Fatalf("shipping writes %s", s.Event)
		}
	}
	var handled, skipped int
	for _, v := range load(t) {
		in, err := binding.Decode(unhex(t, v.Written))
		if err != nil {
			t.Fatalf("%s v%d: %v", v.Event, v.Version, err)
		}
		if in == nil {
			skipped++
			continue
		}
		handled++
		out, err := in.Run(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if v.Event == saga.EventOrderCancelled {
			if out != nil {
				t.Fatalf("a cancellation replied %+v", out)
			}
			continue
		}
		if out.Topic != saga.TopicShippingEvents || out.Key != in.Key || out.EventType != saga.EventShipmentBooked ||
			out.Headers["event-type"] != saga.EventShipmentBooked || out.Headers["event-id"] != out.EventID.String() {
			t.Fatalf("reply %+v to %+v", out, in)
		}
		booked, err := saga.Decode[saga.ShipmentBooked](out.Payload)
		if err != nil || booked.OrderID.String() != in.Key || booked.EventID != out.EventID {
			t.Fatalf("reply payload: %+v, %v", booked, err)
		}
	}
	if handled == 0 || skipped == 0 || len(h.seen) != handled {
		t.Fatalf("handled %d, skipped %d, seen %v", handled, skipped, h.seen)
	}
}

// Replying with an event the spec does not allow after the one handled does not compile.
func TestAnUndeclaredReplyDoesNotCompile(t *testing.T) {
	out, err := exec.Command("go", "vet", "./testdata/undeclared").CombinedOutput()
	if err == nil {
		t.Fatal("a handler replying shipment.booked to order.cancelled compiled")
	}
	if !strings.Contains(string(out), "ShippingOnOrderCancelled") || !strings.Contains(string(out), "shippingOnOrderCancelled") {
		t.Fatalf("it failed for another reason:\n%s", out)
	}
}
