package db

import (
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Migration is one SQL file, as sqlx reads it: `<version>_<description>.sql`.
type Migration struct {
	Version int64
	// Description is the file name after the version, without `.sql`, `_` as spaces.
	Description string
	SQL         string
	// Checksum is the SHA-384 of the file's bytes.
	Checksum []byte
	// NoTx: the file starts with `-- no-transaction`, so it runs outside a transaction.
	NoTx bool
}

// Migrations reads the migrations of folder dir of fsys, in version order. Files not
// named `<version>_<description>.sql` are skipped, as sqlx skips them.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		version, rest, ok := strings.Cut(e.Name(), "_")
		if e.IsDir() || !ok || !strings.HasSuffix(rest, ".sql") {
			continue
		}
		number, err := strconv.ParseInt(version, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("migration %s: the name must start with an integer version", e.Name())
		}
		sql, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		sum := sha512.Sum384(sql)
		out = append(out, Migration{
			Version:     number,
			Description: strings.ReplaceAll(strings.TrimSuffix(rest, ".sql"), "_", " "),
			SQL:         string(sql),
			Checksum:    sum[:],
			NoTx:        strings.HasPrefix(string(sql), "-- no-transaction"),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// FirstNewRuntimeVersion: the runtime numbers its new migrations from here; a service
// numbers its own from 3 up and stays below.
const FirstNewRuntimeVersion = 1_000_000

// MigrationError: the database's history does not fit these migrations.
type MigrationError struct{ Reason string }

func (e *MigrationError) Error() string { return "migrations: " + e.Reason }

// Migrate brings a service database up to date: the runtime's migrations, then the
// service's, in one history, recorded in `_sqlx_migrations` exactly as the Rust services'
// sqlx records them (the same lock, table, rows and checksums), so a Go and a Rust
// instance of one service accept each other's database. conn should have no statement,
// lock or idle timeout: a migration may take long, and a replica starting beside another
// waits on the lock for as long as the other migrates.
func Migrate(ctx context.Context, conn *pgx.Conn, runtime, service []Migration) error {
	for _, m := range service {
		for _, r := range runtime {
			if m.Version == r.Version || m.Version >= FirstNewRuntimeVersion {
				return &MigrationError{fmt.Sprintf("service migration %d uses a version the runtime owns: number it from 3 up, below %d", m.Version, FirstNewRuntimeVersion)}
			}
		}
	}
	var database string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&database); err != nil {
		return err
	}
	lock := lockID(database)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lock); err != nil {
		return err
	}
	defer func() {
		// A failed unlock leaves the lock to the connection's end, which the caller closes.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lock)
	}()
	// Each set ignores the other's versions (sqlx's `ignore_missing`), as in Rust.
	for _, set := range [][]Migration{runtime, service} {
		if err := apply(ctx, conn, set); err != nil {
			return err
		}
	}
	return nil
}

// lockID is sqlx's lock for a database: 0x3d32ad9e times the CRC-32 of its name.
func lockID(database string) int64 {
	return 0x3d32ad9e * int64(crc32.ChecksumIEEE([]byte(database)))
}

func apply(ctx context.Context, conn *pgx.Conn, migrations []Migration) error {
	if _, err := conn.Exec(ctx, `
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);`); err != nil {
		return err
	}
	var dirty int64
	switch err := conn.QueryRow(ctx, "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1").Scan(&dirty); {
	case err == nil:
		return &MigrationError{fmt.Sprintf("migration %d was partially applied; fix it by hand and mark it done", dirty)}
	case !errors.Is(err, pgx.ErrNoRows):
		return err
	}
	applied := map[int64][]byte{}
	rows, err := conn.Query(ctx, "SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
	if err != nil {
		return err
	}
	for rows.Next() {
		var version int64
		var checksum []byte
		if err := rows.Scan(&version, &checksum); err != nil {
			return err
		}
		applied[version] = checksum
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range migrations {
		if checksum, ok := applied[m.Version]; ok {
			if string(checksum) != string(m.Checksum) {
				return &MigrationError{fmt.Sprintf("migration %d was applied but has been modified since", m.Version)}
			}
			continue
		}
		if err := run(ctx, conn, m); err != nil {
			return err
		}
	}
	return nil
}

// run applies m and records it in one transaction (unless it asks for none), then its
// time apart, as sqlx does: the time may be lost, the record may not.
func run(ctx context.Context, conn *pgx.Conn, m Migration) error {
	start := time.Now()
	execute := func(q interface {
		Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	}) error {
		// The simple protocol: a migration is several statements.
		if _, err := q.Exec(ctx, m.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.Version, m.Description, err)
		}
		_, err := q.Exec(ctx, `
    INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time )
    VALUES ( $1, $2, TRUE, $3, -1 )
                `, m.Version, m.Description, m.Checksum)
		return err
	}
	if m.NoTx {
		if err := execute(conn); err != nil {
			return err
		}
	} else if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return execute(tx) }); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, "UPDATE _sqlx_migrations SET execution_time = $1 WHERE version = $2", time.Since(start).Nanoseconds(), m.Version)
	return err
}
