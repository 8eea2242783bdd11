// Command shipping-service-go is the shipping participant of the saga written in Go
// against the generated package (generated/go/orderfulfillment) and the Go runtime
// (runtime-go/): it books one parcel per paid order, refuses an order too large for one
// parcel, and cancels a booked parcel once when the order is given up on. It is
// interchangeable with the Rust shipping service (services/shipping): the same topics,
// group, tables, migrations, events and health.
package main

import (
	"fmt"
	"os"
	"strconv"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/migrations"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/service"
)

func main() {
	maxUnits := int64(DefaultMaxParcelUnits)
	if v, ok := os.LookupEnv("SHIPPING_MAX_PARCEL_UNITS"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "error: SHIPPING_MAX_PARCEL_UNITS: %q is not a whole number of at least 1\n", v)
			os.Exit(2)
		}
		maxUnits = n
	}
	runtime, err := db.Migrations(migrations.FS, "runtime")
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: the runtime's migrations: %v\n", err)
		os.Exit(1)
	}
	own, err := db.Migrations(migrations.FS, "shipping")
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: the shipping migrations: %v\n", err)
		os.Exit(1)
	}
	service.Main(service.Service{
		Binding: saga.ShippingBinding(shipping{maxParcelUnits: maxUnits}),
		About: "The shipping service of the saga, in Go: books one parcel per paid order and cancels it when the order is given up on.\n" +
			"SHIPPING_MAX_PARCEL_UNITS (environment only): the largest parcel, in units [default: 50].",
		Listen:     "127.0.0.1:17054",
		Database:   "postgres://shipping_service:shipping_service@127.0.0.1:17432/shipping_service",
		Runtime:    runtime,
		Migrations: own,
	})
}
