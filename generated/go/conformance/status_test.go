package conformance

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	saga "sagaplatform/generated/go/orderfulfillment"
)

// answers is the status machine as the Rust crate answers it (go_vectors.rs,
// `status_machine`).
type answers struct {
	Initial  string
	Statuses []struct {
		Status   string
		Terminal bool
		Timeout  *struct {
			AfterMs int64 `json:"after_ms"`
			To      string
			Emits   *string
		}
		Next map[string]*string
	}
	Events []struct {
		Event   string
		Trigger bool
		Parks   bool
	}
	// Paths: each step [event, or null for a timeout; the status it leads to].
	Paths [][][2]*string
}

// The Go tables, run by runtime-go/status, answer every question a status owner asks
// exactly as the Rust crate does: where each event moves each status, which statuses end
// the saga and how the others time out, which events trigger and which may park.
func TestTheStatusMachineAnswersAsRustDoes(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Status answers }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	rust, m := file.Status, saga.OrderMachine
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	if string(m.Initial) != rust.Initial || len(m.Statuses) != len(rust.Statuses) || len(rust.Events) == 0 {
		t.Fatalf("initial %s (Rust %s), %d statuses (Rust %d)", m.Initial, rust.Initial, len(m.Statuses), len(rust.Statuses))
	}
	asked := 0
	for _, want := range rust.Statuses {
		s, err := m.Parse(want.Status)
		if err != nil {
			t.Fatal(err)
		}
		if m.IsTerminal(s) != want.Terminal {
			t.Errorf("%s: terminal %v, Rust %v", s, m.IsTerminal(s), want.Terminal)
		}
		timeout, times := m.Timeout(s)
		switch {
		case times != (want.Timeout != nil):
			t.Errorf("%s: times out %v, Rust %v", s, times, want.Timeout != nil)
		case times:
			emits := ""
			if want.Timeout.Emits != nil {
				emits = *want.Timeout.Emits
			}
			if timeout.After != time.Duration(want.Timeout.AfterMs)*time.Millisecond || string(timeout.To) != want.Timeout.To || timeout.Emits != emits {
				t.Errorf("%s: timeout %+v, Rust %+v", s, timeout, *want.Timeout)
			}
		}
		for event, to := range want.Next {
			asked++
			next, err := m.Next(s, event)
			switch {
			case to == nil && err == nil:
				t.Errorf("%s on %s: moves to %s, Rust refuses it", s, event, next)
			case to != nil && (err != nil || string(next) != *to):
				t.Errorf("%s on %s: %q (%v), Rust %s", s, event, next, err, *to)
			}
		}
	}
	for _, want := range rust.Events {
		if m.IsTrigger(want.Event) != want.Trigger || m.Waits(want.Event) != want.Parks {
			t.Errorf("%s: trigger %v parks %v, Rust %v %v", want.Event, m.IsTrigger(want.Event), m.Waits(want.Event), want.Trigger, want.Parks)
		}
	}
	if asked != len(rust.Statuses)*len(rust.Events) {
		t.Fatalf("asked %d transitions of %d", asked, len(rust.Statuses)*len(rust.Events))
	}
	paths := m.Paths()
	if len(paths) != len(rust.Paths) || len(paths) == 0 {
		t.Fatalf("%d paths, Rust %d", len(paths), len(rust.Paths))
	}
	for i, want := range rust.Paths {
		got := paths[i]
		same := len(got) == len(want)
		for j := 0; same && j < len(got); j++ {
			event := ""
			if want[j][0] != nil {
				event = *want[j][0]
			}
			same = got[j].Event == event && string(got[j].To) == *want[j][1]
		}
		if !same {
			t.Errorf("path %d: %v, Rust's differs", i, got)
		}
	}
}
