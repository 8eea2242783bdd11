package db

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"sagaplatform/migrations"
	"sagaplatform/runtime-go/contract"
)

func TestAnErrorTakesTheClassTheRustRuntimeGivesIt(t *testing.T) {
	cases := []struct {
		err  error
		want contract.FailureClass
	}{
		{&pgconn.PgError{Code: "08006"}, contract.Infrastructure},
		{&pgconn.PgError{Code: "40P01"}, contract.Infrastructure},
		{&pgconn.PgError{Code: "57P01"}, contract.Infrastructure},
		{&pgconn.PgError{Code: "55P03"}, contract.Infrastructure},
		{&pgconn.PgError{Code: "25006"}, contract.Infrastructure},
		{&pgconn.PgError{Code: "23505"}, contract.Contended},
		{&pgconn.PgError{Code: "23P01"}, contract.Contended},
		{&pgconn.PgError{Code: "23514"}, contract.Permanent},
		{&pgconn.PgError{Code: "42P01"}, contract.Permanent},
		{fmt.Errorf("handler: %w", &pgconn.PgError{Code: "23505"}), contract.Contended},
		{pgx.ErrNoRows, contract.Permanent},
		{errors.New("dial tcp: connection refused"), contract.Infrastructure},
		{notYet{}, contract.NotYet},
	}
	for _, c := range cases {
		if got := Class(c.err); got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
	}
}

type notYet struct{}

func (notYet) Error() string                { return "the saga is not here yet" }
func (notYet) Class() contract.FailureClass { return contract.NotYet }

func TestMigrationsAreReadAsSqlxReadsThem(t *testing.T) {
	runtime, err := Migrations(migrations.FS, "runtime")
	if err != nil {
		t.Fatal(err)
	}
	if len(runtime) < 6 || runtime[0].Version != 1 || runtime[0].Description != "outbox inbox" || len(runtime[0].Checksum) != 48 {
		t.Fatalf("runtime migrations: %+v", runtime[0])
	}
	for i := 1; i < len(runtime); i++ {
		if runtime[i].Version <= runtime[i-1].Version {
			t.Fatal("not in version order")
		}
	}
}

// The stack's PostgreSQL as its superuser, from the variables `cargo xtask test` sets.
func superuser(t *testing.T, database string) *pgx.Conn {
	t.Helper()
	port, password := os.Getenv("SAGA_POSTGRES_PORT"), os.Getenv("SAGA_POSTGRES_PASSWORD")
	if port == "" {
		t.Skip("needs the stack's PostgreSQL: run through `cargo xtask test`")
	}
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%s/%s", password, port, database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

type record struct {
	Version     int64
	Description string
	Success     bool
	Checksum    string
}

func history(t *testing.T, conn *pgx.Conn) []record {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT version, description, success, encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[record])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Migrated here, a fresh database records exactly the history the Rust shipping service's
// sqlx recorded in the stack's own `shipping_service` database; migrating again changes
// nothing; a modified or half-applied migration stops it.
func TestTheGoMigratorRecordsWhatTheRustServicesRecord(t *testing.T) {
	ctx := context.Background()
	admin := superuser(t, "postgres")
	name := fmt.Sprintf("go_migrate_%d", rand.Uint32())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	conn := superuser(t, name)
	runtime, err := Migrations(migrations.FS, "runtime")
	if err != nil {
		t.Fatal(err)
	}
	shipping, err := Migrations(migrations.FS, "shipping")
	if err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, conn, runtime, shipping); err != nil {
		t.Fatal(err)
	}
	ours := history(t, conn)
	rust := history(t, superuser(t, "shipping_service"))
	if fmt.Sprint(ours) != fmt.Sprint(rust) {
		t.Fatalf("the Go migrator recorded\n%v\nthe Rust service recorded\n%v", ours, rust)
	}
	if err := Migrate(ctx, conn, runtime, shipping); err != nil {
		t.Fatalf("migrating again: %v", err)
	}
	if again := history(t, conn); fmt.Sprint(again) != fmt.Sprint(ours) {
		t.Fatalf("migrating again changed the history: %v", again)
	}
	var tables int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename IN ('outbox', 'inbox', 'shipments')").Scan(&tables); err != nil || tables != 3 {
		t.Fatalf("tables: %d, %v", tables, err)
	}

	modified := append([]Migration(nil), shipping...)
	modified[0].Checksum = []byte("not the file's")
	var refused *MigrationError
	if err := Migrate(ctx, conn, runtime, modified); !errors.As(err, &refused) {
		t.Fatalf("a modified migration: %v", err)
	}
	if _, err := conn.Exec(ctx, "UPDATE _sqlx_migrations SET success = false WHERE version = 3"); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, conn, runtime, shipping); !errors.As(err, &refused) {
		t.Fatalf("a half-applied migration: %v", err)
	}
	clash := append([]Migration(nil), shipping...)
	clash[0].Version = 1
	if err := Migrate(ctx, conn, runtime, clash); !errors.As(err, &refused) {
		t.Fatalf("a service migration on a runtime version: %v", err)
	}
}
