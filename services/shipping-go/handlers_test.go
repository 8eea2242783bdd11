package main

import (
	"testing"

	"github.com/google/uuid"

	saga "sagaplatform/generated/go/orderfulfillment"
)

func TestATrackingNumberIsTheRustServicesOne(t *testing.T) {
	// services/shipping/src/handlers.rs: the last 16 hex digits of the order, in capitals.
	order := uuid.MustParse("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
	if got := TrackingOf(order); got != "PCL-8A9B0C1D2E3F4A5B" {
		t.Fatalf("tracking %s", got)
	}
}

func TestAParcelHoldsTheSumOfTheQuantities(t *testing.T) {
	if UnitsOf(nil) != nil {
		t.Fatal("no context weighs something")
	}
	units := UnitsOf(&saga.SagaContext{Items: []saga.OrderItem{{Quantity: 3}, {Quantity: 47}}})
	if units == nil || *units != 50 {
		t.Fatalf("units %v", units)
	}
}
