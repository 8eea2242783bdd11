package kafka_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	saga "sagaplatform/generated/go/orderfulfillment"
	"sagaplatform/runtime-go/kafka"
)

// Every row the Rust services' relays published (librdkafka's partitioner) went to the
// partition this partitioner picks for its key: read back from the stack's own outbox
// tables, where each relay keeps the partition the broker acknowledged.
func TestThePartitionerPicksWhatLibrdkafkaPicked(t *testing.T) {
	port, password := os.Getenv("SAGA_POSTGRES_PORT"), os.Getenv("SAGA_POSTGRES_PASSWORD")
	if port == "" {
		t.Skip("needs the stack's PostgreSQL: run through `cargo xtask test`")
	}
	partitions := map[string]int{}
	for _, topic := range saga.Topics {
		partitions[topic.Name] = int(topic.Partitions)
	}
	checked := 0
	for _, database := range []string{"order_service", "product_service", "user_service"} {
		conn, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%s/%s", password, port, database))
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(context.Background(),
			"SELECT topic, partition_key, published_partition FROM outbox WHERE published_partition IS NOT NULL ORDER BY id DESC LIMIT 300")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var topic, key string
			var partition int32
			if err := rows.Scan(&topic, &key, &partition); err != nil {
				t.Fatal(err)
			}
			if got := kafka.PartitionOf([]byte(key), partitions[topic]); got != int(partition) {
				t.Errorf("%s key %s: librdkafka published to partition %d, this partitioner picks %d", topic, key, partition, got)
			}
			checked++
		}
		conn.Close(context.Background())
	}
	if checked == 0 {
		t.Skip("no published outbox row in the stack yet: place an order first")
	}
	t.Logf("%d rows agree", checked)
}
