package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/runtime-go/consumer"
	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/stacktest"
)

// With a batch in the spec, the messages already waiting for a worker go through in one
// transaction per batch (the inbox rows of a batch share their transaction id); a message
// that fails rolls its batch back, and each message of it is then handled on its own: the
// others once, the wrong one dead-lettered after its own try.
func TestWaitingMessagesGoInBatchesAndAFailedBatchOneAtATime(t *testing.T) {
	stack := stacktest.Get(t)
	k := stack.Topics(t, saga.Topics, saga.SchemaTopic)
	conn, pool := shippingDatabase(t, stack)
	orders := make([]uuid.UUID, 40)
	for i := range orders {
		orders[i] = uuid.New()
	}
	bad := orders[17]
	h := &handler{failures: map[uuid.UUID]contract.FailureClass{bad: contract.Permanent}, tries: map[uuid.UUID]int{}}
	binding := saga.ShippingBinding(h)
	binding.Group.MaxBatch = 8

	// Every message waits before the consumer starts, so batches form.
	producer := stack.Client(t)
	for _, order := range orders {
		e := saga.New(order, saga.PaymentCompleted{UserID: uuid.New(), Amount: 500})
		data, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		rec := &kgo.Record{Topic: k.Topic(saga.TopicPaymentEvents), Key: []byte(order.String()), Value: data}
		if err := producer.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() {
		consumed <- consumer.Run(ctx, consumer.Config{Kafka: k, Binding: binding, Pool: pool, Metrics: metrics.New(),
			Health: health.New(time.Minute, 5*time.Second, 10*time.Minute), Workers: 1})
	}()
	letters := stack.Client(t, kgo.ConsumeTopics(k.Topic(saga.TopicPaymentEvents+saga.DeadLetterSuffix)), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var letter *kgo.Record
	stacktest.Eventually(t, "every good order booked and the bad one dead-lettered", func() bool {
		pollCtx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		letters.PollFetches(pollCtx).EachRecord(func(r *kgo.Record) { letter = r })
		var booked int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM shipments").Scan(&booked); err != nil {
			t.Fatal(err)
		}
		return booked == len(orders)-1 && letter != nil
	})
	stop()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	if string(letter.Key) != bad.String() || h.triesOf(bad) != 2 {
		t.Fatalf("the letter %s after %d tries (one in its batch, one alone)", letter.Key, h.triesOf(bad))
	}
	var rows, transactions int
	if err := conn.QueryRow(context.Background(), "SELECT count(*), count(DISTINCT xmin::text) FROM inbox").Scan(&rows, &transactions); err != nil {
		t.Fatal(err)
	}
	if rows != len(orders)-1 || transactions >= rows || transactions < rows/binding.Group.MaxBatch {
		t.Fatalf("%d inbox rows in %d transactions: no batches of up to %d", rows, transactions, binding.Group.MaxBatch)
	}
	t.Logf("%d messages handled in %d transactions", rows, transactions)
}
