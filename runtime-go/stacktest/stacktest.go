// Package stacktest, for tests only, reaches the stack `cargo xtask test` runs the Go
// tests against: its PostgreSQL as superuser, its Kafka as the admin principal, private
// databases and topics, so tests of the Go code talk to the real components.
package stacktest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sagaplatform/runtime-go/contract"
	"sagaplatform/runtime-go/kafka"
)

// Stack is the stack under test.
type Stack struct {
	postgresPort, postgresPassword string
	Kafka                          kafka.Config
}

// Get is the stack the environment describes; the test is skipped without one.
func Get(t *testing.T) *Stack {
	t.Helper()
	port := os.Getenv("SAGA_POSTGRES_PORT")
	if port == "" {
		t.Skip("needs the stack: run through `cargo xtask test`")
	}
	password, err := adminPassword()
	if err != nil {
		t.Fatal(err)
	}
	kafkaPort := os.Getenv("SAGA_KAFKA_PORT")
	return &Stack{
		postgresPort:     port,
		postgresPassword: os.Getenv("SAGA_POSTGRES_PASSWORD"),
		Kafka:            kafka.Config{Brokers: []string{"127.0.0.1:" + kafkaPort}, Username: "admin", Password: password},
	}
}

// adminPassword is the stack's Kafka admin password, kept in the repository's
// `.state/kafka-credentials/admin`.
func adminPassword() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			raw, err := os.ReadFile(filepath.Join(dir, ".state", "kafka-credentials", "admin"))
			return strings.TrimSpace(string(raw)), err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test")
		}
		dir = parent
	}
}

// URL is the superuser's URL of database.
func (s *Stack) URL(database string) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%s/%s", s.postgresPassword, s.postgresPort, database)
}

// Connect is a superuser connection to database, closed after the test.
func (s *Stack) Connect(t *testing.T, database string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), s.URL(database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Database is a new database of the test's own, dropped after it.
func (s *Stack) Database(t *testing.T) string {
	t.Helper()
	admin := s.Connect(t, "postgres")
	name := fmt.Sprintf("go_test_%d", rand.Uint32())
	if _, err := admin.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), s.URL("postgres"))
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(context.Background())
		}
	})
	return name
}

// Client is an admin Kafka client with extra options, closed after the test.
func (s *Stack) Client(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	client, err := kgo.NewClient(append(s.Kafka.Options(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return client
}

// Topics creates the saga's topics, their dead-letter twins and the schema topic under a
// prefix of the test's own; returns the Kafka settings that use it.
func (s *Stack) Topics(t *testing.T, topics []contract.Topic, schemaTopic string) kafka.Config {
	t.Helper()
	prefixed := s.Kafka
	prefixed.TopicPrefix = fmt.Sprintf("g%08x.", rand.Uint32())
	admin := kadm.NewClient(s.Client(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, topic := range topics {
		for _, name := range []string{topic.Name, topic.DeadLetter} {
			if _, err := admin.CreateTopic(ctx, topic.Partitions, 1, nil, prefixed.Topic(name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	compact := "compact"
	if _, err := admin.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact}, prefixed.Topic(schemaTopic)); err != nil {
		t.Fatal(err)
	}
	return prefixed
}

// Eventually polls check every 100 ms until it returns true, failing the test after 60 s.
func Eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
