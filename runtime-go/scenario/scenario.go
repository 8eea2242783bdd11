// Package scenario runs a participant's handlers as the saga runs them, without Kafka or
// any other service: each event is delivered in a transaction the test holds, at most
// once per event id (as the inbox keeps it), and what the handlers reply is recorded. It
// is the Go counterpart of the Rust harness (`saga-testing`, the generated `scenario`):
// the spec's compensations and the handlers' idempotency are tested on the real handlers
// against a real database, with nothing else running.
package scenario

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"sagaplatform/runtime-go/participant"
)

// Encoded is an event the harness can deliver: the generated `Message`.
type Encoded interface {
	Encode() ([]byte, error)
}

// Delivered is what one delivery did.
type Delivered struct {
	// Duplicate: its event id was delivered before; nothing ran.
	Duplicate bool
	// NotHandled: the service does not handle this event.
	NotHandled bool
	// Reply is what the handler published in reply, if anything.
	Reply *participant.Outbound
}

// Participant is one service's handlers in a scenario.
type Participant struct {
	binding   participant.Binding
	delivered map[uuid.UUID]bool
	emitted   map[string][]*participant.Outbound
}

// New is the participant of binding (the generated `<Service>Binding(handler)`).
func New(binding participant.Binding) *Participant {
	return &Participant{binding: binding, delivered: map[uuid.UUID]bool{}, emitted: map[string][]*participant.Outbound{}}
}

// When delivers event in tx as the consumer would: decoded from its bytes, run once per
// event id, its reply recorded.
func (p *Participant) When(ctx context.Context, tx pgx.Tx, event Encoded) (Delivered, error) {
	data, err := event.Encode()
	if err != nil {
		return Delivered{}, err
	}
	in, err := p.binding.Decode(data)
	if err != nil {
		return Delivered{}, fmt.Errorf("decoding: %w", err)
	}
	if in == nil {
		return Delivered{NotHandled: true}, nil
	}
	if p.delivered[in.EventID] {
		return Delivered{Duplicate: true}, nil
	}
	// A savepoint, so a failed handler leaves the test's transaction usable, as the real
	// consumer's rollback leaves the database.
	nested, err := tx.Begin(ctx)
	if err != nil {
		return Delivered{}, err
	}
	reply, err := in.Run(ctx, nested)
	if err != nil {
		_ = nested.Rollback(ctx)
		return Delivered{}, err
	}
	if err := nested.Commit(ctx); err != nil {
		return Delivered{}, err
	}
	p.delivered[in.EventID] = true
	if reply != nil {
		p.emitted[in.Key] = append(p.emitted[in.Key], reply)
	}
	return Delivered{Reply: reply}, nil
}

// WhenTwice delivers event twice, as a redelivery would.
func (p *Participant) WhenTwice(ctx context.Context, tx pgx.Tx, event Encoded) ([2]Delivered, error) {
	first, err := p.When(ctx, tx, event)
	if err != nil {
		return [2]Delivered{}, err
	}
	second, err := p.When(ctx, tx, event)
	return [2]Delivered{first, second}, err
}

// Emitted is every reply published for saga key, in order.
func (p *Participant) Emitted(key uuid.UUID) []*participant.Outbound {
	return p.emitted[key.String()]
}
