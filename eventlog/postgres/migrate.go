package postgres

import (
	"context"
	"embed"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcore-go/eventcore/eventlog/internal/storekit"
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
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return err
		}
		return storekit.Migrate(ctx, migrationTx{tx}, migrationFiles, "eventlog_schema")
	})
}

// migrationTx runs migrations in a pgx transaction; a script (no
// arguments) goes through the simple protocol, which runs several
// statements.
type migrationTx struct{ tx pgx.Tx }

func (m migrationTx) Exec(ctx context.Context, query string, args ...any) error {
	if len(args) == 0 {
		args = []any{pgx.QueryExecModeSimpleProtocol}
	}
	_, err := m.tx.Exec(ctx, query, args...)
	return err
}

func (m migrationTx) QueryInt(ctx context.Context, query string) (int, error) {
	var n int
	err := m.tx.QueryRow(ctx, query).Scan(&n)
	return n, err
}
