package main

import (
	"context"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/migrations"
	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/scenario"
	"sagaplatform/runtime-go/stacktest"
)

// The request whose reply compensation c undoes at shipping: the event shipping answers
// with c.Undoes.
func requestOf(t *testing.T, c contract.Compensation) string {
	t.Helper()
	for _, s := range saga.Subscriptions {
		if s.Service == c.Service && slices.Contains(s.Replies, c.Undoes) {
			return s.EventType
		}
	}
	t.Fatalf("no request of %s answers %s", c.Service, c.Undoes)
	return ""
}

func status(t *testing.T, tx pgx.Tx, order uuid.UUID) string {
	t.Helper()
	var s string
	if err := tx.QueryRow(context.Background(), "SELECT status FROM shipments WHERE order_id = $1", order).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Every compensation the spec gives the shipping service, on its real handlers against a
// database of its schema (in one transaction, rolled back): the request, then its
// compensation delivered twice, gives back once; a second compensation gives back nothing
// more; and where the spec promises a tombstone, the compensation first makes the request
// that follows do nothing. The handlers' side of what `cargo xtask verify` assumes.
func TestEveryCompensationOfTheShippingServiceGivesBackWhatItBookedOnce(t *testing.T) {
	stack := stacktest.Get(t)
	conn := stack.Connect(t, stack.Database(t))
	runtime, _ := db.Migrations(migrations.FS, "runtime")
	own, _ := db.Migrations(migrations.FS, "shipping")
	ctx := context.Background()
	if err := db.Migrate(ctx, conn, runtime, own); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	compensations := 0
	for _, c := range saga.Compensations {
		if c.Service != "shipping" {
			continue
		}
		compensations++
		s := scenario.New(saga.ShippingBinding(shipping{maxParcelUnits: DefaultMaxParcelUnits}))
		sample := func(event string, key uuid.UUID) saga.Message {
			m, err := saga.Sample(event, key)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		key := uuid.New()
		booked, err := s.When(ctx, tx, sample(requestOf(t, c), key))
		if err != nil || booked.Reply == nil || booked.Reply.EventType != c.Undoes {
			t.Fatalf("%+v: the request: %+v, %v", c, booked, err)
		}
		twice, err := s.WhenTwice(ctx, tx, sample(c.On, key))
		if err != nil || twice[0].Reply == nil || twice[0].Reply.EventType != saga.EventShipmentCancelled || !twice[1].Duplicate {
			t.Fatalf("%+v: the compensation twice: %+v, %v", c, twice, err)
		}
		again, err := s.When(ctx, tx, sample(c.On, key))
		if err != nil || again.Reply != nil || status(t, tx, key) != "cancelled" {
			t.Fatalf("%+v: another compensation: %+v, %v", c, again, err)
		}
		if c.Tombstone {
			key := uuid.New()
			first, err := s.When(ctx, tx, sample(c.On, key))
			if err != nil || first.Reply != nil {
				t.Fatalf("%+v: the compensation first: %+v, %v", c, first, err)
			}
			late, err := s.When(ctx, tx, sample(requestOf(t, c), key))
			if err != nil || late.Reply != nil || status(t, tx, key) != "cancelled" {
				t.Fatalf("%+v: the request after the tombstone: %+v, %v", c, late, err)
			}
		}
		if len(s.Emitted(key)) != 2 {
			t.Fatalf("%+v: emitted %d", c, len(s.Emitted(key)))
		}
	}
	if compensations == 0 {
		t.Fatal("the spec gives shipping no compensation")
	}
}

// Every event the service subscribes to is handled, and no other; a parcel of the sample's
// size is booked.
func TestTheServiceHandlesExactlyTheEventsTheSpecSendsIt(t *testing.T) {
	stack := stacktest.Get(t)
	conn := stack.Connect(t, stack.Database(t))
	runtime, _ := db.Migrations(migrations.FS, "runtime")
	own, _ := db.Migrations(migrations.FS, "shipping")
	ctx := context.Background()
	if err := db.Migrate(ctx, conn, runtime, own); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	s := scenario.New(saga.ShippingBinding(shipping{maxParcelUnits: DefaultMaxParcelUnits}))
	for _, e := range saga.Events {
		subscribed := slices.ContainsFunc(saga.Subscriptions, func(sub contract.Subscription) bool {
			return sub.Service == "shipping" && sub.EventType == e.EventType
		})
		// Only the events on the topics shipping reads reach it.
		if !slices.Contains(saga.ShippingBinding(nil).Group.Topics, e.Topic) {
			continue
		}
		m, err := saga.Sample(e.EventType, uuid.New())
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.When(ctx, tx, m)
		if err != nil || d.NotHandled == subscribed {
			t.Fatalf("%s (subscribed %v): %+v, %v", e.EventType, subscribed, d, err)
		}
	}
}
