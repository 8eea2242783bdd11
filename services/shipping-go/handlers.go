package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	saga "sagaplatform/generated/go/orderfulfillment"
)

// The statements the handlers send: the Rust shipping service's (services/shipping/src/sql.rs).
const (
	refuse = "INSERT INTO shipments (order_id, status, units, reason) VALUES ($1, 'failed', $2, $3) " +
		"ON CONFLICT (order_id) DO NOTHING"
	book = "INSERT INTO shipments (order_id, status, units, tracking) VALUES ($1, 'booked', $2, $3) " +
		"ON CONFLICT (order_id) DO NOTHING"
	tombstone = "INSERT INTO shipments (order_id, status, units, reason, cancelled_at) " +
		"VALUES ($1, 'cancelled', 0, 'cancelled before payment', now()) ON CONFLICT (order_id) DO NOTHING"
	cancel = "UPDATE shipments SET status = 'cancelled', cancelled_at = now() WHERE order_id = $1 AND status = 'booked'"
)

// DefaultMaxParcelUnits is the largest parcel by default, in units (the sum of an
// order's quantities).
const DefaultMaxParcelUnits = 50

// shipping is the step's rules: one parcel per order, of at most maxParcelUnits units.
// Each method runs in the consumer's transaction, with the inbox row that makes a
// redelivery change nothing.
type shipping struct{ maxParcelUnits int64 }

// TrackingOf is the carrier's tracking number of an order's parcel: derived from the
// order, so a redelivered event books the same number.
func TrackingOf(order uuid.UUID) string {
	hex := strings.ToUpper(strings.ReplaceAll(order.String(), "-", ""))
	return "PCL-" + hex[len(hex)-16:]
}

// UnitsOf is the units in the parcel of the saga's items; nil when they are not known (a
// saga begun before the shipping step carries no context).
func UnitsOf(context *saga.SagaContext) *int64 {
	if context == nil {
		return nil
	}
	var units int64
	for _, item := range context.Items {
		units += int64(item.Quantity)
	}
	return &units
}

// OnPaymentCompleted: the order is paid; book its parcel, or refuse it if it is too
// large. An order already known here (booked, refused, or cancelled before its payment
// came) gets no second answer.
func (s shipping) OnPaymentCompleted(ctx context.Context, tx pgx.Tx, e *saga.Envelope[saga.PaymentCompleted]) (saga.ShippingOnPaymentCompleted, error) {
	log := slog.With("order_id", e.OrderID.String(), "event_id", e.EventID.String())
	units := UnitsOf(e.Context)
	if units == nil {
		log.Warn("a saga begun before the shipping step: its parcel is booked unweighed")
	}
	if units != nil && *units > s.maxParcelUnits {
		tag, err := tx.Exec(ctx, refuse, e.OrderID, *units, string(saga.ShippingFailureParcelTooLarge))
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 0 {
			log.Info("order already known to the shipping service")
			return nil, nil
		}
		log.Info("parcel too large: no shipment", "units", *units, "max", s.maxParcelUnits)
		return saga.ShipmentFailed{Reason: saga.ShippingFailureParcelTooLarge}, nil
	}
	tracking := TrackingOf(e.OrderID)
	tag, err := tx.Exec(ctx, book, e.OrderID, units, tracking)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		log.Info("order already known to the shipping service")
		return nil, nil
	}
	log.Info("shipment booked", "tracking", tracking)
	return saga.ShipmentBooked{Tracking: tracking}, nil
}

// OnOrderCancelled: the order was given up on; cancel its parcel, once. A cancellation
// that comes before the payment leaves a tombstone, so the payment, should it still
// come, books nothing.
func (s shipping) OnOrderCancelled(ctx context.Context, tx pgx.Tx, e *saga.Envelope[saga.OrderCancelled]) (saga.ShippingOnOrderCancelled, error) {
	log := slog.With("order_id", e.OrderID.String(), "event_id", e.EventID.String())
	tag, err := tx.Exec(ctx, tombstone, e.OrderID)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 1 {
		log.Info("cancelled before any shipment: tombstone left")
		return nil, nil
	}
	tag, err = tx.Exec(ctx, cancel, e.OrderID)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 0 {
		log.Info("nothing booked to cancel")
		return nil, nil
	}
	log.Info("shipment cancelled")
	return saga.ShipmentCancelled{}, nil
}
