package scenario

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"sagaplatform/runtime-go/owner"
	"sagaplatform/runtime-go/participant"
)

// Saga is one saga as a MemoryStore keeps it.
type Saga[S ~string] struct {
	Status   S
	Deadline *time.Time
	// Traceparent is the trace the saga started in (its timeouts belong to it).
	Traceparent *string
}

// MemoryStore is an owner.Store in memory, on a virtual clock: a status owner's tables as
// a scenario keeps them, for testing an owner's handlers and the driver without a
// database. The transaction it is given is ignored.
type MemoryStore[S ~string] struct {
	Clock   time.Time
	Sagas   map[uuid.UUID]*Saga[S]
	History []owner.Transition[S]
	Parked  []owner.Parked
	// parkedFor is the saga of each parked event.
	parkedFor map[uuid.UUID]uuid.UUID
	Outbox    []*participant.Outbound
}

// NewMemoryStore is an empty store whose clock starts at start.
func NewMemoryStore[S ~string](start time.Time) *MemoryStore[S] {
	return &MemoryStore[S]{Clock: start, Sagas: map[uuid.UUID]*Saga[S]{}, parkedFor: map[uuid.UUID]uuid.UUID{}}
}

// LoadForUpdate implements owner.Store.
func (m *MemoryStore[S]) LoadForUpdate(_ context.Context, _ pgx.Tx, key uuid.UUID) (S, bool, error) {
	s, ok := m.Sagas[key]
	if !ok {
		return "", false, nil
	}
	return s.Status, true, nil
}

// Now implements owner.Store: the virtual clock.
func (m *MemoryStore[S]) Now() time.Time { return m.Clock }

// WriteTransition implements owner.Store.
func (m *MemoryStore[S]) WriteTransition(_ context.Context, _ pgx.Tx, t owner.Transition[S]) error {
	s, ok := m.Sagas[t.SagaKey]
	if !ok {
		s = &Saga[S]{}
		if t.Event != nil {
			s.Traceparent, _ = t.Event.Trace()
		}
		m.Sagas[t.SagaKey] = s
	}
	s.Status, s.Deadline = t.To, t.Deadline
	m.History = append(m.History, t)
	return nil
}

// Park implements owner.Store: parking an event twice keeps one.
func (m *MemoryStore[S]) Park(_ context.Context, _ pgx.Tx, key uuid.UUID, event owner.Parked) error {
	if _, twice := m.parkedFor[event.EventID]; !twice {
		m.Parked, m.parkedFor[event.EventID] = append(m.Parked, event), key
	}
	return nil
}

// ParkedFor implements owner.Store.
func (m *MemoryStore[S]) ParkedFor(_ context.Context, _ pgx.Tx, key uuid.UUID) ([]owner.Parked, error) {
	var out []owner.Parked
	for _, p := range m.Parked {
		if m.parkedFor[p.EventID] == key {
			out = append(out, p)
		}
	}
	return out, nil
}

// Unpark implements owner.Store.
func (m *MemoryStore[S]) Unpark(_ context.Context, _ pgx.Tx, id uuid.UUID) error {
	m.Parked = slices.DeleteFunc(m.Parked, func(p owner.Parked) bool { return p.EventID == id })
	delete(m.parkedFor, id)
	return nil
}

// Publish implements owner.Store.
func (m *MemoryStore[S]) Publish(_ context.Context, _ pgx.Tx, event *participant.Outbound) error {
	m.Outbox = append(m.Outbox, event)
	return nil
}

// NextOverdue implements owner.Store: the saga due longest ago.
func (m *MemoryStore[S]) NextOverdue(_ context.Context, _ pgx.Tx, statuses []S, asOf time.Time, skip []uuid.UUID) (*owner.Overdue[S], error) {
	var due *owner.Overdue[S]
	var dueAt time.Time
	for key, s := range m.Sagas {
		if s.Deadline == nil || s.Deadline.After(asOf) || !slices.Contains(statuses, s.Status) || slices.Contains(skip, key) {
			continue
		}
		if due == nil || s.Deadline.Before(dueAt) {
			due, dueAt = &owner.Overdue[S]{SagaKey: key, Status: s.Status, Traceparent: s.Traceparent}, *s.Deadline
		}
	}
	return due, nil
}

// Owner is the status owner in a scenario: its events run through the driver and its
// handler once per event id (as the inbox keeps them), timeouts fire when the virtual
// clock passes them, and everything it publishes is kept.
type Owner[S ~string] struct {
	Owner     *owner.Owner[S]
	Store     *MemoryStore[S]
	delivered map[uuid.UUID]bool
	// Replies is what the owner's handler replied to events (the rest of what it
	// published, parked events' replies and timeouts', is in Store.Outbox).
	Replies []*participant.Outbound
}

// NewOwner is the owner bound by bind (the generated `<Owner>Owner(handler, store)`) over a
// fresh MemoryStore whose clock starts at start.
func NewOwner[S ~string](start time.Time, bind func(owner.Store[S]) *owner.Owner[S]) *Owner[S] {
	store := NewMemoryStore[S](start)
	return &Owner[S]{Owner: bind(store), Store: store, delivered: map[uuid.UUID]bool{}}
}

// Given is a saga of key in status, as if an entry command had started it there: its
// transition (cause Started, or Seeded for any status but the initial one) with its
// deadline by the virtual clock.
func (o *Owner[S]) Given(key uuid.UUID, status S) error {
	cause := owner.Started
	if status != o.Owner.Machine.Initial {
		cause = owner.Seeded
	}
	return o.Store.WriteTransition(context.Background(), nil, owner.Transition[S]{SagaKey: key, To: status,
		EventID: participant.NewEventID(), EventType: "seeded", Cause: cause, Deadline: o.Owner.Deadline(status)})
}

// When delivers event as the owner's consumer would, unless its id was delivered before
// (then it returns false and nothing runs).
func (o *Owner[S]) When(event participant.Message) (bool, error) {
	if o.delivered[event.ID()] {
		return false, nil
	}
	reply, err := o.Owner.RunEvent(context.Background(), nil, event)
	if err != nil {
		return false, err
	}
	o.delivered[event.ID()] = true
	if reply != nil {
		o.Replies = append(o.Replies, reply)
	}
	return true, nil
}

// Status is the status of saga key; false when the store does not know it.
func (o *Owner[S]) Status(key uuid.UUID) (S, bool) {
	s, ok := o.Store.Sagas[key]
	if !ok {
		return "", false
	}
	return s.Status, true
}

// Advance moves the virtual clock by d, then runs every timeout now due, as the sweeper
// does; returns the sagas that timed out, in the order they did.
func (o *Owner[S]) Advance(d time.Duration) ([]uuid.UUID, error) {
	o.Store.Clock = o.Store.Clock.Add(d)
	var timedOut []uuid.UUID
	for {
		key, due, err := o.Owner.RunTimeout(context.Background(), nil, o.Store.Clock, timedOut)
		if err != nil || !due {
			return timedOut, err
		}
		timedOut = append(timedOut, key)
	}
}
