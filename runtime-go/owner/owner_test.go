package owner_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"sagaplatform/runtime-go/contract"
	. "sagaplatform/runtime-go/owner"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/scenario"
	"sagaplatform/runtime-go/status"
)

// The machine of the Rust driver's tests (contract/src/owner.rs): `a -x-> b -y-> c`,
// `a -z-> ended`; `y` parks, `note` moves nothing; `a` and `b` time out to `timed_out`.
type st string

var machine = &status.Machine[st]{
	Owner:       "fake",
	Initial:     "a",
	Statuses:    []st{"a", "b", "c", "ended", "timed_out"},
	Terminal:    []st{"c", "ended", "timed_out"},
	Transitions: []status.Transition[st]{{From: "a", Event: "x", To: "b"}, {From: "b", Event: "y", To: "c"}, {From: "a", Event: "z", To: "ended"}},
	Timeouts:    []status.Timeout[st]{{In: "a", After: 30 * time.Second, To: "timed_out"}, {In: "b", After: 30 * time.Second, To: "timed_out", Emits: "expired"}},
	Parks:       []string{"y"},
}

// msg is an inbound event: its payload is its key and kind.
type msg struct {
	id, key uuid.UUID
	kind    string
}

func newMsg(key uuid.UUID, kind string) *msg { return &msg{participant.NewEventID(), key, kind} }

func (m *msg) ID() uuid.UUID           { return m.id }
func (m *msg) EventType() string       { return m.kind }
func (m *msg) Topic() string           { return "events" }
func (m *msg) Key() uuid.UUID          { return m.key }
func (m *msg) Trace() (a, b *string)   { return nil, nil }
func (m *msg) Due() *time.Time         { return nil }
func (m *msg) Encode() ([]byte, error) { return []byte(m.key.String() + "|" + m.kind), nil }

type handled struct {
	kind string
	step Step[st]
}

// db is the owner's tables (the scenario harness's memory store), and what the handler ran.
type db struct {
	*scenario.MemoryStore[st]
	handled []handled
	// parkedReads counts the driver's look-ups of a saga's parked events.
	parkedReads int
}

func (d *db) ParkedFor(ctx context.Context, tx pgx.Tx, key uuid.UUID) ([]Parked, error) {
	d.parkedReads++
	return d.MemoryStore.ParkedFor(ctx, tx, key)
}

func newDB(sagas map[uuid.UUID]st) *db {
	d := &db{MemoryStore: scenario.NewMemoryStore[st](at(0))}
	for k, s := range sagas {
		d.Sagas[k] = &scenario.Saga[st]{Status: s}
	}
	return d
}

func at(secs int) time.Time { return time.Unix(1_700_000_000+int64(secs), 0).UTC() }

func (d *db) owner() *Owner[st] {
	return &Owner[st]{
		Machine: machine,
		Store:   d,
		Unparked: func(p Parked) participant.Message {
			key, kind, ok := strings.Cut(string(p.Payload), "|")
			parsed, err := uuid.Parse(key)
			if !ok || err != nil {
				return nil
			}
			return &msg{p.EventID, parsed, kind}
		},
		Handle: func(_ context.Context, _ pgx.Tx, e participant.Message, step Step[st]) (*participant.Outbound, error) {
			d.handled = append(d.handled, handled{e.EventType(), step})
			if e.EventType() == "y" {
				return &participant.Outbound{EventID: participant.NewEventID(), EventType: "done"}, nil
			}
			return nil, nil
		},
		OnTimeout: func(_ context.Context, _ pgx.Tx, saga Overdue[st], to st) (*participant.Outbound, error) {
			if saga.Traceparent == nil || *saga.Traceparent != "trace" || to != "timed_out" {
				return nil, errors.New("not the saga's trace or timeout")
			}
			if saga.Status == "b" {
				return &participant.Outbound{EventID: participant.NewEventID(), EventType: "expired"}, nil
			}
			return nil, nil
		},
	}
}

func run(t *testing.T, d *db, m participant.Message) *participant.Outbound {
	t.Helper()
	out, err := d.owner().RunEvent(context.Background(), nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestATriggerMovesTheStatusWithAHistoryRowAndADeadline(t *testing.T) {
	key := uuid.New()
	d := newDB(map[uuid.UUID]st{key: "a"})
	if out := run(t, d, newMsg(key, "x")); out != nil {
		t.Fatalf("reply: %+v", out)
	}
	if s := d.Sagas[key]; s.Status != "b" || s.Deadline == nil || !s.Deadline.Equal(at(30)) {
		t.Fatalf("saga: %+v", s)
	}
	if len(d.History) != 1 || *d.History[0].From != "a" || d.History[0].To != "b" || d.History[0].EventType != "x" || d.History[0].Cause != ByEvent {
		t.Fatalf("history: %+v", d.History)
	}
	if !slices.Equal(d.handled, []handled{{"x", Step[st]{Kind: Moved, From: "a", To: "b"}}}) {
		t.Fatalf("handled: %+v", d.handled)
	}
}

func TestAnEventThatMovesNothingIsRecordedAndHandled(t *testing.T) {
	key := uuid.New()
	d := newDB(map[uuid.UUID]st{key: "b"})
	run(t, d, newMsg(key, "note"))
	if len(d.History) != 0 || !slices.Equal(d.handled, []handled{{"note", Step[st]{Kind: Recorded, From: "b"}}}) {
		t.Fatalf("history %+v, handled %+v", d.History, d.handled)
	}
}

func TestAnEventAfterTheEndIsLateAndChangesNothing(t *testing.T) {
	key := uuid.New()
	d := newDB(map[uuid.UUID]st{key: "ended"})
	run(t, d, newMsg(key, "x"))
	if d.Sagas[key].Status != "ended" || len(d.History) != 0 || !slices.Equal(d.handled, []handled{{"x", Step[st]{Kind: Late, From: "ended"}}}) {
		t.Fatalf("status %s, history %+v, handled %+v", d.Sagas[key].Status, d.History, d.handled)
	}
}

func TestAnEarlyEventWaitsParkedUntilTheStatusAcceptsIt(t *testing.T) {
	key := uuid.New()
	d := newDB(map[uuid.UUID]st{key: "a"})
	early := newMsg(key, "y")
	if out := run(t, d, early); out != nil || d.Sagas[key].Status != "a" || len(d.Parked) != 1 || len(d.handled) != 0 || len(d.History) != 0 {
		t.Fatalf("parking: %+v, %+v", out, d)
	}
	run(t, d, early) // redelivered while it waits: parked once
	if len(d.Parked) != 1 {
		t.Fatalf("parked twice: %d", len(d.Parked))
	}
	run(t, d, newMsg(key, "x"))
	if d.Sagas[key].Status != "c" || len(d.Parked) != 0 {
		t.Fatalf("after x: %s, %d parked", d.Sagas[key].Status, len(d.Parked))
	}
	want := []handled{{"x", Step[st]{Kind: Moved, From: "a", To: "b"}}, {"y", Step[st]{Kind: Moved, From: "b", To: "c"}}}
	if !slices.Equal(d.handled, want) {
		t.Fatalf("handled: %+v", d.handled)
	}
	if h := d.History[1]; *h.From != "b" || h.To != "c" || h.Cause != ByEvent || h.EventType != "y" {
		t.Fatalf("history: %+v", h)
	}
	if len(d.Outbox) != 1 || d.Outbox[0].EventType != "done" {
		t.Fatalf("outbox: %+v", d.Outbox)
	}
	// Looked for once, after b; c is terminal and accepts nothing.
	if d.parkedReads != 1 {
		t.Fatalf("parked events read %d times", d.parkedReads)
	}
}

func TestASagaThatEndsDoesNotLookForParkedEvents(t *testing.T) {
	key := uuid.New()
	d := newDB(map[uuid.UUID]st{key: "a"})
	run(t, d, newMsg(key, "y"))
	run(t, d, newMsg(key, "z"))
	if d.Sagas[key].Status != "ended" || len(d.Parked) != 1 || d.parkedReads != 0 {
		t.Fatalf("status %s, %d parked, read %d times", d.Sagas[key].Status, len(d.Parked), d.parkedReads)
	}
}

func TestAParkedEventOfAnotherSagaStaysParked(t *testing.T) {
	one, other := uuid.New(), uuid.New()
	d := newDB(map[uuid.UUID]st{one: "a", other: "a"})
	run(t, d, newMsg(other, "y"))
	run(t, d, newMsg(one, "x"))
	if d.Sagas[one].Status != "b" || d.Sagas[other].Status != "a" || len(d.Parked) != 1 {
		t.Fatalf("%s %s %d", d.Sagas[one].Status, d.Sagas[other].Status, len(d.Parked))
	}
}

func TestAnEventWithoutAnAnswerFailsAndAnUnknownSagaWaits(t *testing.T) {
	key := uuid.New()
	d := newDB(map[uuid.UUID]st{key: "b"})
	_, err := d.owner().RunEvent(context.Background(), nil, newMsg(key, "z"))
	var unanswered *UnansweredError
	if !errors.As(err, &unanswered) || unanswered.Status != "b" || unanswered.Event != "z" || unanswered.Class() != contract.Permanent {
		t.Fatalf("unanswered: %v", err)
	}
	unknown := uuid.New()
	_, err = d.owner().RunEvent(context.Background(), nil, newMsg(unknown, "x"))
	var notYet *UnknownSagaError
	if !errors.As(err, &notYet) || notYet.SagaKey != unknown || notYet.Class() != contract.NotYet {
		t.Fatalf("unknown: %v", err)
	}
	if len(d.handled) != 0 || len(d.History) != 0 {
		t.Fatal("a failed event changed something")
	}
}

func TestTimeoutsResolveTheMostOverdueSagaFirst(t *testing.T) {
	a, b := uuid.New(), uuid.New()
	d := newDB(nil)
	da, db, trace := at(20), at(10), "trace"
	d.Sagas[a], d.Sagas[b] = &scenario.Saga[st]{Status: "a", Deadline: &da, Traceparent: &trace}, &scenario.Saga[st]{Status: "b", Deadline: &db, Traceparent: &trace}
	o, ctx := d.owner(), context.Background()
	if _, due, err := o.RunTimeout(ctx, nil, at(5), nil); due || err != nil {
		t.Fatalf("none is due at 5: %v %v", due, err)
	}
	var order []uuid.UUID
	for {
		key, due, err := o.RunTimeout(ctx, nil, at(20), order)
		if err != nil {
			t.Fatal(err)
		}
		if !due {
			break
		}
		order = append(order, key)
	}
	if !slices.Equal(order, []uuid.UUID{b, a}) || d.Sagas[a].Status != "timed_out" || d.Sagas[b].Status != "timed_out" {
		t.Fatalf("order %v, statuses %s %s", order, d.Sagas[a].Status, d.Sagas[b].Status)
	}
	if len(d.History) != 2 || d.History[0].EventType != "expired" || d.History[1].EventType != "timeout" ||
		d.History[0].Cause != ByTimeout || *d.History[1].From != "a" {
		t.Fatalf("history: %+v", d.History)
	}
	if len(d.Outbox) != 1 || d.Outbox[0].EventType != "expired" {
		t.Fatalf("only b's timeout publishes: %+v", d.Outbox)
	}
}

func TestATimeoutThatFailsNamesItsSaga(t *testing.T) {
	key := uuid.New()
	d := newDB(nil)
	due := at(0)
	d.Sagas[key] = &scenario.Saga[st]{Status: "a", Deadline: &due}
	o := d.owner()
	o.OnTimeout = func(context.Context, pgx.Tx, Overdue[st], st) (*participant.Outbound, error) {
		return nil, errors.New("the handler failed")
	}
	_, _, err := o.RunTimeout(context.Background(), nil, at(1), nil)
	var sweep *SweepError
	if !errors.As(err, &sweep) || sweep.SagaKey == nil || *sweep.SagaKey != key || d.Sagas[key].Status != "a" {
		t.Fatalf("%v", err)
	}
}

func TestDeadlinesAreCountedToTheMicrosecond(t *testing.T) {
	d := newDB(nil)
	d.Clock = time.Unix(0, 1_700_000_000_123_456_789)
	deadline := d.owner().Deadline("a")
	if deadline == nil || deadline.UnixNano() != 1_700_000_030_123_456_000 {
		t.Fatalf("%v", deadline)
	}
	if d.owner().Deadline("c") != nil {
		t.Fatal("a terminal status has a deadline")
	}
}
