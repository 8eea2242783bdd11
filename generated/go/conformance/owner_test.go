package conformance

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/owner"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/scenario"
)

type status = saga.OrderStatus

// orderHandler is a status owner written in Go against the generated package: it answers
// as the Rust order service does (an order completes when its shipment is booked; a
// timeout cancels it) and records what the status machine made of each event.
type orderHandler struct{ steps []owner.Step[status] }

func (h *orderHandler) seen(step owner.Step[status]) { h.steps = append(h.steps, step) }

func (h *orderHandler) OnStockReductionSuccess(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.StockReductionSuccess], step owner.Step[status]) (saga.OrderOnStockReductionSuccess, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnStockReductionFail(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.StockReductionFail], step owner.Step[status]) (saga.OrderOnStockReductionFail, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnStockReleased(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.StockReleased], step owner.Step[status]) (saga.OrderOnStockReleased, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnPaymentCompleted(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.PaymentCompleted], step owner.Step[status]) (saga.OrderOnPaymentCompleted, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnPaymentFail(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.PaymentFail], step owner.Step[status]) (saga.OrderOnPaymentFail, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnPaymentRefunded(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.PaymentRefunded], step owner.Step[status]) (saga.OrderOnPaymentRefunded, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnShipmentBooked(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.ShipmentBooked], step owner.Step[status]) (saga.OrderOnShipmentBooked, error) {
	h.seen(step)
	if step.Kind != owner.Moved {
		return nil, nil
	}
	return saga.OrderCompleted{CompletedAt: participant.Now()}, nil
}
func (h *orderHandler) OnShipmentFailed(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.ShipmentFailed], step owner.Step[status]) (saga.OrderOnShipmentFailed, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnShipmentCancelled(_ context.Context, _ pgx.Tx, _ *saga.Envelope[saga.ShipmentCancelled], step owner.Step[status]) (saga.OrderOnShipmentCancelled, error) {
	h.seen(step)
	return nil, nil
}
func (h *orderHandler) OnTimeout(_ context.Context, _ pgx.Tx, _ uuid.UUID, from, _ status) (saga.OrderTimeoutReply, error) {
	return saga.OrderCancelled{Reason: saga.CancelReasonTimedOut, StatusAtCancel: string(from)}, nil
}

// owned is a Go status owner over a memory store, and its consumer binding.
func owned(t *testing.T) (*scenario.Owner[status], *orderHandler, participant.Binding) {
	t.Helper()
	h := &orderHandler{}
	o := scenario.NewOwner(time.Unix(1_764_000_000, 0).UTC(), func(s owner.Store[status]) *owner.Owner[status] { return saga.OrderOwner(h, s) })
	return o, h, saga.OrderBinding(o.Owner)
}

// orderCommands executes CreateOrder as the Rust order service does, without prices.
type orderCommands struct{}

func (orderCommands) CreateOrder(_ context.Context, _ pgx.Tx, _ uuid.UUID, c saga.CreateOrder) (saga.OrderCreated, error) {
	return saga.OrderCreated{UserID: c.UserID, Items: c.Items, CreatedAt: participant.Now()}, nil
}

// start begins saga key with the entry command, in trace; the outbox row of
// `order.created`.
func start(t *testing.T, o *scenario.Owner[status], key uuid.UUID, trace *string) *participant.Outbound {
	t.Helper()
	items := []saga.OrderItem{{ProductID: uuid.New(), Quantity: 2}}
	e, err := saga.RunCreateOrder(context.Background(), nil, o.Owner, orderCommands{}, key, saga.CreateOrder{UserID: uuid.New(), Items: items}, trace, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := o.Store.History[len(o.Store.History)-1]
	if first.From != nil || first.To != saga.OrderStatusCreated || first.Cause != owner.Started || first.EventID != e.EventID ||
		first.Deadline == nil || !first.Deadline.Equal(o.Store.Clock.Add(30*time.Second)) {
		t.Fatalf("the first transition: %+v", first)
	}
	created := o.Store.Outbox[len(o.Store.Outbox)-1]
	data, err := e.Encode()
	if err != nil || created.EventType != saga.EventOrderCreated || string(created.Payload) != string(data) ||
		created.Headers["saga-deadline"] == "" || created.Headers["traceparent"] != *trace {
		t.Fatalf("order.created: %+v (%v)", created, err)
	}
	decoded, err := saga.Decode[saga.OrderCreated](created.Payload)
	if err != nil || decoded.Context == nil || !slices.Equal(decoded.Context.Items, items) || !decoded.Deadline.Equal(*first.Deadline) {
		t.Fatalf("order.created as published: %+v (%v)", decoded, err)
	}
	return created
}

// deliver runs event through the owner's binding as its consumer would (decoded from its
// bytes, handled in the inbox row's transaction, here the memory store's).
func deliver(t *testing.T, b participant.Binding, event string, key uuid.UUID) *participant.Outbound {
	t.Helper()
	m, err := saga.Sample(event, key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	in, err := b.Decode(data)
	if err != nil || in == nil {
		t.Fatalf("%s: the owner's binding does not take it (%v)", event, err)
	}
	reply, err := in.Run(context.Background(), nil)
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	return reply
}

// Every path of the spec's status machine, walked by a status owner written in Go: the
// saga started by the entry command (its first status, `order.created` with the saga
// context and the deadline), each event delivered through the generated binding moves the saga where the path says, each
// timeout fires when the virtual clock passes it and publishes `order.cancelled` in the
// saga's trace, a booked shipment completes the order, and every path ends in a terminal
// status. The paths are the Rust scenarios' (checked against them by the shared vectors).
func TestAGoStatusOwnerWalksEveryPathOfTheSpec(t *testing.T) {
	paths := saga.OrderMachine.Paths()
	if len(paths) < 5 {
		t.Fatalf("%d paths", len(paths))
	}
	for _, path := range paths {
		o, _, binding := owned(t)
		key, trace := uuid.New(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		created := start(t, o, key, &trace)
		var replies []string
		for _, step := range path {
			current, _ := o.Status(key)
			if step.Event != "" {
				if reply := deliver(t, binding, step.Event, key); reply != nil {
					replies = append(replies, reply.EventType)
				}
			} else {
				timeout, _ := saga.OrderMachine.Timeout(current)
				if due, err := o.Advance(timeout.After - time.Microsecond); err != nil || len(due) != 0 {
					t.Fatalf("%v: timed out early from %s (%v)", path, current, err)
				}
				if due, err := o.Advance(time.Microsecond); err != nil || !slices.Equal(due, []uuid.UUID{key}) {
					t.Fatalf("%v: no timeout from %s (%v, %v)", path, current, due, err)
				}
			}
			if got, _ := o.Status(key); got != step.To {
				t.Fatalf("%v: after %q the saga is %s", path, step.Event, got)
			}
		}
		end, _ := o.Status(key)
		if !saga.OrderMachine.IsTerminal(end) || len(o.Store.History) != len(path)+1 {
			t.Fatalf("%v: ended in %s with %d history rows", path, end, len(o.Store.History))
		}
		if o.Store.Outbox[0] != created {
			t.Fatalf("%v: the first event published is not order.created", path)
		}
		last := path[len(path)-1]
		switch {
		case last.Event == "":
			cancelled := o.Store.Outbox[len(o.Store.Outbox)-1]
			if cancelled.EventType != saga.EventOrderCancelled || cancelled.Key != key.String() || cancelled.Topic != saga.TopicOrderEvents ||
				cancelled.Headers["traceparent"] != trace {
				t.Fatalf("%v: the timeout published %+v", path, cancelled)
			}
		case last.To == saga.OrderStatusCompleted:
			if !slices.Equal(replies, []string{saga.EventOrderCompleted}) {
				t.Fatalf("%v: replies %v", path, replies)
			}
		default:
			if len(replies) != 0 || len(o.Store.Outbox) != 1 {
				t.Fatalf("%v: published %v %v", path, replies, o.Store.Outbox)
			}
		}
	}
}

// Replies on different topics are not ordered: `payment.completed` may overtake
// `stock.reduction.success`. It waits parked and is applied, with its handler, when the
// reservation arrives; a redelivery while it waits parks it once; a late event after the
// end is handled as late and changes nothing.
func TestAnEarlyReplyWaitsParkedAndALateOneChangesNothing(t *testing.T) {
	o, h, binding := owned(t)
	key := uuid.New()
	if err := o.Given(key, saga.OrderMachine.Initial); err != nil {
		t.Fatal(err)
	}
	early, err := saga.Sample(saga.EventPaymentCompleted, key)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := o.Owner.RunEvent(context.Background(), nil, early); err != nil {
			t.Fatal(err)
		}
	}
	if s, _ := o.Status(key); s != saga.OrderStatusCreated || len(o.Store.Parked) != 1 || len(h.steps) != 0 {
		t.Fatalf("parking: %s, %d parked, %d handled", s, len(o.Store.Parked), len(h.steps))
	}
	deliver(t, binding, saga.EventStockReductionSuccess, key)
	if s, _ := o.Status(key); s != saga.OrderStatusPaid || len(o.Store.Parked) != 0 {
		t.Fatalf("after the reservation: %s, %d parked", s, len(o.Store.Parked))
	}
	want := []owner.Step[status]{
		{Kind: owner.Moved, From: saga.OrderStatusCreated, To: saga.OrderStatusInventoryReserved},
		{Kind: owner.Moved, From: saga.OrderStatusInventoryReserved, To: saga.OrderStatusPaid},
	}
	if !slices.Equal(h.steps, want) {
		t.Fatalf("steps: %+v", h.steps)
	}
	deliver(t, binding, saga.EventShipmentBooked, key)
	if reply := deliver(t, binding, saga.EventShipmentFailed, key); reply != nil {
		t.Fatalf("a late event replied %+v", reply)
	}
	if s, _ := o.Status(key); s != saga.OrderStatusCompleted || h.steps[len(h.steps)-1].Kind != owner.Late {
		t.Fatalf("late: %s, %+v", s, h.steps[len(h.steps)-1])
	}
}

// The owner's binding takes exactly the events the spec sends the owner.
func TestTheOwnersBindingTakesExactlyItsSubscriptions(t *testing.T) {
	_, _, binding := owned(t)
	for _, e := range saga.Events {
		m, err := saga.Sample(e.EventType, uuid.New())
		if err != nil {
			t.Fatal(err)
		}
		data, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		in, err := binding.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		subscribed := slices.ContainsFunc(saga.Subscriptions, func(s contract.Subscription) bool {
			return s.Service == "order" && s.EventType == e.EventType
		})
		if (in != nil) != subscribed {
			t.Errorf("%s: taken %v, subscribed %v", e.EventType, in != nil, subscribed)
		}
	}
}
