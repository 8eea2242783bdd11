package owner

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"

	"sagaplatform/runtime-go/health"
)

// The clock the status owner judges deadlines by (runtime/src/caught_up.rs, whose rules
// this keeps). An order must not be cancelled while the reply that would have moved it may
// still wait, unconsumed, in Kafka: then the platform's own outage, not the saga, would
// decide its outcome. So the sweeper does not judge by the wall clock but by a clock that
// stands still while the owner cannot see its replies.
//
//   - Caught up to t: every SampleEvery the high watermarks of the owner's topics are
//     sampled, with the time t just before. Once the owner's group has committed past every
//     watermark of that sample, every reply published before t has been handled.
//   - It stands still while the service cannot read Kafka or reach its own database.
//   - It never jumps: it follows the caught-up time at most CatchUpRate times as fast as
//     real time, so a deadline that fell due in an outage gets half its remaining time
//     again afterwards.

const (
	// SampleEvery is how often the watermarks are sampled and the group's offsets read.
	SampleEvery = time.Second
	// CatchUpRate is how much faster than real time the judging time may run to catch up.
	CatchUpRate = 2
	// maxPending is the samples kept while the group has not passed them (an hour of
	// outage at one a second); when full the oldest go, which only means the clock resumes
	// from a later one.
	maxPending = 3600
	// sampleTimeout bounds one round's Kafka requests and the database's `SELECT 1`.
	sampleTimeout = 2 * time.Second
)

// Offsets is an offset per partition of a topic (named as the broker knows it).
type Offsets map[string]map[int32]int64

type sample struct {
	at   time.Time
	high Offsets
}

// Reckoner is the arithmetic of the clock, free of Kafka: samples and committed offsets
// in, judging time out.
type Reckoner struct {
	// pending is the samples not yet passed by the group, oldest first.
	pending []sample
	// caughtUp is the newest sample time the group has passed.
	caughtUp time.Time
	// judged is the judging time, and the instant it was last worked out.
	judged, judgedAt time.Time
}

// Sampled records the high watermarks sampled just after at.
func (r *Reckoner) Sampled(at time.Time, high Offsets) {
	if len(r.pending) == maxPending {
		r.pending = r.pending[1:]
	}
	r.pending = append(r.pending, sample{at, high})
}

// Committed takes the group's committed offsets (a partition it never committed counts as
// offset 0) and returns the judging time at now; false until the group first passed a
// sample.
func (r *Reckoner) Committed(committed Offsets, now time.Time) (time.Time, bool) {
	// Watermarks only grow, so the samples passed are a prefix.
	for len(r.pending) > 0 && passed(r.pending[0].high, committed) {
		r.caughtUp, r.pending = r.pending[0].at, r.pending[1:]
	}
	return r.tick(now)
}

func passed(high, committed Offsets) bool {
	for topic, partitions := range high {
		for partition, end := range partitions {
			if committed[topic][partition] < end {
				return false
			}
		}
	}
	return true
}

// Stall is the judging time at now through an outage (a failed sample): it stands still,
// and the time stood still does not count towards catching up afterwards.
func (r *Reckoner) Stall(now time.Time) (time.Time, bool) {
	if r.judged.IsZero() {
		return time.Time{}, false
	}
	r.judgedAt = now
	return r.judged, true
}

// tick works the judging time out at now: it follows the caught-up time at most
// CatchUpRate times as fast as real time, never passing it.
func (r *Reckoner) tick(now time.Time) (time.Time, bool) {
	if r.caughtUp.IsZero() {
		return time.Time{}, false
	}
	judged := r.caughtUp
	if !r.judged.IsZero() {
		allowed := r.judged.Add(max(now.Sub(r.judgedAt), 0) * CatchUpRate)
		judged = r.caughtUp
		if allowed.Before(judged) {
			judged = allowed
		}
		if judged.Before(r.judged) {
			judged = r.judged
		}
	}
	r.judged, r.judgedAt = judged, now
	return judged, true
}

// Clock is the time deadlines are judged at, as KeepClock last worked it out.
type Clock struct{ at atomic.Pointer[time.Time] }

// Now is the judging time; false until the owner was first caught up.
func (c *Clock) Now() (time.Time, bool) {
	at := c.at.Load()
	if at == nil {
		return time.Time{}, false
	}
	return *at, true
}

// Set puts the clock at at: a clock kept by hand (tests; Rust's `CaughtUpClock::manual`).
func (c *Clock) Set(at time.Time) { c.at.Store(&at) }

func (c *Clock) set(at time.Time, known bool) {
	if known {
		c.Set(at)
	}
}

// KeepClock keeps clock for the consumer group group over topics (both as the broker
// names them) until ctx ends, standing still while pool's database or Kafka does not
// answer; probe hears each round.
func KeepClock(ctx context.Context, admin *kadm.Client, group string, topics []string, pool *pgxpool.Pool, probe *health.Probe, clock *Clock) {
	var r Reckoner
	failing := false
	for ctx.Err() == nil {
		done := probe.Attempt()
		at, high, committed, err := round(ctx, admin, group, topics, pool)
		done()
		switch {
		case err == nil:
			if failing {
				slog.Info("caught-up clock runs again")
				failing = false
			}
			probe.Working()
			r.Sampled(at, high)
			clock.set(r.Committed(committed, time.Now()))
		case ctx.Err() == nil:
			if !failing {
				slog.Warn("caught-up clock stands still: an outage", "error", err)
				failing = true
			}
			probe.Failing(err)
			clock.set(r.Stall(time.Now()))
		}
		select {
		case <-ctx.Done():
		case <-time.After(SampleEvery):
		}
	}
}

// round is one sample: the database answers, then the time, the watermarks just after, and
// the group's committed offsets.
func round(ctx context.Context, admin *kadm.Client, group string, topics []string, pool *pgxpool.Pool) (time.Time, Offsets, Offsets, error) {
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		return time.Time{}, nil, nil, fmt.Errorf("database: %w", err)
	}
	at := time.Now()
	ends, err := admin.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return time.Time{}, nil, nil, fmt.Errorf("Kafka: the watermarks: %w", err)
	}
	fetched, err := admin.FetchOffsets(ctx, group)
	if err == nil {
		err = fetched.Error()
	}
	if err != nil {
		return time.Time{}, nil, nil, fmt.Errorf("Kafka: the group's offsets: %w", err)
	}
	high, committed := Offsets{}, Offsets{}
	ends.Each(func(end kadm.ListedOffset) {
		if high[end.Topic] == nil {
			high[end.Topic], committed[end.Topic] = map[int32]int64{}, map[int32]int64{}
		}
		high[end.Topic][end.Partition] = end.Offset
		if o, ok := fetched.Lookup(end.Topic, end.Partition); ok && o.Err == nil && o.At >= 0 {
			committed[end.Topic][end.Partition] = o.At
		}
	})
	return at, high, committed, nil
}
