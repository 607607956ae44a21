package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the transaction-scoped advisory lock that serializes
// migrations of one database ("eventlog" in ASCII). It is released at
// commit, so it leaves no session state.
const migrationLockKey int64 = 0x6576656e746c6f67

// migrate applies the embedded migrations not yet recorded in
// eventlog_schema, all in one transaction under migrationLockKey, so that
// processes starting at once apply them exactly once: the others wait for
// the lock and then find the schema up to date.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS eventlog_schema (version int NOT NULL)`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM eventlog_schema`).Scan(&current); err != nil {
			return err
		}
		if current > len(names) {
			return fmt.Errorf("database schema version %d is newer than this program knows (%d)", current, len(names))
		}
		for i := current; i < len(names); i++ {
			script, err := migrationFiles.ReadFile(names[i])
			if err != nil {
				return err
			}
			// No arguments: the simple protocol runs a multi-statement script.
			if _, err := tx.Exec(ctx, string(script), pgx.QueryExecModeSimpleProtocol); err != nil {
				return fmt.Errorf("%s: %w", names[i], err)
			}
		}
		if current < len(names) {
			if _, err := tx.Exec(ctx, `DELETE FROM eventlog_schema`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO eventlog_schema (version) VALUES ($1)`, len(names)); err != nil {
				return err
			}
		}
		return nil
	})
}
