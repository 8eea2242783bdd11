package consumer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/runtime-go/consumer"
	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/stacktest"
)

// stuck books every paid order, but holds the first order of slow until release closes.
type stuck struct {
	slow    uuid.UUID
	release chan struct{}
	once    sync.Once
	started chan struct{}
}

func (s *stuck) OnPaymentCompleted(ctx context.Context, tx pgx.Tx, e *saga.Envelope[saga.PaymentCompleted]) (saga.ShippingOnPaymentCompleted, error) {
	if e.OrderID == s.slow {
		s.once.Do(func() { close(s.started) })
		<-s.release
	}
	_, err := tx.Exec(ctx, "INSERT INTO shipments (order_id, status, units, tracking) VALUES ($1, 'booked', 1, $2) ON CONFLICT DO NOTHING",
		e.OrderID, e.EventID.String())
	return nil, err
}

func (s *stuck) OnOrderCancelled(context.Context, pgx.Tx, *saga.Envelope[saga.OrderCancelled]) (saga.ShippingOnOrderCancelled, error) {
	return nil, nil
}

// On the real broker: a worker stuck on one message holds up only its own partitions.
// Messages for it pile up past what may wait, its partitions are paused, and another
// worker's messages, published after them, are handled meanwhile; once it is released its
// partitions resume and every message is handled exactly once (nothing lost or doubled by
// the pause, which drops what was prefetched).
func TestAStuckWorkerHoldsUpOnlyItsOwnPartitions(t *testing.T) {
	stack := stacktest.Get(t)
	k := stack.Topics(t, saga.Topics, saga.SchemaTopic)
	conn, pool := shippingDatabase(t, stack)
	h := &stuck{slow: uuid.New(), release: make(chan struct{}), started: make(chan struct{})}
	// Released at the latest when the test ends, before the pool closes (which waits for the
	// stuck handler's connection).
	var released sync.Once
	release := func() { released.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	producer := stack.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	send := func(partition int32, order uuid.UUID) {
		data, err := saga.New(order, saga.PaymentCompleted{UserID: uuid.New(), Amount: 1}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		producer.Produce(context.Background(), &kgo.Record{Topic: k.Topic(saga.TopicPaymentEvents), Partition: partition,
			Key: []byte(order.String()), Value: data}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Error(err)
			}
		})
	}
	const behind = 4000 // more than a worker's queue and what may wait behind it
	send(0, h.slow)
	for range behind {
		send(0, uuid.New())
	}
	others := make([]uuid.UUID, 5)
	for i := range others {
		others[i] = uuid.New()
		send(1, others[i])
	}
	if err := producer.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	consumed := make(chan error, 1)
	go func() {
		consumed <- consumer.Run(ctx, consumer.Config{Kafka: k, Binding: saga.ShippingBinding(h), Pool: pool, Metrics: metrics.New(),
			Health: health.New(time.Minute, 5*time.Second, 10*time.Minute), Workers: 2})
	}()
	<-h.started
	booked := func(orders ...uuid.UUID) int {
		var n int
		query := "SELECT count(*) FROM shipments"
		args := []any{}
		if len(orders) > 0 {
			query += " WHERE order_id = ANY($1)"
			args = append(args, orders)
		}
		if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	stacktest.Eventually(t, "the other worker's messages are handled while the first is stuck", func() bool {
		return booked(others...) == len(others)
	})
	if n := booked(); n != len(others) {
		t.Fatalf("%d booked while the first worker is stuck", n)
	}
	release()
	stacktest.Eventually(t, "every message is handled once released", func() bool { return booked() == behind+1+len(others) })
	stop()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	var inbox, distinct int
	if err := conn.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT event_id) FROM inbox").Scan(&inbox, &distinct); err != nil {
		t.Fatal(err)
	}
	if inbox != behind+1+len(others) || distinct != inbox {
		t.Fatalf("inbox %d rows, %d distinct", inbox, distinct)
	}
}
