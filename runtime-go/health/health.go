// Package health is health that can fail, and says what failed: the loops of a service
// report through Probes, and the gRPC health service says what they report, under the
// names the Rust runtime uses (`runtime/src/health.rs`):
//
//   - "" and "saga.api": readiness, whether the service's own database answers. Only
//     this takes an instance out of balancing.
//   - "saga.pipeline": whether the saga's work flows; not serving when one of its loops
//     ("saga.consumer", "saga.relay", "saga.broker", each also reported on its own) has
//     been failing, or had an attempt in flight, for longer than allowed.
//   - "saga.live": liveness, not serving only when a restart can help: a loop stopped,
//     or an attempt has been in flight past the wedge limit while the database answers.
package health

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Component is a part of the service whose health is reported on its own.
type Component string

const (
	API      Component = "saga.api"
	Consumer Component = "saga.consumer"
	Relay    Component = "saga.relay"
	Broker   Component = "saga.broker"
)

// Pipeline and Live are the names of the pipeline's and liveness's checks.
const (
	Pipeline = "saga.pipeline"
	Live     = "saga.live"
)

type state struct {
	failingSince time.Time // zero while working
	reason       string
	stopped      bool
	inFlight     time.Time // zero while no attempt is in flight
}

// Health is the health of one service instance.
type Health struct {
	mu     sync.Mutex
	probes map[*Probe]*state
	// StuckAfter: how long a loop may fail, or an attempt be in flight, before its
	// component (and the pipeline) is not serving.
	StuckAfter time.Duration
	// APIFailAfter: how long the database check may fail before the API is not serving.
	APIFailAfter time.Duration
	// WedgedAfter: how long one attempt may be in flight before its loop is wedged.
	WedgedAfter time.Duration
}

// New is the health of a service with the Rust runtime's default thresholds.
func New(stuckAfter, apiFailAfter, wedgedAfter time.Duration) *Health {
	return &Health{probes: map[*Probe]*state{}, StuckAfter: stuckAfter, APIFailAfter: apiFailAfter, WedgedAfter: wedgedAfter}
}

// Probe is one loop's report.
type Probe struct {
	health    *Health
	component Component
}

// Probe is a new probe of component; several loops of one component (the consumer's
// workers) each have their own.
func (h *Health) Probe(c Component) *Probe {
	p := &Probe{health: h, component: c}
	h.mu.Lock()
	h.probes[p] = &state{}
	h.mu.Unlock()
	return p
}

func (p *Probe) update(f func(*state)) {
	p.health.mu.Lock()
	f(p.health.probes[p])
	p.health.mu.Unlock()
}

// Attempt marks an attempt in flight until the returned function is called: an attempt
// frozen on a lock reports no error, yet is no progress.
func (p *Probe) Attempt() (done func()) {
	p.update(func(s *state) { s.inFlight = time.Now() })
	return func() { p.update(func(s *state) { s.inFlight = time.Time{} }) }
}

// Failing reports that the loop cannot do its work, and why; the first report of a run of
// failures starts its clock.
func (p *Probe) Failing(reason error) {
	p.update(func(s *state) {
		if s.failingSince.IsZero() {
			s.failingSince = time.Now()
		}
		s.reason = reason.Error()
	})
}

// Working reports that the loop works again.
func (p *Probe) Working() {
	p.update(func(s *state) { s.failingSince, s.reason = time.Time{}, "" })
}

// Stopped reports that the loop ended while the service runs: a restart would help.
func (p *Probe) Stopped(reason string) {
	p.update(func(s *state) { s.stopped, s.reason = true, reason })
}

// Assessment is everything the health service says at one instant.
type Assessment struct {
	// Problems is, per component with a probe, why it does not serve ("" while it does).
	Problems map[Component]string
	// RestartFor is what a restart would fix; empty while the process is live.
	RestartFor []string
}

// Assess judges every probe at now.
func (h *Health) Assess(now time.Time) Assessment {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := Assessment{Problems: map[Component]string{}}
	var wedged []string
	for p, s := range h.probes {
		threshold := h.StuckAfter
		if p.component == API {
			threshold = h.APIFailAfter
		}
		problem := ""
		switch {
		case s.stopped:
			problem = "stopped: " + s.reason
			a.RestartFor = append(a.RestartFor, fmt.Sprintf("%s stopped: %s", p.component, s.reason))
		case !s.failingSince.IsZero() && now.Sub(s.failingSince) >= threshold:
			problem = fmt.Sprintf("failing for %ds: %s", int(now.Sub(s.failingSince).Seconds()), s.reason)
		}
		if !s.inFlight.IsZero() {
			busy := now.Sub(s.inFlight)
			if problem == "" && busy >= threshold {
				problem = fmt.Sprintf("no progress for %ds: an attempt is still in flight", int(busy.Seconds()))
			}
			if busy >= h.WedgedAfter {
				wedged = append(wedged, fmt.Sprintf("%s wedged: an attempt in flight for %ds", p.component, int(busy.Seconds())))
			}
		}
		if a.Problems[p.component] == "" {
			a.Problems[p.component] = problem
		}
	}
	// A loop waiting on a database that does not answer is no wedge: a restart would wait
	// for the same database.
	if a.Problems[API] == "" {
		a.RestartFor = append(a.RestartFor, wedged...)
	}
	sort.Strings(a.RestartFor)
	return a
}

// Statuses is every health name and whether it serves.
func (a Assessment) Statuses() map[string]bool {
	api := a.Problems[API] == ""
	pipeline := true
	out := map[string]bool{"": api, string(API): api, Live: len(a.RestartFor) == 0}
	for c, problem := range a.Problems {
		if c == API {
			continue
		}
		out[string(c)] = problem == ""
		pipeline = pipeline && problem == ""
	}
	out[Pipeline] = pipeline
	return out
}
