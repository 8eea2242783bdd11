package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/migrations"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/outbox"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/stacktest"
)

// Published rows stay in the outbox, so it only grows. The relay's marking of a batch looks
// its rows up by id however big it grew: pgx's cached statement got a generic plan in the
// first batches, while the outbox was nearly empty, that joined the ids by a sequential
// scan of every row (as the Rust relay's did, 1.6 ms a batch at 9,000 rows).
func TestMarkingABatchReadsOnlyItsRowsHoweverBigTheOutboxGrew(t *testing.T) {
	stack := stacktest.Get(t)
	k := stack.Topics(t, saga.Topics, saga.SchemaTopic)
	database := stack.Database(t)
	conn := stack.Connect(t, database)
	ctx := context.Background()
	runtime, err := db.Migrations(migrations.FS, "runtime")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Migrate(ctx, conn, runtime, nil); err != nil {
		t.Fatal(err)
	}
	// One connection, so every batch runs on the session whose statements are cached.
	config, err := pgxpool.ParseConfig(stack.URL(database))
	if err != nil {
		t.Fatal(err)
	}
	config.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, config)
	if err != nil {
		t.Fatal(err)
	}
	relay := &outbox.Relay{Pool: pool, Producer: stack.Client(t), Kafka: k,
		Probe: health.New(time.Minute, 5*time.Second, 10*time.Minute).Probe(health.Relay), Metrics: metrics.New()}
	publishOne := func() {
		t.Helper()
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return outbox.Insert(ctx, tx, &participant.Outbound{EventID: uuid.New(), EventType: "shipment.booked",
				Topic: saga.TopicShippingEvents, Key: "k", Payload: []byte{0}, Headers: map[string]string{}})
		})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := relay.PublishBatch(ctx); err != nil || n != 1 {
			t.Fatalf("published %d: %v", n, err)
		}
	}
	// The first batches, on a nearly empty outbox (PostgreSQL settles on a generic plan
	// after five executions of a prepared statement).
	for range 8 {
		publishOne()
	}
	// Then the outbox holds many published rows (before autovacuum analyzed it again).
	const published = 20_000
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (event_id, topic, partition_key, event_type, payload, published_at)
		SELECT gen_random_uuid(), 'shipping-events', 'old', 'shipment.booked', '\x00', now() FROM generate_series(1, $1)`,
		published); err != nil {
		t.Fatal(err)
	}
	for range 8 {
		publishOne()
	}
	// The relay's session closed, so its table statistics are reported.
	pool.Close()
	stats := stack.Connect(t, database)
	var read int64
	if err := stats.QueryRow(ctx, "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'outbox'").Scan(&read); err != nil {
		t.Fatal(err)
	}
	if read >= published {
		t.Fatalf("the relay's batches read %d outbox rows by sequential scan: a batch read all %d published rows", read, published)
	}
}
