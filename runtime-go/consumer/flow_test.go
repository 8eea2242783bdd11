package consumer

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fakeFetches is an assignment, and what was paused and resumed of it.
type fakeFetches struct {
	partitions []partition
	paused     map[partition]bool
	calls      int
}

func (f *fakeFetches) assigned() []partition { return f.partitions }

func (f *fakeFetches) setPaused(ps []partition, paused bool) {
	f.calls++
	for _, p := range ps {
		f.paused[p] = paused
	}
}

func (f *fakeFetches) pausedOnes() []partition {
	var out []partition
	for _, p := range f.partitions {
		if f.paused[p] {
			out = append(out, p)
		}
	}
	return out
}

func message(topic string, p int32, offset int64) polled {
	return polled{record: &kgo.Record{Topic: topic, Partition: p, Offset: offset}, epoch: 1}
}

// A slow worker holds up only its own partitions: what its full queue cannot take waits in
// the loop, in order; past waitingAtMost its partitions (and only its) are paused; once it
// has taken everything waiting they are resumed; a message for another worker goes
// straight through all along.
func TestASlowWorkerIsPausedAloneAndResumedOnceCaughtUp(t *testing.T) {
	parts := []partition{{"a", 0}, {"a", 1}, {"b", 0}, {"b", 1}}
	fake := &fakeFetches{partitions: parts, paused: map[partition]bool{}}
	queues := []chan polled{make(chan polled, workerQueue), make(chan polled, workerQueue)}
	f := newFlow(queues, fake)

	total := workerQueue + waitingAtMost
	for i := range total {
		f.deal(message("a", 0, int64(i)))
	}
	f.deal(message("b", 1, 0)) // worker 1's
	if len(queues[0]) != workerQueue || len(f.waiting[0]) != waitingAtMost || len(queues[1]) != 1 {
		t.Fatalf("queued %d, waiting %d, other worker %d", len(queues[0]), len(f.waiting[0]), len(queues[1]))
	}
	if got := fake.pausedOnes(); !slices.Equal(got, []partition{{"a", 0}, {"b", 0}}) || !f.behind() {
		t.Fatalf("paused %v", got)
	}

	// The worker takes its messages; the loop feeds it the waiting ones in order.
	next := int64(0)
	for next < int64(total) {
		select {
		case m := <-queues[0]:
			if m.record.Offset != next {
				t.Fatalf("offset %d, want %d", m.record.Offset, next)
			}
			next++
		default:
			f.feed()
		}
	}
	f.feed()
	if len(fake.pausedOnes()) != 0 || f.behind() || f.paused[0] {
		t.Fatalf("still paused: %v", fake.pausedOnes())
	}
}

// After a rebalance, a partition left paused by an earlier assignment is resumed unless its
// worker is behind; without a change nothing is asked of the broker.
func TestAReassignedPartitionIsResumedUnlessItsWorkerIsBehind(t *testing.T) {
	fake := &fakeFetches{partitions: []partition{{"a", 0}, {"a", 1}}, paused: map[partition]bool{}}
	f := newFlow([]chan polled{make(chan polled, workerQueue), make(chan polled, workerQueue)}, fake)
	f.reconcile()
	calls := fake.calls
	f.reconcile()
	if fake.calls != calls {
		t.Fatal("an unchanged assignment was reconciled again")
	}
	f.setPaused(1, true)
	fake.paused[partition{"a", 2}] = true // paused before it was revoked; assigned back now
	fake.partitions = []partition{{"a", 0}, {"a", 1}, {"a", 2}}
	f.reconcile()
	if got := fake.pausedOnes(); !slices.Equal(got, []partition{{"a", 1}}) {
		t.Fatalf("paused after the rebalance: %v", got)
	}
}
