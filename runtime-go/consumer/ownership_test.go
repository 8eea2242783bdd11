package consumer

import (
	"testing"
	"time"
)

func TestAMessageOfARevokedPartitionIsNotStarted(t *testing.T) {
	o := newOwnership()
	p := partition{"t", 1}
	o.assigned([]partition{p})
	epoch := o.epoch(p)
	o.revoke([]partition{p}, time.Second)
	if o.start(p, epoch) {
		t.Fatal("a revoked partition's message started")
	}
	// Assigned again: a message polled before is of the old epoch and stays unstarted.
	o.assigned([]partition{p})
	if o.start(p, epoch) || !o.start(p, o.epoch(p)) {
		t.Fatal("epochs")
	}
}

func TestARevocationWaitsForTheMessageInFlight(t *testing.T) {
	o := newOwnership()
	p := partition{"t", 1}
	o.assigned([]partition{p})
	if !o.start(p, o.epoch(p)) {
		t.Fatal("not started")
	}
	done := make(chan time.Time)
	go func() {
		o.revoke([]partition{p}, 5*time.Second)
		done <- time.Now()
	}()
	time.Sleep(100 * time.Millisecond)
	finished := time.Now()
	o.finish(p)
	if revoked := <-done; revoked.Before(finished) {
		t.Fatal("the revocation did not wait")
	}
	// With nothing finishing, the wait ends at its limit.
	o.assigned([]partition{p})
	o.start(p, o.epoch(p))
	start := time.Now()
	o.revoke([]partition{p}, 200*time.Millisecond)
	if waited := time.Since(start); waited < 200*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("waited %s", waited)
	}
}

func TestAStaticMemberIsTheRustOne(t *testing.T) {
	// runtime/src/consumer/mod.rs: the id, then the first 4 bytes of the SHA-256 of the
	// sorted topics joined by commas, in hex; the helper that read it found a73800f4 for
	// shipping's two topics.
	if got := StaticMember("shipping-host-17054", []string{"payment-events", "order-events"}); got != "shipping-host-17054-a73800f4" {
		t.Fatalf("member %s", got)
	}
}

func TestAPartitionNumberHasOneWorkerWhateverTheTopic(t *testing.T) {
	if WorkerOf(4, 3) != 1 || WorkerOf(5, 1) != 0 || WorkerOf(2, 0) != 0 {
		t.Fatal("workers")
	}
}
