package storekit

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
)

// Migrations are the *.sql files of fsys's migrations directory, in name
// order; the schema version of an up-to-date database is their number.
func Migrations(fsys fs.FS) ([]string, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	sort.Strings(names)
	return names, err
}

// MigrationTx is the transaction a store's migrations run in: Exec runs a
// script or a statement ($1 for its argument), QueryInt a query of one
// integer.
type MigrationTx interface {
	Exec(ctx context.Context, query string, args ...any) error
	QueryInt(ctx context.Context, query string) (int, error)
}

// Migrate applies, in tx, the migrations of fsys not yet recorded in the
// one-row table versionTable (created if missing), and records the new
// version. A database newer than the migrations is an error. The caller
// commits tx, and makes it exclusive among processes that start at once.
func Migrate(ctx context.Context, tx MigrationTx, fsys fs.FS, versionTable string) error {
	names, err := Migrations(fsys)
	if err != nil {
		return err
	}
	if err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+versionTable+` (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	current, err := tx.QueryInt(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+versionTable)
	if err != nil {
		return err
	}
	if current > len(names) {
		return fmt.Errorf("database schema version %d is newer than this program knows (%d)", current, len(names))
	}
	if current == len(names) {
		return nil
	}
	for _, name := range names[current:] {
		script, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		if err := tx.Exec(ctx, string(script)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := tx.Exec(ctx, `DELETE FROM `+versionTable); err != nil {
		return err
	}
	return tx.Exec(ctx, `INSERT INTO `+versionTable+` (version) VALUES ($1)`, len(names))
}
