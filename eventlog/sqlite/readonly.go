package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
)

// ErrReadOnly is returned by Append and SaveSnapshot of a store opened with
// OpenReadOnly.
var ErrReadOnly = errors.New("sqlite: the event log is open read-only")

// OpenReadOnly opens an existing event log at path for reading only, as an
// immutable file: SQLite takes no locks and keeps no journal, so the file
// must not change while the store is open. It is meant for a copy that is
// brought up to date between uses, such as a replica restored by another
// process: close the store, change the file, open it again.
//
// Append and SaveSnapshot fail with ErrReadOnly. Errors: a missing file, a
// file that is not an event log, or a schema newer or older than this
// package's.
func OpenReadOnly(ctx context.Context, path string, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: database path %q must be a file", path)
	}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&immutable=1&_txlock=deferred&_query_only=1"
	rdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(opts.Readers)
	rdb.SetMaxIdleConns(opts.Readers)
	rdb.SetConnMaxIdleTime(0)
	names, err := migrationNames()
	if err != nil {
		return nil, errors.Join(err, rdb.Close())
	}
	var version int
	if err := rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&version); err != nil {
		return nil, errors.Join(fmt.Errorf("sqlite: open %s read-only: %w", path, err), rdb.Close())
	}
	if version != len(names) {
		return nil, errors.Join(fmt.Errorf("sqlite: open %s read-only: schema version %d, this program knows %d", path, version, len(names)), rdb.Close())
	}
	s := &Store{opts: opts, path: path, read: rdb, known: newKnown()}
	if err := s.prepare(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("sqlite: open %s: %w", path, err), s.closeStatements(), rdb.Close())
	}
	return s, nil
}
