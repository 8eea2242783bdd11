package health

import (
	"errors"
	"testing"
	"time"
)

func TestALoopFailingLongerThanAllowedStopsThePipelineNotTheAPI(t *testing.T) {
	h := New(10*time.Second, 5*time.Second, time.Minute)
	relay := h.Probe(Relay)
	api := h.Probe(API)
	now := time.Now()
	relay.Failing(errors.New("broker away"))
	if s := h.Assess(now.Add(time.Second)).Statuses(); !s[Pipeline] || !s[string(Relay)] {
		t.Fatalf("a short failure already counts: %v", s)
	}
	s := h.Assess(now.Add(11 * time.Second)).Statuses()
	if s[Pipeline] || s[string(Relay)] || !s[""] || !s[Live] {
		t.Fatalf("after the threshold: %v", s)
	}
	relay.Working()
	api.Failing(errors.New("database away"))
	s = h.Assess(now.Add(20 * time.Second)).Statuses()
	if s[""] || s[string(API)] || !s[Pipeline] {
		t.Fatalf("a database outage: %v", s)
	}
}

func TestAnAttemptInFlightTooLongIsStuckThenWedged(t *testing.T) {
	h := New(10*time.Second, 5*time.Second, time.Minute)
	consumer := h.Probe(Consumer)
	done := consumer.Attempt()
	now := time.Now()
	if a := h.Assess(now.Add(11 * time.Second)); a.Problems[Consumer] == "" || len(a.RestartFor) != 0 {
		t.Fatalf("stuck: %+v", a)
	}
	if a := h.Assess(now.Add(2 * time.Minute)); len(a.RestartFor) != 1 {
		t.Fatalf("wedged: %+v", a)
	}
	// While the database does not answer, a wedge is no reason to restart.
	h.Probe(API).Failing(errors.New("database away"))
	if a := h.Assess(now.Add(2 * time.Minute)); len(a.RestartFor) != 0 {
		t.Fatalf("wedged waiting on the database: %+v", a)
	}
	done()
	if a := h.Assess(now.Add(2 * time.Minute)); a.Problems[Consumer] != "" {
		t.Fatalf("after the attempt: %+v", a)
	}
}

func TestAStoppedLoopFailsLiveness(t *testing.T) {
	h := New(10*time.Second, 5*time.Second, time.Minute)
	h.Probe(Relay).Stopped("panic")
	if s := h.Assess(time.Now()).Statuses(); s[Live] || s[Pipeline] || !s[""] {
		t.Fatalf("%v", s)
	}
}
