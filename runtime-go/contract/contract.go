// Package contract holds the rows a saga's generated package fills in from its spec: the
// same for every saga, so they are written here once (the counterpart of the Rust
// `saga-contract` crate's topology).
package contract

import "time"

// Topic is one Kafka topic of the saga.
type Topic struct {
	Name       string
	Partitions int32
	// DeadLetter is the topic a consumer of this one dead-letters its messages to.
	DeadLetter string
}

// RetryPolicy is how often, and how far apart, a delivery that lost a race or found its
// state not there yet is tried before it is dead-lettered.
type RetryPolicy struct {
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// ConsumerGroup is the consumer group of one service: the topics it reads and the retry
// policy and batch of its deliveries.
type ConsumerGroup struct {
	Service string
	GroupID string
	Topics  []string
	Retry   RetryPolicy
	// MaxBatch is how many messages already waiting a worker may handle in one transaction.
	MaxBatch int
}

// EventInfo is what the spec says of one event apart from its fields.
type EventInfo struct {
	EventType string
	Topic     string
	Publisher string
	// External: published for clients outside the saga; no service of it subscribes.
	External bool
	// Retired: no longer published; still decoded, for the messages already on its topic.
	Retired bool
}

// Subscription is one service handling one event, and the replies the spec allows it.
type Subscription struct {
	Service   string
	EventType string
	Topic     string
	Replies   []string
}

// Compensation gives back, at Service, what event Undoes holds, when event On arrives.
type Compensation struct {
	On      string
	Service string
	Undoes  string
	// Tombstone: arriving before the request it undoes, it makes that request do nothing.
	Tombstone bool
}

// FailureClass is what a failed delivery means, and so what the consumer does with the
// message. Only a message that is itself wrong belongs in a dead-letter topic; an outage
// of the world around it does not.
type FailureClass int

const (
	// Infrastructure: the world is broken for a while (the database is unreachable, a
	// connection was lost, a serialization failure or a deadlock, a broker error). Never
	// dead-lettered: the consumer waits and tries again for as long as it takes.
	Infrastructure FailureClass = iota
	// NotYet: the state the message needs does not exist yet; retried by the spec's
	// policy, then dead-lettered.
	NotYet
	// Contended: the handler lost a race with a concurrent transaction (a unique or
	// exclusion violation); retried by the spec's policy, then dead-lettered.
	Contended
	// Permanent: the message itself is wrong and retrying cannot help: dead-lettered at once.
	Permanent
)

func (c FailureClass) String() string {
	switch c {
	case Infrastructure:
		return "infrastructure"
	case NotYet:
		return "not_yet"
	case Contended:
		return "contended"
	default:
		return "permanent"
	}
}

// Classified is an error that knows its class: a handler returns one to say, say, that
// the state its event needs is not there yet.
type Classified interface {
	error
	Class() FailureClass
}
