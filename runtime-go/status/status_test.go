package status

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

type st string

func machine() *Machine[st] {
	return &Machine[st]{
		Owner:       "booking",
		Initial:     "requested",
		Statuses:    []st{"requested", "held", "confirmed", "released"},
		Terminal:    []st{"confirmed", "released"},
		Transitions: []Transition[st]{{"requested", "seat.held", "held"}, {"held", "payment.done", "confirmed"}},
		Timeouts:    []Timeout[st]{{"requested", time.Second, "released", "booking.expired"}, {"held", time.Minute, "released", ""}},
		Parks:       []string{"payment.done"},
		Migrations:  []Migration[st]{{From: "pending", To: "requested"}},
	}
}

func TestTheMachineAnswersFromItsTables(t *testing.T) {
	m := machine()
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if next, err := m.Next("requested", "seat.held"); err != nil || next != "held" {
		t.Fatalf("next: %q, %v", next, err)
	}
	_, err := m.Next("held", "seat.held")
	var illegal *IllegalTransitionError
	if !errors.As(err, &illegal) || illegal.From != "held" || illegal.Event != "seat.held" ||
		err.Error() != "illegal transition: `booking` status `held` has no transition on `seat.held`" {
		t.Fatalf("illegal: %v", err)
	}
	if !m.IsTrigger("payment.done") || m.IsTrigger("booking.expired") {
		t.Fatal("triggers")
	}
	if !m.Waits("payment.done") || m.Waits("seat.held") {
		t.Fatal("parks")
	}
	if to, ok := m.Timeout("requested"); !ok || to.To != "released" || to.Emits != "booking.expired" || to.After != time.Second {
		t.Fatalf("timeout: %+v", to)
	}
	if _, ok := m.Timeout("confirmed"); ok || !m.IsTerminal("confirmed") || m.IsTerminal("held") {
		t.Fatal("terminal")
	}
	if got := m.WithTimeout(); len(got) != 2 || got[0] != "requested" || got[1] != "held" {
		t.Fatalf("with timeout: %v", got)
	}
	if s, err := m.Parse("held"); err != nil || s != "held" {
		t.Fatalf("parse: %q, %v", s, err)
	}
	var unknown *UnknownStatusError
	if _, err := m.Parse("pending"); !errors.As(err, &unknown) || unknown.Name != "pending" {
		t.Fatalf("parse a removed status: %v", err)
	}
}

func TestPathsWalkEveryWayToAnEndOnce(t *testing.T) {
	m := machine()
	m.Transitions = append(m.Transitions, Transition[st]{"held", "seat.lost", "requested"})
	got := m.Paths()
	want := [][]PathStep[st]{
		{{"seat.held", "held"}, {"payment.done", "confirmed"}},
		{{"seat.held", "held"}, {"", "released"}},
		{{"", "released"}},
	}
	if len(got) != len(want) {
		t.Fatalf("paths: %v", got)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("path %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestCheckRefusesWhatTheSpecCompilerWouldRefuse(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(*Machine[st])
		want   string
	}{
		"undeclared initial":         {func(m *Machine[st]) { m.Initial = "nope" }, "initial status"},
		"undeclared target":          {func(m *Machine[st]) { m.Transitions[0].To = "nope" }, "undeclared status"},
		"leaves a terminal status":   {func(m *Machine[st]) { m.Transitions[1].From = "confirmed" }, "leaves a terminal"},
		"two transitions, one event": {func(m *Machine[st]) { m.Transitions[1] = Transition[st]{"requested", "seat.held", "released"} }, "two transitions"},
		"terminal with a timeout": {func(m *Machine[st]) {
			m.Timeouts = append(m.Timeouts, Timeout[st]{"confirmed", time.Second, "released", ""})
		}, "not terminal"},
		"live without a timeout":    {func(m *Machine[st]) { m.Timeouts = m.Timeouts[:1] }, "not terminal"},
		"zero timeout":              {func(m *Machine[st]) { m.Timeouts[0].After = 0 }, "its timeout"},
		"migration from a live one": {func(m *Machine[st]) { m.Migrations[0].From = "held" }, "removed status"},
	} {
		m := machine()
		tc.change(m)
		if err := m.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
