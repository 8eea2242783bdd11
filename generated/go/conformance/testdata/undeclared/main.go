// A shipping handler that replies to a cancellation with a booking, which the spec does
// not allow: this package must not compile (conformance/handlers_test.go).
package main

import (
	"context"

	"github.com/jackc/pgx/v5"

	saga "sagaplatform/generated/go/orderfulfillment"
)

type handler struct{}

func (handler) OnPaymentCompleted(context.Context, pgx.Tx, *saga.Envelope[saga.PaymentCompleted]) (saga.ShippingOnPaymentCompleted, error) {
	return saga.ShipmentBooked{Tracking: "PCL-1"}, nil
}

func (handler) OnOrderCancelled(context.Context, pgx.Tx, *saga.Envelope[saga.OrderCancelled]) (saga.ShippingOnOrderCancelled, error) {
	return saga.ShipmentBooked{Tracking: "PCL-1"}, nil
}

func main() { _ = saga.ShippingBinding(handler{}) }
