// Package status is a saga's status machine as its spec declares it: the generated package
// gives the tables (`<Owner>Machine`), this package answers from them what the Rust crate's
// generated `<Owner>Status` answers (`on_event`, `is_terminal`, `is_trigger`, `parks`,
// `timeout`, parsing a stored name), so that a status owner written in Go moves its sagas
// exactly as the Rust one does. The shared test messages check that they agree.
package status

import (
	"fmt"
	"slices"
	"time"
)

// Transition is the spec's `from --on--> to`.
type Transition[S ~string] struct {
	From  S
	Event string
	To    S
}

// Timeout is what happens to a saga that stays too long in status In: after After it
// moves to To, and the owner publishes Emits ("" for none; its handler builds the payload).
type Timeout[S ~string] struct {
	In    S
	After time.Duration
	To    S
	Emits string
}

// Migration is `status.migrations`: sagas in From, a status an earlier version of the spec
// had, move to To when the owner starts.
type Migration[S ~string] struct {
	From string
	To   S
}

// Machine is one saga's status machine.
type Machine[S ~string] struct {
	// Owner is the service that keeps the status.
	Owner       string
	Initial     S
	Statuses    []S
	Terminal    []S
	Transitions []Transition[S]
	Timeouts    []Timeout[S]
	// Parks is the events that may arrive before the status that accepts them; until one
	// does, they wait, parked.
	Parks      []string
	Migrations []Migration[S]
}

// IllegalTransitionError is an event the machine does not accept in the current status.
type IllegalTransitionError struct {
	Owner, From, Event string
}

func (e *IllegalTransitionError) Error() string {
	return fmt.Sprintf("illegal transition: `%s` status `%s` has no transition on `%s`", e.Owner, e.From, e.Event)
}

// UnknownStatusError is a status name that is not in the spec.
type UnknownStatusError struct{ Name string }

func (e *UnknownStatusError) Error() string { return fmt.Sprintf("unknown status `%s`", e.Name) }

// Next is the status event moves from to, or an *IllegalTransitionError.
func (m *Machine[S]) Next(from S, event string) (S, error) {
	for _, t := range m.Transitions {
		if t.From == from && t.Event == event {
			return t.To, nil
		}
	}
	return "", &IllegalTransitionError{Owner: m.Owner, From: string(from), Event: event}
}

// IsTerminal says whether s ends the saga.
func (m *Machine[S]) IsTerminal(s S) bool { return slices.Contains(m.Terminal, s) }

// IsTrigger says whether any transition is keyed by event. Events that never move the
// status are only recorded; the others must be legal in the current status.
func (m *Machine[S]) IsTrigger(event string) bool {
	return slices.ContainsFunc(m.Transitions, func(t Transition[S]) bool { return t.Event == event })
}

// Waits says whether event may come before the status that accepts it (`status.parks`).
func (m *Machine[S]) Waits(event string) bool { return slices.Contains(m.Parks, event) }

// Timeout is the timeout of s; false exactly for the terminal statuses.
func (m *Machine[S]) Timeout(s S) (Timeout[S], bool) {
	for _, t := range m.Timeouts {
		if t.In == s {
			return t, true
		}
	}
	return Timeout[S]{}, false
}

// WithTimeout is the statuses that time out: where a sweeper looks for overdue sagas.
func (m *Machine[S]) WithTimeout() []S {
	out := make([]S, 0, len(m.Timeouts))
	for _, t := range m.Timeouts {
		out = append(out, t.In)
	}
	return out
}

// Parse is the status stored as name, or an *UnknownStatusError.
func (m *Machine[S]) Parse(name string) (S, error) {
	if i := slices.Index(m.Statuses, S(name)); i >= 0 {
		return m.Statuses[i], nil
	}
	return "", &UnknownStatusError{Name: name}
}

// Check says whether the tables are a machine the spec compiler would accept in its
// shape: every status named is declared, the terminal statuses are exactly those without
// a timeout, a status has at most one transition per event, and nothing leaves a terminal
// status. (The compiler checks the rest: reachability, and the model checker's proofs.)
func (m *Machine[S]) Check() error {
	declared := func(s S) bool { return slices.Contains(m.Statuses, s) }
	if !declared(m.Initial) {
		return fmt.Errorf("the initial status %q is not declared", m.Initial)
	}
	seen := map[[2]string]bool{}
	for _, t := range m.Transitions {
		if !declared(t.From) || !declared(t.To) {
			return fmt.Errorf("transition %s --%s--> %s names an undeclared status", t.From, t.Event, t.To)
		}
		if m.IsTerminal(t.From) {
			return fmt.Errorf("transition %s --%s--> %s leaves a terminal status", t.From, t.Event, t.To)
		}
		key := [2]string{string(t.From), t.Event}
		if seen[key] {
			return fmt.Errorf("status %s has two transitions on %s", t.From, t.Event)
		}
		seen[key] = true
	}
	for _, s := range m.Statuses {
		t, times := m.Timeout(s)
		if times == m.IsTerminal(s) {
			return fmt.Errorf("status %s: a status times out exactly when it is not terminal", s)
		}
		if times && (!declared(t.To) || t.After <= 0) {
			return fmt.Errorf("status %s: its timeout goes to %q after %s", s, t.To, t.After)
		}
	}
	for _, mig := range m.Migrations {
		if !declared(mig.To) || declared(S(mig.From)) {
			return fmt.Errorf("migration %s -> %s: from must be a removed status, to a declared one", mig.From, mig.To)
		}
	}
	return nil
}

// PathStep is one step of a path through the machine: Event arrives ("" for the status
// timing out), and the saga is in To.
type PathStep[S ~string] struct {
	Event string
	To    S
}

// Paths is every path from the initial status to a terminal one, over transitions and
// timeouts, visiting no status twice, in the order of the spec's transitions (each
// status's timeout last): walk them all, and a new transition is tested without anyone
// writing a test. The same walk as the Rust crate's `PATHS`.
func (m *Machine[S]) Paths() [][]PathStep[S] {
	var out [][]PathStep[S]
	var walk func(at S, path []PathStep[S])
	walk = func(at S, path []PathStep[S]) {
		if m.IsTerminal(at) {
			out = append(out, slices.Clone(path))
			return
		}
		var steps []PathStep[S]
		for _, t := range m.Transitions {
			if t.From == at {
				steps = append(steps, PathStep[S]{Event: t.Event, To: t.To})
			}
		}
		if t, ok := m.Timeout(at); ok {
			steps = append(steps, PathStep[S]{To: t.To})
		}
		for _, step := range steps {
			seen := slices.ContainsFunc(path, func(p PathStep[S]) bool { return p.To == step.To })
			if step.To == m.Initial || seen {
				continue
			}
			walk(step.To, append(path, step))
		}
	}
	walk(m.Initial, nil)
	return out
}
