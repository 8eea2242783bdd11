package consumer

import (
	"slices"
	"strings"
	"sync"
	"time"
)

type partition struct {
	topic string
	id    int32
}

type claim struct {
	epoch    uint64
	revoked  bool
	inFlight int
}

// ownership says which partitions are still this consumer's: a message of a partition
// revoked since it was polled is not started, nor retried, nor marked; a revocation waits
// for the messages in flight (up to a limit) before the group moves on.
type ownership struct {
	mu     sync.Mutex
	idle   *sync.Cond
	claims map[partition]*claim
}

func newOwnership() *ownership {
	o := &ownership{claims: map[partition]*claim{}}
	o.idle = sync.NewCond(&o.mu)
	return o
}

// assigned: the partitions are this consumer's from now, under a new epoch.
func (o *ownership) assigned(ps []partition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		c := o.claims[p]
		if c == nil {
			c = &claim{}
			o.claims[p] = c
		}
		c.epoch++
		c.revoked = false
	}
}

// epoch is the current epoch of p, for a message just polled.
func (o *ownership) epoch(p partition) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.claims[p]; c != nil && !c.revoked {
		return c.epoch
	}
	return 0
}

// start marks a message of p polled under epoch in flight, if p is still ours since.
func (o *ownership) start(p partition, epoch uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.claims[p]
	if c == nil || c.revoked || c.epoch != epoch || epoch == 0 {
		return false
	}
	c.inFlight++
	return true
}

// owned says whether p is still ours under epoch.
func (o *ownership) owned(p partition, epoch uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.claims[p]
	return c != nil && !c.revoked && c.epoch == epoch
}

func (o *ownership) finish(p partition) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.claims[p]; c != nil && c.inFlight > 0 {
		c.inFlight--
		if c.inFlight == 0 {
			o.idle.Broadcast()
		}
	}
}

// revoke takes the partitions away and waits until none of their messages is in flight,
// or until limit.
func (o *ownership) revoke(ps []partition, limit time.Duration) {
	deadline := time.Now().Add(limit)
	timer := time.AfterFunc(limit, func() {
		o.mu.Lock()
		o.idle.Broadcast()
		o.mu.Unlock()
	})
	defer timer.Stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range ps {
		if c := o.claims[p]; c != nil {
			c.revoked = true
		}
	}
	for time.Now().Before(deadline) {
		busy := false
		for _, p := range ps {
			if c := o.claims[p]; c != nil && c.inFlight > 0 {
				busy = true
			}
		}
		if !busy {
			return
		}
		o.idle.Wait()
	}
}

// current is the partitions this consumer holds now, sorted.
func (o *ownership) current() []partition {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []partition
	for p, c := range o.claims {
		if !c.revoked {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b partition) int {
		if c := strings.Compare(a.topic, b.topic); c != 0 {
			return c
		}
		return int(a.id - b.id)
	})
	return out
}
