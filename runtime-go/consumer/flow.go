package consumer

import (
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The receiving loop never blocks on a worker, so one slow worker holds up only its own
// partitions (runtime/src/consumer/mod.rs, `Flow`, whose rules these are): a message for a
// worker whose queue is full waits in the loop, and once waitingAtMost wait, the worker's
// partitions are paused until it has caught up.
const (
	// workerQueue is how many messages a worker's own queue holds. More than the Rust
	// consumer's 64: this loop feeds waiting messages only when a poll returns, at least
	// every pausedCheck, so a worker's own queue must hold well more than it handles in that
	// time (64 shipping transactions take about as long), or it idles through a backlog.
	workerQueue = 1024
	// waitingAtMost is how many messages may wait in the loop behind a worker's full queue
	// before its partitions are paused: more than one fetch brings of all of them, so that
	// every one of its partitions is among what waits (pausing as soon as the queue was
	// full, the Rust consumer received only the partition whose data came first).
	waitingAtMost = 1024
	// pausedCheck is how often the loop looks whether a paused worker caught up, when no
	// message arrives to wake it.
	pausedCheck = 100 * time.Millisecond
	// reconcileEvery is how often the loop looks whether the assignment changed; when it
	// did, the partitions of the workers that are not behind are resumed: a partition
	// paused, revoked and assigned back may still be paused, and nothing else would ever
	// resume it.
	reconcileEvery = time.Second
)

// fetches is what the flow control needs of the Kafka client: its assignment, and pausing
// and resuming partitions of it (an interface, so the flow is tested without a broker).
type fetches interface {
	assigned() []partition
	setPaused(ps []partition, paused bool)
}

// flow deals received messages to the workers' queues without ever blocking.
type flow struct {
	queues []chan polled
	// waiting is, per worker, what was received for it that its queue had no room for.
	waiting    [][]polled
	paused     []bool
	client     fetches
	assignment []partition
}

func newFlow(queues []chan polled, client fetches) *flow {
	return &flow{queues: queues, waiting: make([][]polled, len(queues)), paused: make([]bool, len(queues)), client: client}
}

// deal hands m to its worker, or keeps it behind the ones already waiting when its queue is
// full; the worker's partitions are paused once too many wait.
func (f *flow) deal(m polled) {
	w := WorkerOf(m.record.Partition, len(f.queues))
	if len(f.waiting[w]) == 0 {
		select {
		case f.queues[w] <- m:
			return
		default:
		}
	}
	f.waiting[w] = append(f.waiting[w], m)
	if len(f.waiting[w]) >= waitingAtMost && !f.paused[w] {
		f.setPaused(w, true)
	}
}

// feed moves waiting messages into the queues that have room again, and resumes the
// partitions of a worker with nothing left waiting.
func (f *flow) feed() {
	for w, queue := range f.queues {
		sent := 0
	room:
		for _, m := range f.waiting[w] {
			select {
			case queue <- m:
				sent++
			default:
				break room
			}
		}
		f.waiting[w] = f.waiting[w][sent:]
		if len(f.waiting[w]) == 0 {
			f.waiting[w] = nil
			if f.paused[w] {
				f.setPaused(w, false)
			}
		}
	}
}

// behind says whether any worker has messages waiting in the loop (then it is looked at
// every pausedCheck).
func (f *flow) behind() bool {
	return slices.ContainsFunc(f.waiting, func(w []polled) bool { return len(w) > 0 })
}

// reconcile resumes, after the assignment changed, the partitions of every worker that is
// not behind.
func (f *flow) reconcile() {
	now := f.client.assigned()
	if slices.Equal(now, f.assignment) {
		return
	}
	f.assignment = now
	for w := range f.queues {
		if !f.paused[w] {
			f.setPaused(w, false)
		}
	}
}

// setPaused pauses or resumes every partition of worker w in the current assignment.
func (f *flow) setPaused(w int, paused bool) {
	var mine []partition
	for _, p := range f.client.assigned() {
		if WorkerOf(p.id, len(f.queues)) == w {
			mine = append(mine, p)
		}
	}
	f.client.setPaused(mine, paused)
	if f.paused[w] != paused {
		f.paused[w] = paused
		slog.Debug("worker flow control", "worker", w, "partitions", len(mine), "paused", paused)
	}
}

// groupFetches is a consumer's client and ownership as the flow control sees them.
type groupFetches struct {
	client    *kgo.Client
	ownership *ownership
}

func (g groupFetches) assigned() []partition { return g.ownership.current() }

func (g groupFetches) setPaused(ps []partition, paused bool) {
	if len(ps) == 0 {
		return
	}
	byTopic := map[string][]int32{}
	for _, p := range ps {
		byTopic[p.topic] = append(byTopic[p.topic], p.id)
	}
	if paused {
		g.client.PauseFetchPartitions(byTopic)
	} else {
		g.client.ResumeFetchPartitions(byTopic)
	}
}
