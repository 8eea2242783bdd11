// Package db is the database side of a Go participant: what a PostgreSQL error means for
// the message being handled, and the migrations, recorded as the Rust services record
// them.
package db

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"sagaplatform/runtime-go/contract"
)

// Class is what err means for the message being handled, as the Rust runtime's
// `db::class_of` says: an outage (nothing reached the database, the connection broke, it
// is shutting down or out of resources, or the transaction lost a serialization conflict
// or a deadlock), a race lost to a concurrent transaction (a unique or exclusion
// violation), or a permanent verdict (the statement or the data is wrong). An error that
// names its own class ([contract.Classified]) keeps it.
func Class(err error) contract.FailureClass {
	var classified contract.Classified
	if errors.As(err, &classified) {
		return classified.Class()
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch {
		case isOutage(pg.Code):
			return contract.Infrastructure
		case pg.Code == "23505" || pg.Code == "23P01":
			return contract.Contended
		default:
			return contract.Permanent
		}
	}
	// The database answered, but not with what the code expected.
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, pgx.ErrTooManyRows) {
		return contract.Permanent
	}
	var scan pgx.ScanArgError
	if errors.As(err, &scan) {
		return contract.Permanent
	}
	// I/O, TLS, protocol, a closed pool or connection, a timeout: the world, not the message.
	return contract.Infrastructure
}

// isOutage: connection exceptions (08), transaction rollbacks such as serialization
// failures and deadlocks (40), insufficient resources (53), operator intervention (57),
// system errors (58), a lock not available (55P03) and a read-only transaction during a
// failover (25006).
func isOutage(code string) bool {
	for _, class := range []string{"08", "40", "53", "57", "58"} {
		if strings.HasPrefix(code, class) {
			return true
		}
	}
	return code == "55P03" || code == "25006"
}
