// Package schematopic is the saga's writer schemas on a compacted topic of its own Kafka,
// as the Rust runtime keeps them (`runtime/src/schema_registry.rs`): a service registers
// every version of every event it publishes, keyed by fingerprint, before it publishes;
// a consumer that meets a fingerprint its build does not know reads the topic to its end
// and learns what is new there.
package schematopic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sagaplatform/runtime-go/kafka"
	"sagaplatform/runtime-go/wire"
)

// Timeout is how long a registration or a catch-up may take before it is an outage.
const Timeout = 10 * time.Second

// Register writes every version in schemas to topic and waits until the broker has
// acknowledged each: only then may the service publish with them.
func Register(ctx context.Context, producer *kgo.Client, topic string, schemas []wire.Schema) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	records := make([]*kgo.Record, 0, len(schemas))
	for _, s := range schemas {
		records = append(records, &kgo.Record{Topic: topic, Key: []byte(s.Fingerprint), Value: []byte(s.JSON)})
	}
	return producer.ProduceSync(ctx, records...).FirstErr()
}

// Reader reads the schema topic from its start and learns what is registered there. It
// assigns itself the one partition and keeps its position in memory: every process reads
// the whole topic once.
type Reader struct {
	Kafka kafka.Config
	// Topic is the deployed name of the schema topic.
	Topic string
	Learn func(print wire.Fingerprint, json string) (event string, fresh bool, err error)

	mu     sync.Mutex
	client *kgo.Client
	next   int64
}

// CatchUp reads the topic up to its end as of now and learns every schema not learned
// before; returns how many were new. A record that does not check out is skipped with a
// warning: it cannot make an event decode as anything but its own schema.
func (r *Reader) CatchUp(ctx context.Context) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if r.client == nil {
		opts := append(r.Kafka.Options(), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.Topic: {0: kgo.NewOffset().AtStart()}}))
		client, err := kgo.NewClient(opts...)
		if err != nil {
			return 0, err
		}
		r.client = client
	}
	ends, err := kadm.NewClient(r.client).ListEndOffsets(ctx, r.Topic)
	if err != nil {
		return 0, err
	}
	end, ok := ends.Lookup(r.Topic, 0)
	if !ok || end.Err != nil {
		return 0, fmt.Errorf("the end of %s: %v", r.Topic, errors.Join(end.Err, ends.Error()))
	}
	learned := 0
	for r.next < end.Offset {
		fetches := r.client.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return learned, fmt.Errorf("the schema topic %s did not answer within %s", r.Topic, Timeout)
		}
		for _, e := range fetches.Errors() {
			return learned, e.Err
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			r.next = rec.Offset + 1
			print, err := wire.ParseFingerprint(string(rec.Key))
			if err != nil {
				slog.Warn("a schema registered under no fingerprint: skipped", "offset", rec.Offset)
				return
			}
			event, fresh, err := r.Learn(print, string(rec.Value))
			if err != nil {
				slog.Warn("a registered schema does not check out: skipped", "offset", rec.Offset, "error", err)
				return
			}
			if !fresh {
				return
			}
			learned++
			slog.Info("writer schema learned", "event", event, "fingerprint", print.String())
		})
	}
	return learned, nil
}

// Close ends the reader's client.
func (r *Reader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		r.client.Close()
	}
}
