// Package outbox is the transactional outbox of a Go participant, the same as the Rust
// runtime's (`runtime/src/outbox.rs`): a reply is inserted in the transaction of the
// handler that decided it, and a relay publishes the rows in id order, under the lock
// that keeps one relay per database, and marks only what the broker acknowledged.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/kafka"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/participant"
)

// RelayLockKey is the advisory lock a relay holds while it publishes a batch: one relay
// per database publishes at a time, whichever language it is written in.
const RelayLockKey = 0x5a6a0001

const (
	batchSize = 100
	// pollEvery: a relay looks at least this often, in case a wake-up was missed.
	pollEvery = 2 * time.Second
	// busyRetry: another relay held the lock; what woke this one may not be in its batch.
	busyRetry = 20 * time.Millisecond
	// MaxMessageBytes: a row larger than the broker's default message size is never
	// publishable; it is marked failed, and later rows of its saga key wait behind it.
	MaxMessageBytes = 1_000_000
)

// Insert keeps o in the outbox, in tx: it is published only if tx commits.
func Insert(ctx context.Context, tx pgx.Tx, o *participant.Outbound) error {
	headers, err := json.Marshal(o.Headers)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx,
		"INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, headers) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
		o.EventID, o.Topic, o.Key, o.EventType, o.Payload, headers)
	return err
}

// Relay publishes the outbox of one database.
type Relay struct {
	Pool     *pgxpool.Pool
	Producer *kgo.Client
	Kafka    kafka.Config
	Probe    *health.Probe
	Metrics  *metrics.Metrics
	// Published is told of each row published: its logical topic and insert time.
	Published func(topic string, createdAt time.Time)

	wakeOnce sync.Once
	wake     chan struct{}
}

func (r *Relay) woken() chan struct{} {
	r.wakeOnce.Do(func() { r.wake = make(chan struct{}, 1) })
	return r.wake
}

// Wake tells the relay that rows were committed: it publishes them at once.
func (r *Relay) Wake() {
	select {
	case r.woken() <- struct{}{}:
	default:
	}
}

// Run publishes until ctx ends; the batch in flight is finished first.
func (r *Relay) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	var failingSince time.Time
	for ctx.Err() == nil {
		// Whatever committed before this point is in the batch below.
		select {
		case <-r.woken():
		default:
		}
		done := r.Probe.Attempt()
		n, err := r.PublishBatch(context.WithoutCancel(ctx))
		done()
		wait := pollEvery
		switch {
		case errors.Is(err, errBusy):
			wait = busyRetry
		case err != nil:
			if failingSince.IsZero() {
				slog.Warn("outbox relay cannot publish; retrying until it can", "error", err)
				failingSince = time.Now()
			}
			r.Probe.Failing(err)
			wait, backoff = backoff, min(backoff*2, time.Second)
		default:
			backoff = 100 * time.Millisecond
			if !failingSince.IsZero() {
				slog.Info("outbox relay publishes again", "down_for", time.Since(failingSince).String())
				failingSince = time.Time{}
				r.Probe.Working()
			}
			if n >= batchSize {
				continue // more is waiting
			}
		}
		select {
		case <-ctx.Done():
		case <-r.woken():
		case <-time.After(wait):
		}
	}
	slog.Info("outbox relay stopped")
}

var errBusy = errors.New("another relay holds the lock")

type row struct {
	id        int64
	topic     string
	key       string
	payload   []byte
	headers   map[string]string
	createdAt time.Time
}

// PublishBatch publishes up to one batch and returns how many rows it marked (those
// acknowledged, plus one marked failed). An error when the broker did not acknowledge a
// row: the rows before it are marked all the same, the rest wait for the next try.
func (r *Relay) PublishBatch(ctx context.Context) (int, error) {
	conn, err := r.Metrics.Acquire(ctx, r.Pool, metrics.WorkPool)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The marking commits without waiting for its WAL flush: a crash can lose only the
	// marks, and rows published again are duplicates the consumers' inbox drops.
	// Its statements are planned for their parameters each time: a cached generic plan of
	// the marking, chosen while the outbox was nearly empty, scanned the whole outbox for
	// every batch once published rows piled up (as the Rust relay's did).
	var locked bool
	if err := tx.QueryRow(ctx, "SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true), pg_try_advisory_xact_lock($1)", RelayLockKey).Scan(nil, nil, &locked); err != nil {
		return 0, err
	}
	if !locked {
		return 0, errBusy
	}
	// Rows behind a failed row of their saga key wait: a saga's events are never
	// published out of order.
	rows, err := tx.Query(ctx, `SELECT id, topic, partition_key, payload, headers, created_at FROM outbox o
		WHERE published_at IS NULL AND failed_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox f
		  WHERE f.failed_at IS NOT NULL AND f.published_at IS NULL AND f.partition_key = o.partition_key)
		ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, batchSize)
	if err != nil {
		return 0, err
	}
	batch, err := pgx.CollectRows(rows, func(scanned pgx.CollectableRow) (row, error) {
		var out row
		err := scanned.Scan(&out.id, &out.topic, &out.key, &out.payload, &out.headers, &out.createdAt)
		return out, err
	})
	if err != nil || len(batch) == 0 {
		return 0, err
	}
	// A row the broker can never take stops the batch at it; it is marked failed below.
	var refused *row
	for i := range batch {
		if size(&batch[i]) > MaxMessageBytes {
			refused = &batch[i]
			batch = batch[:i]
			break
		}
	}
	// Produce the whole batch in id order, then read the acknowledgements in the same
	// order; the idempotent producer keeps each partition's order.
	results := make([]*kgo.Record, len(batch))
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i := range batch {
		wg.Add(1)
		r.Producer.Produce(ctx, record(r.Kafka, &batch[i]), func(rec *kgo.Record, err error) {
			results[i], errs[i] = rec, err
			wg.Done()
		})
	}
	wg.Wait()
	var ids []int64
	var partitions []int32
	var offsets []int64
	var failed error
	for i := range batch {
		if errs[i] != nil {
			// Later rows are published again next time, never marked without an
			// acknowledgement.
			failed = errs[i]
			break
		}
		ids, partitions, offsets = append(ids, batch[i].id), append(partitions, results[i].Partition), append(offsets, results[i].Offset)
	}
	if _, err := tx.Exec(ctx, `UPDATE outbox o SET published_at = clock_timestamp(), published_partition = s.partition, published_offset = s.at
		FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS s(id, partition, at) WHERE o.id = s.id`, ids, partitions, offsets); err != nil {
		return 0, err
	}
	marked := len(ids)
	if refused != nil && failed == nil {
		reason := fmt.Sprintf("%d bytes: larger than any message the broker takes (%d)", size(refused), MaxMessageBytes)
		if _, err := tx.Exec(ctx, "UPDATE outbox SET failed_at = now(), failure = $2 WHERE id = $1", refused.id, reason); err != nil {
			return 0, err
		}
		slog.Error("the broker can never accept this outbox row; marked failed, later events of its saga wait", "outbox_id", refused.id, "reason", reason)
		marked++
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	if r.Published != nil {
		for _, published := range batch[:len(ids)] {
			r.Published(published.topic, published.createdAt)
		}
	}
	return marked, failed
}

func size(r *row) int {
	n := len(r.key) + len(r.payload)
	for k, v := range r.headers {
		n += len(k) + len(v)
	}
	return n
}

// record is a row as the broker gets it: the deployed topic, the key, the payload, and
// the headers in name order (as the Rust relay reads them back from jsonb).
func record(k kafka.Config, r *row) *kgo.Record {
	names := make([]string, 0, len(r.headers))
	for name := range r.headers {
		names = append(names, name)
	}
	sort.Strings(names)
	headers := make([]kgo.RecordHeader, 0, len(names))
	for _, name := range names {
		headers = append(headers, kgo.RecordHeader{Key: name, Value: []byte(r.headers[name])})
	}
	return &kgo.Record{Topic: k.Topic(r.topic), Key: []byte(r.key), Value: r.payload, Headers: headers}
}
