// Package consumer is a Go participant's consumer, with the Rust runtime's guarantees
// (`runtime/src/consumer/`): a message's offset is committed only once the message
// reached its final outcome (handled, a duplicate, not handled here, or dead-lettered);
// its inbox row, its handler's writes and its reply commit in one transaction; an outage
// is waited out however long it lasts and never dead-lettered; a message that is itself
// wrong goes to the dead-letter topic. Workers take what waits in batches of up to the
// spec's `batch` (flow.go keeps a slow worker from holding up the others' partitions).
package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/kafka"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/outbox"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/schematopic"
	"sagaplatform/runtime-go/telemetry"
	"sagaplatform/runtime-go/wire"
)

// DefaultWorkers is how many workers a consumer deals its partitions to.
const DefaultWorkers = 3

const (
	// revokeWait: how long a revocation waits for the messages in flight.
	revokeWait = 30 * time.Second
	// outageRetryStart and outageRetryMax: the waits while the infrastructure is away.
	outageRetryStart = 100 * time.Millisecond
	outageRetryMax   = 2 * time.Second
	// deadLetterRetryMax: the longest wait between tries to write a dead letter.
	deadLetterRetryMax = 10 * time.Second
)

// Config is one consumer.
type Config struct {
	Kafka   kafka.Config
	Binding participant.Binding
	Pool    *pgxpool.Pool
	// Relay is woken once a handler's reply committed.
	Relay   *outbox.Relay
	Health  *health.Health
	Schemas *schematopic.Reader
	Metrics *metrics.Metrics
	// Tracer spans each handled event; nil for none.
	Tracer  *telemetry.Tracer
	Workers int
	// InstanceID makes the consumer a static member of its group (see StaticMember);
	// "" joins as a dynamic one.
	InstanceID string
}

// StaticMember is the group.instance.id of instance id reading topics: the id and a
// digest of the topics, as the Rust consumer makes it, so a version that reads other
// topics joins as a new member (KAFKA-12759) and a Go and a Rust instance of the same id
// reading the same topics are the same member.
func StaticMember(id string, topics []string) string {
	sorted := append([]string(nil), topics...)
	sort.Strings(sorted)
	digest := sha256.Sum256([]byte(strings.Join(sorted, ",")))
	return id + "-" + hex.EncodeToString(digest[:4])
}

// WorkerOf is the worker of a partition, whatever its topic: one saga's events on the
// several topics it reads share a partition number, hence a worker, in order.
func WorkerOf(partition int32, workers int) int {
	return int(partition) % max(workers, 1)
}

type polled struct {
	record *kgo.Record
	epoch  uint64
	// receivedAt is when the poll loop took the message (the inbox keeps it).
	receivedAt time.Time
}

type consumer struct {
	Config
	group     string
	client    *kgo.Client
	producer  *kgo.Client
	ownership *ownership
}

// Run consumes until ctx ends: the messages in flight are finished (or left unmarked, to
// be redelivered) and marked offsets are committed.
func Run(ctx context.Context, c Config) error {
	workers := max(c.Workers, 1)
	topics := make([]string, 0, len(c.Binding.Group.Topics))
	for _, t := range c.Binding.Group.Topics {
		topics = append(topics, c.Kafka.Topic(t))
	}
	cons := &consumer{Config: c, group: c.Kafka.Topic(c.Binding.Group.GroupID), ownership: newOwnership()}
	producer, err := kgo.NewClient(append(c.Kafka.Options(), kgo.ProduceRequestTimeout(30*time.Second))...)
	if err != nil {
		return err
	}
	defer producer.Close()
	cons.producer = producer
	opts := append(c.Kafka.Options(),
		kgo.ConsumerGroup(cons.group),
		kgo.ConsumeTopics(topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(10*time.Second),
		kgo.HeartbeatInterval(time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxPartitionBytes(kafka.MaxPartitionFetchBytes),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
			cons.ownership.assigned(partitions(assigned))
			if len(assigned) > 0 {
				slog.Info("partitions assigned", "group", cons.group, "partitions", fmt.Sprint(assigned))
			}
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			// What is in flight finishes (up to a limit) and is marked; then the marks go.
			cons.ownership.revoke(partitions(revoked), revokeWait)
			if err := cl.CommitMarkedOffsets(ctx); err != nil {
				slog.Warn("offset commit on revocation failed", "error", err)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
			// Another member may have them already: nothing of them is marked or committed.
			cons.ownership.revoke(partitions(lost), 0)
		}),
	)
	if c.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(StaticMember(c.InstanceID, topics)))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	cons.client = client
	slog.Info("consumer started", "group", cons.group, "topics", strings.Join(topics, ","), "workers", workers)

	queues := make([]chan polled, workers)
	finished := make(chan struct{}, workers)
	for i := range queues {
		queues[i] = make(chan polled, workerQueue)
		go func(queue chan polled, probe *health.Probe) {
			cons.work(ctx, queue, probe)
			finished <- struct{}{}
		}(queues[i], c.Health.Probe(health.Consumer))
	}
	receiving := c.Health.Probe(health.Consumer)
	deal := newFlow(queues, groupFetches{client: client, ownership: cons.ownership})
	lastReconcile := time.Now()
	for ctx.Err() == nil {
		// A worker behind is looked at again soon even if nothing arrives.
		wait := reconcileEvery
		if deal.behind() {
			wait = pausedCheck
		}
		pollCtx, cancel := context.WithTimeout(ctx, wait)
		fetches := client.PollRecords(pollCtx, 256)
		cancel()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		failed := false
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				slog.Warn("fetch failed", "topic", topic, "partition", p, "error", err)
				receiving.Failing(err)
				failed = true
			}
		})
		if !failed {
			receiving.Working()
		}
		deal.feed()
		now := time.Now()
		fetches.EachRecord(func(r *kgo.Record) {
			// Received after its partition was revoked: the next owner reads it from the
			// committed offset.
			if epoch := cons.ownership.epoch(partition{r.Topic, r.Partition}); epoch != 0 {
				deal.deal(polled{record: r, epoch: epoch, receivedAt: now})
			}
		})
		if time.Since(lastReconcile) >= reconcileEvery {
			deal.reconcile()
			lastReconcile = time.Now()
		}
	}
	for _, q := range queues {
		close(q)
	}
	for range queues {
		<-finished
	}
	// The final commit of what was marked, then the group is left.
	commitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.CommitMarkedOffsets(commitCtx); err != nil {
		slog.Warn("final offset commit failed", "error", err)
	}
	client.CloseAllowingRebalance()
	slog.Info("consumer stopped", "group", cons.group)
	return nil
}

func partitions(m map[string][]int32) []partition {
	var out []partition
	for topic, ps := range m {
		for _, p := range ps {
			out = append(out, partition{topic, p})
		}
	}
	return out
}

// work handles what queue brings until it closes: up to the group's batch of messages
// already waiting, in one transaction (it never waits for a batch to fill, so a quiet
// system keeps one message per transaction and its latency); a batch that fails is handled
// again one message at a time, each to its own outcome. A stop leaves the queued messages
// unmarked: they are redelivered after the restart.
func (c *consumer) work(ctx context.Context, queue chan polled, probe *health.Probe) {
	maxBatch := max(c.Binding.Group.MaxBatch, 1)
	for first := range queue {
		batch := []polled{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case m, open := <-queue:
				if !open {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		if ctx.Err() != nil {
			continue
		}
		// Only what is still ours, marked in flight until its offset is marked: a
		// revocation of its partition waits for that.
		claimed := make([]polled, 0, len(batch))
		for _, m := range batch {
			if c.ownership.start(partition{m.record.Topic, m.record.Partition}, m.epoch) {
				claimed = append(claimed, m)
			}
		}
		together := false
		if len(claimed) > 1 {
			start := time.Now()
			err := c.processBatch(ctx, claimed)
			c.Metrics.HandlerDuration.WithLabelValues(c.group).Observe(time.Since(start).Seconds())
			if together = err == nil; !together {
				slog.Debug("batch rolled back; handling its messages one at a time", "messages", len(claimed), "error", err)
			}
		}
		// A partition whose message was not done (revoked, or the stop came) is left to
		// its next owner from that message on.
		var givenUp []partition
		for _, m := range claimed {
			p := partition{m.record.Topic, m.record.Partition}
			done := together
			if !together && !slices.Contains(givenUp, p) {
				if done = c.deliver(ctx, m, probe); !done {
					givenUp = append(givenUp, p)
				}
			}
			if together {
				c.Metrics.Handled.WithLabelValues(c.Kafka.Logical(m.record.Topic), c.group).Inc()
			}
			if done && c.ownership.owned(p, m.epoch) {
				c.client.MarkCommitRecords(m.record)
			}
			c.ownership.finish(p)
		}
	}
}

// deliver takes one message to its final outcome: handled, or dead-lettered if it is itself
// wrong. An outage is waited out however long it lasts, unless the stop comes or the
// partition is revoked meanwhile (false: leave it unmarked).
func (c *consumer) deliver(ctx context.Context, m polled, probe *health.Probe) bool {
	retry := c.Binding.Group.Retry
	topic := c.Kafka.Logical(m.record.Topic)
	p := partition{m.record.Topic, m.record.Partition}
	attempts, notYet := 0, 0
	var outageSince time.Time
	for {
		attempts++
		start := time.Now()
		doneAttempt := probe.Attempt()
		err := c.process(ctx, m)
		doneAttempt()
		c.Metrics.HandlerDuration.WithLabelValues(c.group).Observe(time.Since(start).Seconds())
		if err == nil {
			if attempts > 1 {
				probe.Working()
			}
			if !outageSince.IsZero() {
				slog.Info("infrastructure is back; the partition moves on", "down_for", time.Since(outageSince).String(), "topic", topic, "partition", p.id)
			}
			c.Metrics.Handled.WithLabelValues(topic, c.group).Inc()
			return true
		}
		var wait time.Duration
		var undecodable *undecodableError
		class := db.Class(err)
		switch {
		case errors.As(err, &undecodable):
			return c.deadLetter(ctx, m, "undecodable", undecodable.Error(), attempts, probe)
		case class == contract.Permanent:
			return c.deadLetter(ctx, m, "permanent", err.Error(), attempts, probe)
		case class == contract.NotYet || class == contract.Contended:
			probe.Failing(err)
			notYet++
			if notYet >= retry.MaxAttempts {
				return c.deadLetter(ctx, m, "retries-exhausted", err.Error(), attempts, probe)
			}
			wait = Backoff(retry, notYet)
			c.Metrics.Retried.WithLabelValues(topic, c.group, class.String()).Inc()
			slog.Warn("retrying in place", "class", class.String(), "error", err, "attempt", notYet, "wait", wait.String(),
				"topic", topic, "partition", p.id, "offset", m.record.Offset)
		default:
			probe.Failing(err)
			if outageSince.IsZero() {
				slog.Warn("infrastructure unavailable; the partition waits for it", "error", err, "topic", topic, "partition", p.id, "offset", m.record.Offset)
				outageSince, wait = time.Now(), outageRetryStart
			} else {
				wait = min(outageRetryMax, outageRetryStart<<min(attempts, 5))
			}
			c.Metrics.Retried.WithLabelValues(topic, c.group, "infrastructure").Inc()
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		if !c.ownership.owned(p, m.epoch) {
			return false
		}
	}
}

// Backoff is the wait before try attempt+1 of a message that lost a race or found its
// state not there yet: doubling, capped, with up to 20 % jitter so replicas do not retry
// in lockstep.
func Backoff(retry contract.RetryPolicy, attempt int) time.Duration {
	base := min(retry.InitialBackoff<<min(max(attempt-1, 0), 20), retry.MaxBackoff)
	return base + time.Duration(rand.Int64N(int64(base/5)+1))
}

type undecodableError struct{ err error }

func (e *undecodableError) Error() string { return e.err.Error() }

// process tries one message once: handled, a duplicate the inbox knows (rolled back), or
// an event this service does not handle all end it without an error.
func (c *consumer) process(ctx context.Context, m polled) error {
	in, err := c.decode(ctx, m)
	if err != nil || in == nil {
		return err
	}
	conn, err := c.Metrics.Acquire(ctx, c.Pool, metrics.WorkPool)
	if err != nil {
		return err
	}
	defer conn.Release()
	var replied bool
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		duplicate, r, err := c.handle(ctx, tx, m, in)
		if duplicate {
			return errDuplicate
		}
		replied = r
		return err
	})
	if errors.Is(err, errDuplicate) {
		return nil
	}
	if err == nil && replied && c.Relay != nil {
		c.Relay.Wake()
	}
	return err
}

// processBatch tries messages once in one transaction, in order (later ones see what
// earlier ones wrote). Any failure rolls all of it back: the worker then takes each
// message on its own, to its own outcome. An undecodable message fails the batch before
// the transaction starts.
func (c *consumer) processBatch(ctx context.Context, ms []polled) error {
	ins := make([]*participant.Inbound, len(ms))
	handled := 0
	for i, m := range ms {
		in, err := c.decode(ctx, m)
		if err != nil {
			return err
		}
		ins[i] = in
		if in != nil {
			handled++
		}
	}
	if handled == 0 {
		// Only events this service does not handle: no transaction to open (as in Rust).
		return nil
	}
	conn, err := c.Metrics.Acquire(ctx, c.Pool, metrics.WorkPool)
	if err != nil {
		return err
	}
	defer conn.Release()
	var replied bool
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for i, in := range ins {
			if in == nil {
				continue
			}
			_, r, err := c.handle(ctx, tx, ms[i], in)
			if err != nil {
				return err
			}
			replied = replied || r
		}
		return nil
	})
	if err == nil && replied && c.Relay != nil {
		c.Relay.Wake()
	}
	return err
}

// decode is the event m holds; nil for one this service does not handle. A message of a
// schema unknown here may be a newer producer's: the schema topic is read up to its end
// (it registered its schema there before it published) and the message decoded again.
func (c *consumer) decode(ctx context.Context, m polled) (*participant.Inbound, error) {
	in, err := c.Binding.Decode(m.record.Value)
	var unknown *wire.UnknownSchemaError
	if errors.As(err, &unknown) && c.Schemas != nil {
		if _, caught := c.Schemas.CatchUp(ctx); caught != nil {
			return nil, fmt.Errorf("catching up the schema topic: %w", caught)
		}
		in, err = c.Binding.Decode(m.record.Value)
	}
	if err != nil {
		return nil, &undecodableError{err}
	}
	return in, nil
}

// handle runs in in tx: the inbox row (none inserted: a duplicate, nothing else runs), the
// handler, its reply into the outbox.
func (c *consumer) handle(ctx context.Context, tx pgx.Tx, m polled, in *participant.Inbound) (duplicate, replied bool, err error) {
	if c.Tracer != nil {
		var span trace.Span
		ctx, span = c.Tracer.Event(ctx, in.Traceparent, in.Tracestate, in.Key, in.EventID.String(), in.EventType)
		defer span.End()
	}
	tag, err := tx.Exec(ctx, `INSERT INTO inbox (event_id, event_type, topic, partition, "offset", produced_at, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING`,
		in.EventID, in.EventType, c.Kafka.Logical(m.record.Topic), m.record.Partition, m.record.Offset, m.record.Timestamp, m.receivedAt)
	if err != nil {
		return false, false, err
	}
	if tag.RowsAffected() == 0 {
		return true, false, nil
	}
	out, err := in.Run(ctx, tx)
	if err != nil || out == nil {
		return false, false, err
	}
	return false, true, outbox.Insert(ctx, tx, out)
}

// errDuplicate rolls back the transaction of an event already in the inbox.
var errDuplicate = errors.New("already handled")

// deadLetter writes the message to its topic's dead-letter twin, retrying until it is
// written (or the stop comes, or the partition is revoked): same key and bytes, its
// headers and the verdict's.
func (c *consumer) deadLetter(ctx context.Context, m polled, reason, cause string, attempts int, probe *health.Probe) bool {
	topic := c.Kafka.Logical(m.record.Topic)
	headers := make([]kgo.RecordHeader, 0, len(m.record.Headers)+8)
	for _, h := range m.record.Headers {
		if !strings.HasPrefix(h.Key, "dlq-") {
			headers = append(headers, h)
		}
	}
	if len(cause) > 2000 {
		cause = string([]rune(cause)[:min(2000, len([]rune(cause)))])
	}
	for _, h := range [][2]string{
		{"dlq-reason", reason},
		{"dlq-error", cause},
		{"dlq-original-topic", topic},
		{"dlq-original-partition", fmt.Sprint(m.record.Partition)},
		{"dlq-original-offset", fmt.Sprint(m.record.Offset)},
		{"dlq-attempts", fmt.Sprint(attempts)},
		{"dlq-consumer-group", c.group},
		{"dlq-failed-at", time.Now().UTC().Format("2006-01-02T15:04:05.000000000-07:00")},
	} {
		headers = append(headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
	}
	letter := &kgo.Record{Topic: m.record.Topic + c.Binding.DeadLetterSuffix, Key: m.record.Key, Value: m.record.Value, Headers: headers}
	wait := 200 * time.Millisecond
	for {
		sendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.producer.ProduceSync(sendCtx, letter).FirstErr()
		cancel()
		if err == nil {
			slog.Error("message dead-lettered", "reason", reason, "error", cause, "topic", topic, "partition", m.record.Partition, "offset", m.record.Offset)
			c.Metrics.DeadLettered.WithLabelValues(topic, c.group, reason).Inc()
			probe.Working()
			return true
		}
		probe.Failing(fmt.Errorf("writing a dead letter: %w", err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		if !c.ownership.owned(partition{m.record.Topic, m.record.Partition}, m.epoch) {
			return false
		}
		wait = min(wait*2, deadLetterRetryMax)
	}
}
