package owner_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/health"
	. "sagaplatform/runtime-go/owner"
	"sagaplatform/runtime-go/stacktest"
)

// The Rust clock's tests (runtime/src/caught_up.rs), case for case.

func sec(s int) time.Time { return time.Unix(1_000_000+int64(s), 0) }

func offsets(of ...[2]int64) Offsets {
	o := Offsets{"replies": {}}
	for _, p := range of {
		o["replies"][int32(p[0])] = p[1]
	}
	return o
}

// judged is the judging time, or the zero time (equal to no second) while unknown.
func judged(at time.Time, known bool) time.Time {
	if !known {
		return time.Time{}
	}
	return at
}

func TestTheClockWaitsUntilTheGroupPassedASample(t *testing.T) {
	var r Reckoner
	start := time.Now()
	r.Sampled(sec(0), offsets([2]int64{0, 10}, [2]int64{1, 5}))
	if _, known := r.Committed(offsets([2]int64{0, 10}, [2]int64{1, 4}), start); known {
		t.Fatal("partition 1 is behind")
	}
	// A partition never committed counts as 0: passed only when empty.
	if _, known := r.Committed(offsets([2]int64{0, 10}), start); known {
		t.Fatal("partition 1 never committed")
	}
	r.Sampled(sec(1), offsets([2]int64{0, 12}, [2]int64{1, 5}))
	if at := judged(r.Committed(offsets([2]int64{0, 11}, [2]int64{1, 5}), start)); !at.Equal(sec(0)) {
		t.Fatalf("only the first sample is passed: %v", at)
	}
	if at := judged(r.Committed(offsets([2]int64{0, 12}, [2]int64{1, 5}), start.Add(time.Second))); !at.Equal(sec(1)) {
		t.Fatalf("%v", at)
	}
}

func TestAfterAnOutageTheClockCatchesUpAtTwiceRealTime(t *testing.T) {
	var r Reckoner
	start := time.Now()
	empty := offsets([2]int64{0, 0})
	after := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	r.Sampled(sec(0), empty)
	if at := judged(r.Committed(empty, start)); !at.Equal(sec(0)) {
		t.Fatal(at)
	}
	// 30 s of outage: samples fail, the clock stands still.
	for s := 1; s <= 30; s++ {
		if at := judged(r.Stall(after(s))); !at.Equal(sec(0)) {
			t.Fatalf("second %d: %v", s, at)
		}
	}
	// Back: the group is caught up to second 31 at once, the clock is not.
	r.Sampled(sec(31), empty)
	if at := judged(r.Committed(empty, after(31))); !at.Equal(sec(2)) {
		t.Fatal(at)
	}
	r.Sampled(sec(32), empty)
	if at := judged(r.Committed(empty, after(32))); !at.Equal(sec(4)) {
		t.Fatal(at)
	}
	// Another outage second while catching up: it stands still, and gains nothing by it.
	if at := judged(r.Stall(after(33))); !at.Equal(sec(4)) {
		t.Fatal(at)
	}
	r.Sampled(sec(34), empty)
	if at := judged(r.Committed(empty, after(34))); !at.Equal(sec(6)) {
		t.Fatal(at)
	}
	// It never passes the caught-up time, and then keeps pace with it.
	for s := 35; s <= 70; s++ {
		r.Sampled(sec(s), empty)
		r.Committed(empty, after(s))
	}
	if at := judged(r.Committed(empty, after(70))); !at.Equal(sec(70)) {
		t.Fatal(at)
	}
}

func TestAGroupThatLagsHoldsTheClockAtWhatItHasConsumed(t *testing.T) {
	var r Reckoner
	start := time.Now()
	for s := range 10 {
		r.Sampled(sec(s), offsets([2]int64{0, 100 * (int64(s) + 1)}))
	}
	// The group has consumed what was published by second 3.
	if at := judged(r.Committed(offsets([2]int64{0, 450}), start)); !at.Equal(sec(3)) {
		t.Fatal(at)
	}
	if at := judged(r.Committed(offsets([2]int64{0, 450}), start.Add(time.Minute))); !at.Equal(sec(3)) {
		t.Fatalf("no further than it has seen: %v", at)
	}
}

// On the real broker and database: the clock is unknown while the group has not consumed
// what its topic holds, and runs once the group committed past it.
func TestTheClockFollowsTheGroupOnTheBroker(t *testing.T) {
	stack := stacktest.Get(t)
	k := stack.Topics(t, []contract.Topic{{Name: "replies", DeadLetter: "replies.dlq", Partitions: 2}}, "schemas")
	client := stack.Client(t)
	topic, group := k.Topic("replies"), k.Topic("owner")
	for i := range 3 {
		if err := client.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte{byte(i)}, Value: []byte("r")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	pool, err := pgxpool.New(context.Background(), stack.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	admin := kadm.NewClient(client)
	var clock Clock
	go KeepClock(ctx, admin, group, []string{topic}, pool, health.New(time.Minute, time.Minute, time.Minute).Probe("saga.sweeper"), &clock)
	time.Sleep(3 * SampleEvery)
	if at, known := clock.Now(); known {
		t.Fatalf("the group consumed nothing, yet the clock is at %v", at)
	}
	ends, err := admin.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	committed := kadm.Offsets{}
	ends.Each(func(end kadm.ListedOffset) {
		committed.Add(kadm.Offset{Topic: end.Topic, Partition: end.Partition, At: end.Offset, LeaderEpoch: -1})
	})
	before := time.Now()
	if err := admin.CommitAllOffsets(context.Background(), group, committed); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, "the clock runs once the group is caught up", func() bool {
		at, known := clock.Now()
		return known && at.After(before.Add(-2*SampleEvery))
	})
}
