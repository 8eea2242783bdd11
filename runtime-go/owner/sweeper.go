package owner

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/health"
)

// PassOver is how long a saga that failed to resolve is passed over before it is tried
// again.
const PassOver = time.Minute

// Sweeper is the status owner's timeout sweeper (runtime/src/sweeper.rs): on an
// interval, one saga per transaction, it resolves the sagas past their deadline as the
// spec says. A saga that cannot be resolved is passed over for a while, so it never holds
// back the others. Deadlines are judged by the owner's caught-up Clock less Grace, never by
// the wall clock: an outage of the platform does not decide an outcome.
type Sweeper[S ~string] struct {
	Owner *Owner[S]
	Pool  *pgxpool.Pool
	Clock *Clock
	// Interval is how often it looks for overdue sagas.
	Interval time.Duration
	// Grace is how long after the clock passed a deadline the saga is resolved: time for
	// a reply published just before to be relayed and consumed.
	Grace time.Duration
	// Probe hears when sweeping fails as a whole (the database is away).
	Probe *health.Probe
}

// Run sweeps until ctx ends.
func (s *Sweeper[S]) Run(ctx context.Context) {
	passedOver := map[uuid.UUID]time.Time{}
	for ctx.Err() == nil {
		for key, since := range passedOver {
			if time.Since(since) >= PassOver {
				delete(passedOver, key)
			}
		}
		// Until the owner was first caught up, no deadline can be judged.
		if now, known := s.Clock.Now(); known {
			skip := make([]uuid.UUID, 0, len(passedOver))
			for key := range passedOver {
				skip = append(skip, key)
			}
			done := s.Probe.Attempt()
			key, resolved, err := s.Once(ctx, now.Add(-s.Grace), skip)
			done()
			var sweep *SweepError
			switch {
			case err == nil && resolved:
				// One resolved: there may be more due right now.
				s.Probe.Working()
				continue
			case err == nil:
				s.Probe.Working()
			case errors.As(err, &sweep) && sweep.SagaKey != nil && db.Class(err) != contract.Infrastructure:
				// An outage met while resolving one saga is no fault of that saga; anything
				// else is.
				slog.Error("cannot resolve an overdue saga; passing it over", "saga_key", key.String(), "error", err, "for", PassOver.String())
				passedOver[key] = time.Now()
				continue
			case ctx.Err() == nil:
				slog.Warn("timeout sweep failed; retrying", "error", err)
				s.Probe.Failing(err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.Interval):
		}
	}
	slog.Info("timeout sweeper stopped")
}

// Once resolves the most overdue saga (deadline at or before asOf) not in skip, in its
// own transaction; false when none is due.
func (s *Sweeper[S]) Once(ctx context.Context, asOf time.Time, skip []uuid.UUID) (uuid.UUID, bool, error) {
	var key uuid.UUID
	var resolved bool
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var err error
		key, resolved, err = s.Owner.RunTimeout(ctx, tx, asOf, skip)
		return err
	})
	return key, resolved, err
}
