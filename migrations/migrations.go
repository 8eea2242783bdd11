// Package migrations is every database's SQL, for the Go services: the runtime's tables
// (`runtime/`: outbox, inbox) and each service's (`<service>/`), the same files the Rust
// crates embed with `sqlx::migrate!`, so a Go and a Rust instance of a service record the
// same migrations with the same checksums.
package migrations

import "embed"

// FS holds `<owner>/<version>_<description>.sql` for every owner.
//
//go:embed runtime/*.sql shipping/*.sql
var FS embed.FS
