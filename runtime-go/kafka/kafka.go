// Package kafka is how a Go participant talks to the saga's brokers: signed in as its own
// principal, with the topic prefix of its deployment, and partitioning as the Rust
// services' librdkafka does, so a saga's events land on the same partition whichever
// language wrote them.
package kafka

import (
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// MaxPartitionFetchBytes is how much of one partition a consumer's fetch asks for at most
// (the Rust runtime's `max.partition.fetch.bytes`): about a hundred of the saga's events.
const MaxPartitionFetchBytes = 64 * 1024

// RecordBatchBytes is the largest record batch a producer builds. A broker answers a
// fetch with whole batches, so a fetch's limit holds only for batches no bigger than it:
// a backlog published in bigger batches reaches a consumer ahead of every other topic's
// events (the Rust runtime's `batch.size`, docs/runtime.md).
const RecordBatchBytes = MaxPartitionFetchBytes

// Config is the broker connection of a service.
type Config struct {
	Brokers []string
	// Username and Password sign in with SASL/SCRAM-SHA-512 when set.
	Username, Password string
	// TopicPrefix is prepended to every topic and consumer group (a test's own saga).
	TopicPrefix string
}

// ParseBrokers reads a comma-separated list of brokers.
func ParseBrokers(list string) []string {
	var out []string
	for _, b := range strings.Split(list, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Options are the client options every client of the service shares: the brokers, the
// sign-in, reconnecting quickly once a broker is back, and the partitioner.
func (c Config) Options() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.RetryBackoffFn(func(tries int) time.Duration {
			// As the Rust clients' reconnect backoff: 100 ms doubling to 1 s.
			return min(100*time.Millisecond<<min(tries, 4), time.Second)
		}),
		kgo.RecordPartitioner(Partitioner()),
	}
	if c.Username != "" {
		opts = append(opts, kgo.SASL(scram.Auth{User: c.Username, Pass: c.Password}.AsSha512Mechanism()))
	}
	return opts
}

// Topic is the deployed name of a logical topic.
func (c Config) Topic(logical string) string { return c.TopicPrefix + logical }

// Logical is the logical name of a deployed topic.
func (c Config) Logical(topic string) string { return strings.TrimPrefix(topic, c.TopicPrefix) }

// Partitioner partitions as librdkafka's default (`consistent_random`), which the Rust
// services use: the CRC-32 of the key modulo the partition count, a random partition for
// a record without a key. Java's and franz-go's default (murmur2) would put a saga's
// events from a Go service on other partitions than those from a Rust one.
func Partitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, n int) int { return PartitionOf(r.Key, n) }
	})
}

// PartitionOf is the partition of key among n, as librdkafka's consistent_random picks it.
func PartitionOf(key []byte, n int) int {
	if len(key) == 0 {
		return rand.IntN(n)
	}
	return int(crc32.ChecksumIEEE(key) % uint32(n))
}
