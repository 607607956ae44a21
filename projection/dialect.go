package projection

import (
	"context"
	"fmt"
)

// Dialect is the SQL dialect of a Runner's read-model database.
//
// One projection serves both databases when its SQL keeps to what both
// accept:
//
//   - numbered placeholders $1, $2, ... (modernc.org/sqlite binds $N to the
//     N-th argument, as PostgreSQL does; ? is SQLite only);
//   - TEXT and BIGINT columns (INTEGER is 32 bits in PostgreSQL), INSERT
//     ... ON CONFLICT (...) DO UPDATE with the target table's columns
//     qualified by its name (an unqualified column is ambiguous in
//     PostgreSQL), LIMIT with a non-negative count;
//   - one statement per Exec.
//
// Where the dialects must differ (a table option such as SQLite's WITHOUT
// ROWID, a type such as BYTEA against BLOB), a projector asks DialectOf
// the context that Setup, Apply and Reset receive.
type Dialect int

const (
	// SQLite is modernc.org/sqlite, opened as NewRunner says. The default.
	SQLite Dialect = iota
	// Postgres is PostgreSQL through database/sql (pgx's stdlib driver),
	// usually the event log's own database: the Runner's tables and the
	// read models' must not take the names of the event store's tables
	// (events, streams, commands, log_head, snapshots, eventlog_schema).
	Postgres
)

// String returns "sqlite" or "postgres".
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

type dialectKey struct{}

// withDialect returns ctx carrying d, for DialectOf.
func withDialect(ctx context.Context, d Dialect) context.Context {
	return context.WithValue(ctx, dialectKey{}, d)
}

// DialectOf returns the dialect of the Runner that called Setup, Apply or
// Reset with ctx; SQLite for any other context.
func DialectOf(ctx context.Context) Dialect {
	d, _ := ctx.Value(dialectKey{}).(Dialect)
	return d
}

// schemaStatements are the Runner's own tables in dialect d, one statement
// each. Positions and times are 64-bit integers in both.
func schemaStatements(d Dialect) []string {
	if d == Postgres {
		return []string{
			`CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name     TEXT   PRIMARY KEY,
    position BIGINT NOT NULL
)`,
			`CREATE TABLE IF NOT EXISTS projection_dead_letters (
    projection TEXT   NOT NULL,
    position   BIGINT NOT NULL,
    stream     TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    type       TEXT   NOT NULL,
    error      TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (projection, position)
)`,
			`CREATE TABLE IF NOT EXISTS projection_leases (
    name       TEXT   PRIMARY KEY,
    owner      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
)`,
		}
	}
	return []string{sqliteSchema}
}

// setupLockKey is the transaction-scoped advisory lock under which a
// PostgreSQL Runner creates its tables and runs the projectors' Setup:
// CREATE TABLE IF NOT EXISTS from two sessions at once can fail on
// PostgreSQL's catalog. It is released at commit and leaves no session
// state ("projsetu" in ASCII).
const setupLockKey int64 = 0x70726f6a73657475
