package owner_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/health"
	. "sagaplatform/runtime-go/owner"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/scenario"
	"sagaplatform/runtime-go/stacktest"
)

type refused struct{}

func (refused) Error() string                { return "the handler refuses this saga" }
func (refused) Class() contract.FailureClass { return contract.Permanent }

// The sweeper, its transactions on the real database (around a memory store): every saga the caught-up clock (less
// the grace) has passed is resolved, most overdue first; one whose timeout fails for a
// reason of its own is passed over and does not hold back the others; none is judged
// before the clock is known, or by the wall clock.
func TestTheSweeperResolvesWhatTheClockPassedAndPassesOverWhatFails(t *testing.T) {
	stack := stacktest.Get(t)
	pool, err := pgxpool.New(context.Background(), stack.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	d := newDB(nil)
	overdue := func(s st, at time.Time) uuid.UUID {
		key, trace := uuid.New(), "trace"
		d.Sagas[key] = &scenario.Saga[st]{Status: s, Deadline: &at, Traceparent: &trace}
		return key
	}
	bad, early, late, notYet := overdue("a", at(5)), overdue("b", at(10)), overdue("a", at(20)), overdue("b", at(40))
	o := d.owner()
	timeout := o.OnTimeout
	o.OnTimeout = func(ctx context.Context, tx pgx.Tx, saga Overdue[st], to st) (*participant.Outbound, error) {
		if saga.SagaKey == bad {
			return nil, refused{}
		}
		return timeout(ctx, tx, saga, to)
	}
	clock := &Clock{}
	sweeper := &Sweeper[st]{Owner: o, Pool: pool, Clock: clock, Interval: 20 * time.Millisecond, Grace: 5 * time.Second,
		Probe: health.New(time.Minute, time.Minute, time.Minute).Probe("saga.sweeper")}
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { sweeper.Run(ctx); close(stopped) }()

	time.Sleep(100 * time.Millisecond)
	if len(d.History) != 0 {
		t.Fatal("a saga was judged before the clock was known")
	}
	clock.Set(at(30)) // judged at 25: bad, early and late are due, notYet is not
	stacktest.Eventually(t, "the due sagas are resolved", func() bool { return len(d.History) >= 2 })
	time.Sleep(100 * time.Millisecond)
	stop()
	<-stopped
	if len(d.History) != 2 || d.History[0].SagaKey != early || d.History[1].SagaKey != late {
		t.Fatalf("resolved %d: %+v", len(d.History), d.History)
	}
	if d.Sagas[bad].Status != "a" || d.Sagas[notYet].Status != "b" {
		t.Fatalf("bad %s, not yet due %s", d.Sagas[bad].Status, d.Sagas[notYet].Status)
	}
	if _, _, err := sweeper.Once(context.Background(), at(25), nil); !errors.As(err, new(refused)) {
		t.Fatalf("the refused saga's error: %v", err)
	}
}
