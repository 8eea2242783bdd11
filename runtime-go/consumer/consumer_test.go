package consumer_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/migrations"
	"sagaplatform/runtime-go/consumer"
	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/outbox"
	"sagaplatform/runtime-go/stacktest"
)

// verdict is a handler's failure of a chosen class.
type verdict struct{ class contract.FailureClass }

func (v verdict) Error() string                { return "the test's verdict: " + v.class.String() }
func (v verdict) Class() contract.FailureClass { return v.class }

// handler books every paid order, except those it was told to refuse with a failure.
type handler struct {
	mu       sync.Mutex
	failures map[uuid.UUID]contract.FailureClass
	tries    map[uuid.UUID]int
}

func (h *handler) OnPaymentCompleted(ctx context.Context, tx pgx.Tx, e *saga.Envelope[saga.PaymentCompleted]) (saga.ShippingOnPaymentCompleted, error) {
	h.mu.Lock()
	h.tries[e.OrderID]++
	class, fails := h.failures[e.OrderID]
	h.mu.Unlock()
	if fails {
		return nil, verdict{class}
	}
	if _, err := tx.Exec(ctx, "INSERT INTO shipments (order_id, status, units, tracking) VALUES ($1, 'booked', 1, $2)", e.OrderID, e.OrderID.String()); err != nil {
		return nil, err
	}
	return saga.ShipmentBooked{Tracking: e.OrderID.String()}, nil
}

func (h *handler) OnOrderCancelled(context.Context, pgx.Tx, *saga.Envelope[saga.OrderCancelled]) (saga.ShippingOnOrderCancelled, error) {
	return nil, nil
}

func (h *handler) triesOf(order uuid.UUID) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tries[order]
}

// shippingDatabase is a database of the test's own with the shipping service's schema: a
// superuser connection and a pool.
func shippingDatabase(t *testing.T, stack *stacktest.Stack) (*pgx.Conn, *pgxpool.Pool) {
	t.Helper()
	database := stack.Database(t)
	conn := stack.Connect(t, database)
	runtime, _ := db.Migrations(migrations.FS, "runtime")
	shipping, _ := db.Migrations(migrations.FS, "shipping")
	if err := db.Migrate(context.Background(), conn, runtime, shipping); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), stack.URL(database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return conn, pool
}

// A Go participant on the real broker and database: an event is handled once however
// often it comes, its reply is published through the outbox, what is not its event is
// skipped, and what is wrong is dead-lettered as the Rust consumer does it; every offset
// is committed once its message reached its outcome.
func TestAParticipantHandlesOnceRepliesThroughTheOutboxAndDeadLettersWhatIsWrong(t *testing.T) {
	stack := stacktest.Get(t)
	k := stack.Topics(t, saga.Topics, saga.SchemaTopic)
	conn, pool := shippingDatabase(t, stack)

	booked, permanent, notYet := uuid.New(), uuid.New(), uuid.New()
	h := &handler{failures: map[uuid.UUID]contract.FailureClass{permanent: contract.Permanent, notYet: contract.NotYet}, tries: map[uuid.UUID]int{}}
	binding := saga.ShippingBinding(h)
	// Short waits between the tries of a message whose state is not there yet.
	binding.Group.Retry = contract.RetryPolicy{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	m := metrics.New()
	hl := health.New(time.Minute, 5*time.Second, 10*time.Minute)
	producer := stack.Client(t)
	producer2, err := kgo.NewClient(k.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer producer2.Close()
	relay := &outbox.Relay{Pool: pool, Producer: producer2, Kafka: k, Probe: hl.Probe(health.Relay), Metrics: m}
	ctx, stop := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	go func() { relay.Run(ctx); close(relayDone) }()
	consumed := make(chan error, 1)
	go func() {
		consumed <- consumer.Run(ctx, consumer.Config{Kafka: k, Binding: binding, Pool: pool, Relay: relay, Health: hl,
			Metrics: m, Workers: 3, InstanceID: "go-test-" + uuid.NewString()[:8]})
	}()

	paid := func(order uuid.UUID) []byte {
		e := saga.New(order, saga.PaymentCompleted{UserID: uuid.New(), Amount: 500})
		e.Context = &saga.SagaContext{Items: []saga.OrderItem{{ProductID: uuid.New(), Quantity: 2}}}
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	created, err := saga.New(booked, saga.OrderCreated{UserID: uuid.New(), CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	payment := paid(booked)
	send := func(topic string, key uuid.UUID, value []byte) {
		rec := &kgo.Record{Topic: k.Topic(topic), Key: []byte(key.String()), Value: value, Headers: []kgo.RecordHeader{{Key: "event-type", Value: []byte("x")}}}
		if err := producer2.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	send(saga.TopicPaymentEvents, booked, payment)
	send(saga.TopicPaymentEvents, booked, payment) // a redelivery
	send(saga.TopicOrderEvents, booked, created)   // not shipping's event
	send(saga.TopicOrderEvents, permanent, []byte("not an event"))
	send(saga.TopicPaymentEvents, permanent, paid(permanent))
	send(saga.TopicPaymentEvents, notYet, paid(notYet))

	// The reply, published by the relay.
	reader := stack.Client(t, kgo.ConsumeTopics(k.Topic(saga.TopicShippingEvents), k.Topic(saga.TopicOrderEvents+saga.DeadLetterSuffix),
		k.Topic(saga.TopicPaymentEvents+saga.DeadLetterSuffix)), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	replies, letters := map[uuid.UUID]int{}, map[string]*kgo.Record{}
	stacktest.Eventually(t, "one reply and three dead letters", func() bool {
		pollCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		reader.PollFetches(pollCtx).EachRecord(func(r *kgo.Record) {
			if r.Topic == k.Topic(saga.TopicShippingEvents) {
				reply, err := saga.Decode[saga.ShipmentBooked](r.Value)
				if err != nil {
					t.Errorf("reply: %v", err)
					return
				}
				replies[reply.OrderID]++
				return
			}
			for _, h := range r.Headers {
				if h.Key == "dlq-reason" {
					letters[string(h.Value)] = r
				}
			}
		})
		return len(replies) == 1 && len(letters) == 3
	})
	if replies[booked] != 1 {
		t.Fatalf("replies %v", replies)
	}
	header := func(r *kgo.Record, name string) string {
		for _, h := range r.Headers {
			if h.Key == name {
				return string(h.Value)
			}
		}
		return ""
	}
	garbage := letters["undecodable"]
	if garbage == nil || string(garbage.Value) != "not an event" || header(garbage, "dlq-original-topic") != saga.TopicOrderEvents ||
		header(garbage, "dlq-consumer-group") != k.Topic(binding.Group.GroupID) || header(garbage, "event-type") != "x" ||
		header(garbage, "dlq-attempts") != "1" {
		t.Fatalf("the undecodable letter: %+v", garbage)
	}
	if letters["permanent"] == nil || h.triesOf(permanent) != 1 {
		t.Fatalf("the permanent letter after %d tries: %+v", h.triesOf(permanent), letters["permanent"])
	}
	if letters["retries-exhausted"] == nil || h.triesOf(notYet) != 3 || header(letters["retries-exhausted"], "dlq-attempts") != "3" {
		t.Fatalf("the exhausted letter after %d tries: %+v", h.triesOf(notYet), letters["retries-exhausted"])
	}

	// One inbox row (the redelivery and the skipped event left none), one booking.
	var inbox, shipments int
	if err := conn.QueryRow(context.Background(), "SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM shipments)").Scan(&inbox, &shipments); err != nil {
		t.Fatal(err)
	}
	if inbox != 1 || shipments != 1 {
		t.Fatalf("inbox %d, shipments %d", inbox, shipments)
	}
	var published int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND published_partition IS NOT NULL").Scan(&published); err != nil || published != 1 {
		t.Fatalf("outbox published %d, %v", published, err)
	}

	// Stopped, the consumer has committed every message's offset.
	stop()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	<-relayDone
	admin := kadm.NewClient(producer)
	ends, err := admin.ListEndOffsets(context.Background(), k.Topic(saga.TopicPaymentEvents), k.Topic(saga.TopicOrderEvents))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := admin.FetchOffsets(context.Background(), k.Topic(binding.Group.GroupID))
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(end kadm.ListedOffset) {
		if end.Offset == 0 {
			return
		}
		at, ok := committed.Lookup(end.Topic, end.Partition)
		if !ok || at.At != end.Offset {
			t.Errorf("%s/%d: committed %v, end %d", end.Topic, end.Partition, at.At, end.Offset)
		}
	})
	if errors.Is(ctx.Err(), context.Canceled) == false {
		t.Fatal("the test's context")
	}
}
