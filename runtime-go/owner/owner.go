// Package owner is the status owner's driver, for any saga: what it does with an inbound
// event and with a saga past its deadline, and the Store it keeps sagas in (the Go
// counterpart of the Rust crate `saga_contract::owner`, which the shared tests hold it to).
//
// An event runs through the status machine, then the owner's handler, in the caller's
// transaction: the saga is locked; a trigger the status accepts is written as a transition
// with its history row; one the spec parks (replies on different topics are not ordered
// against each other) that arrived before the status it needs waits, and is applied with
// its handler once a later event moved the status there; an event for a saga that already
// ended changes nothing; any other has no declared answer (*UnansweredError), which the
// spec verifier proves unreachable.
package owner

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/status"
)

// StepKind is what the status machine made of an event.
type StepKind int

const (
	// Moved: the event moved the status From to To.
	Moved StepKind = iota
	// Recorded: the event moves no status in the spec; it is only recorded (From is the
	// status).
	Recorded
	// Late: the saga had already ended (From): the event changes nothing, the
	// compensations of that end undo whatever it stands for.
	Late
)

// Step is what the status machine made of an event, before the owner's handler runs.
type Step[S ~string] struct {
	Kind     StepKind
	From, To S
}

// Cause is why a status changes: what the store may take further columns from.
type Cause int

const (
	// Started: an entry command started the saga.
	Started Cause = iota
	// ByEvent: an inbound event (Transition.Event) moved it.
	ByEvent
	// ByTimeout: the status stayed past its deadline.
	ByTimeout
	// Seeded: a test scenario put the saga in this status directly.
	Seeded
)

// Transition is one change of a saga's status, as the store writes it.
type Transition[S ~string] struct {
	SagaKey uuid.UUID
	// From is nil for the first transition, when the saga starts.
	From *S
	To   S
	// EventID and EventType are the event behind the change, for the history row: a
	// timeout's is the event it publishes, or a fresh id and `timeout` when it publishes
	// none.
	EventID   uuid.UUID
	EventType string
	Cause     Cause
	// Event is the event behind the change, with everything it carries: the inbound one
	// (ByEvent) or the one that starts the saga (Started); nil for a timeout or a seed.
	Event participant.Message
	// Deadline is when the saga times out of To; nil for a status without a timeout.
	Deadline *time.Time
}

// Parked is an event that arrived before the status it needs, as it waits.
type Parked struct {
	EventID   uuid.UUID
	EventType string
	Topic     string
	Payload   []byte
}

// Overdue is a saga past its deadline, as the store finds it, with the trace it started
// with (its timeout belongs to the same trace).
type Overdue[S ~string] struct {
	SagaKey                 uuid.UUID
	Status                  S
	Traceparent, Tracestate *string
}

// Store is where a status owner keeps its sagas: the SQL behind the status machine, which
// the owning service implements. Each method runs in the caller's transaction, so a
// status, its history row and the events it publishes commit together.
type Store[S ~string] interface {
	// LoadForUpdate is the saga's status, locked until the transaction ends; false when
	// the saga is not known here.
	LoadForUpdate(ctx context.Context, tx pgx.Tx, sagaKey uuid.UUID) (S, bool, error)
	// Now is the time deadlines are counted from: the wall clock, or a scenario's virtual
	// clock.
	Now() time.Time
	// WriteTransition writes the status, its deadline and the history row.
	WriteTransition(ctx context.Context, tx pgx.Tx, t Transition[S]) error
	// Park keeps an event that arrived before the status it needs; parking the same event
	// twice keeps one.
	Park(ctx context.Context, tx pgx.Tx, sagaKey uuid.UUID, event Parked) error
	// ParkedFor is the events parked for the saga, oldest first.
	ParkedFor(ctx context.Context, tx pgx.Tx, sagaKey uuid.UUID) ([]Parked, error)
	// Unpark removes a parked event once it is applied.
	Unpark(ctx context.Context, tx pgx.Tx, eventID uuid.UUID) error
	// Publish writes an event to the outbox.
	Publish(ctx context.Context, tx pgx.Tx, event *participant.Outbound) error
	// NextOverdue is the saga whose deadline passed longest ago (at or before asOf) while
	// in one of statuses, its key not in skip, locked for this transaction; sagas another
	// transaction holds are passed over. Nil when none is due.
	NextOverdue(ctx context.Context, tx pgx.Tx, statuses []S, asOf time.Time, skip []uuid.UUID) (*Overdue[S], error)
}

// Owner is a status owner as the driver runs it: its machine and store, and what the
// spec binds (generated): how a parked event decodes again, and the owner's handler.
type Owner[S ~string] struct {
	Machine *status.Machine[S]
	Store   Store[S]
	// Unpark decodes a parked event again; nil when it no longer is one of the owner's
	// (its schema changed while it waited): it stays parked, for an operator to see.
	Unparked func(Parked) participant.Message
	// Handle runs the owner's handler for event; its reply, if any, as an outbox row.
	Handle func(ctx context.Context, tx pgx.Tx, event participant.Message, step Step[S]) (*participant.Outbound, error)
	// OnTimeout asks the owner's handler for the event a timeout of saga to `to`
	// publishes (nil for none), in the saga's trace.
	OnTimeout func(ctx context.Context, tx pgx.Tx, saga Overdue[S], to S) (*participant.Outbound, error)
	// TimeoutOf is how long a saga may stay in a status; nil: the spec's. Tests shorten it.
	TimeoutOf func(S) (time.Duration, bool)
}

// UnknownSagaError is an event for a saga the owner does not know (yet): its first event
// may still be on its way, so the consumer retries it by the spec's policy.
type UnknownSagaError struct{ SagaKey uuid.UUID }

func (e *UnknownSagaError) Error() string { return fmt.Sprintf("saga %s is unknown here", e.SagaKey) }

// Class is [contract.NotYet].
func (e *UnknownSagaError) Class() contract.FailureClass { return contract.NotYet }

// UnansweredError is an event that reached the owner in a status the spec gives no answer
// for (no transition, not parked, not ended): `cargo xtask verify` proves this cannot
// happen, so the message is dead-lettered at once.
type UnansweredError struct{ Status, Event string }

func (e *UnansweredError) Error() string {
	return fmt.Sprintf("`%s` has no declared answer in status `%s`", e.Event, e.Status)
}

// Class is [contract.Permanent].
func (e *UnansweredError) Class() contract.FailureClass { return contract.Permanent }

// Deadline is when a saga entering s now times out of it, to the microsecond (what an
// event's deadline keeps); nil for a status without a timeout.
func (o *Owner[S]) Deadline(s S) *time.Time {
	after, ok := o.timeout(s)
	if !ok {
		return nil
	}
	at := o.Store.Now().Add(after).UTC().Truncate(time.Microsecond)
	return &at
}

func (o *Owner[S]) timeout(s S) (time.Duration, bool) {
	if o.TimeoutOf != nil {
		return o.TimeoutOf(s)
	}
	t, ok := o.Machine.Timeout(s)
	return t.After, ok
}

// Start begins saga first.Key() in tx, as an entry command does: its first status (the
// machine's initial one, cause Started) with its history row, and first, the event that
// starts it, into the outbox. first must carry the initial status's deadline
// ([Owner.Deadline]), which is what the participants' answers are awaited by.
func (o *Owner[S]) Start(ctx context.Context, tx pgx.Tx, first participant.Message) error {
	record, err := participant.NewOutbound(first)
	if err != nil {
		return err
	}
	if err := o.Store.WriteTransition(ctx, tx, Transition[S]{SagaKey: first.Key(), To: o.Machine.Initial,
		EventID: first.ID(), EventType: first.EventType(), Cause: Started, Event: first, Deadline: first.Due()}); err != nil {
		return err
	}
	return o.Store.Publish(ctx, tx, record)
}

// RunEvent runs an event the owner received through the status machine, then its handler
// (see the package's documentation), in tx. Returns the handler's reply.
func (o *Owner[S]) RunEvent(ctx context.Context, tx pgx.Tx, event participant.Message) (*participant.Outbound, error) {
	key, kind := event.Key(), event.EventType()
	current, known, err := o.Store.LoadForUpdate(ctx, tx, key)
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, &UnknownSagaError{SagaKey: key}
	}
	var step Step[S]
	switch to, illegal := o.Machine.Next(current, kind); {
	case !o.Machine.IsTrigger(kind):
		step = Step[S]{Kind: Recorded, From: current}
	case illegal == nil:
		if err := o.Store.WriteTransition(ctx, tx, Transition[S]{SagaKey: key, From: &current, To: to,
			EventID: event.ID(), EventType: kind, Cause: ByEvent, Event: event, Deadline: o.Deadline(to)}); err != nil {
			return nil, err
		}
		step = Step[S]{Kind: Moved, From: current, To: to}
	case o.Machine.IsTerminal(current):
		step = Step[S]{Kind: Late, From: current}
	case o.Machine.Waits(kind):
		payload, err := event.Encode()
		if err != nil {
			return nil, err
		}
		return nil, o.Store.Park(ctx, tx, key, Parked{EventID: event.ID(), EventType: kind, Topic: event.Topic(), Payload: payload})
	default:
		return nil, &UnansweredError{Status: string(current), Event: kind}
	}
	reply, err := o.Handle(ctx, tx, event, step)
	if err != nil {
		return nil, err
	}
	if step.Kind == Moved {
		if err := o.applyParked(ctx, tx, key, step.To); err != nil {
			return nil, err
		}
	}
	return reply, nil
}

// applyParked applies, oldest first, each parked event the status now accepts, until none
// does; their replies go to the outbox. A terminal status accepts none: the store is not
// asked for the parked events then (one statement less for every saga that ends).
func (o *Owner[S]) applyParked(ctx context.Context, tx pgx.Tx, key uuid.UUID, current S) error {
	for !o.Machine.IsTerminal(current) {
		parked, err := o.Store.ParkedFor(ctx, tx, key)
		if err != nil {
			return err
		}
		var (
			next  participant.Message
			to    S
			found bool
		)
		for _, p := range parked {
			if event := o.Unparked(p); event != nil {
				if to, err = o.Machine.Next(current, event.EventType()); err == nil {
					next, found = event, true
					break
				}
			}
		}
		if !found {
			return nil
		}
		if err := o.Store.Unpark(ctx, tx, next.ID()); err != nil {
			return err
		}
		from := current
		if err := o.Store.WriteTransition(ctx, tx, Transition[S]{SagaKey: key, From: &from, To: to,
			EventID: next.ID(), EventType: next.EventType(), Cause: ByEvent, Event: next, Deadline: o.Deadline(to)}); err != nil {
			return err
		}
		current = to
		reply, err := o.Handle(ctx, tx, next, Step[S]{Kind: Moved, From: from, To: to})
		if err != nil {
			return err
		}
		if reply != nil {
			if err := o.Store.Publish(ctx, tx, reply); err != nil {
				return err
			}
		}
	}
	return nil
}

// SweepError is a timeout that failed, naming the saga it failed for (nil when the store
// failed to find one).
type SweepError struct {
	SagaKey *uuid.UUID
	Err     error
}

func (e *SweepError) Error() string {
	if e.SagaKey == nil {
		return "finding an overdue saga: " + e.Err.Error()
	}
	return fmt.Sprintf("timing out saga %s: %s", e.SagaKey, e.Err)
}

func (e *SweepError) Unwrap() error { return e.Err }

// RunTimeout resolves the most overdue saga whose deadline is at or before asOf and whose
// key is not in skip, in tx, as the spec says: asks the owner for the event the timeout
// publishes (its compensations undo what the saga did), writes the transition with its
// history row and the event. False when no saga is due.
func (o *Owner[S]) RunTimeout(ctx context.Context, tx pgx.Tx, asOf time.Time, skip []uuid.UUID) (uuid.UUID, bool, error) {
	statuses := o.Machine.WithTimeout()
	if len(statuses) == 0 {
		return uuid.Nil, false, nil
	}
	saga, err := o.Store.NextOverdue(ctx, tx, statuses, asOf, skip)
	if err != nil {
		return uuid.Nil, false, &SweepError{Err: err}
	}
	if saga == nil {
		return uuid.Nil, false, nil
	}
	key, from := saga.SagaKey, saga.Status
	failed := func(err error) (uuid.UUID, bool, error) { return key, true, &SweepError{SagaKey: &key, Err: err} }
	timeout, ok := o.Machine.Timeout(from)
	if !ok {
		return key, true, nil
	}
	record, err := o.OnTimeout(ctx, tx, *saga, timeout.To)
	if err != nil {
		return failed(err)
	}
	eventID, eventType := participant.NewEventID(), "timeout"
	if record != nil {
		eventID, eventType = record.EventID, record.EventType
	}
	if err := o.Store.WriteTransition(ctx, tx, Transition[S]{SagaKey: key, From: &from, To: timeout.To,
		EventID: eventID, EventType: eventType, Cause: ByTimeout, Deadline: o.Deadline(timeout.To)}); err != nil {
		return failed(err)
	}
	if record != nil {
		if err := o.Store.Publish(ctx, tx, record); err != nil {
			return failed(err)
		}
	}
	return key, true, nil
}
