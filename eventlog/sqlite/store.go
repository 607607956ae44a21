// Package sqlite is the default event store: one SQLite file, through the
// pure-Go driver modernc.org/sqlite (no cgo).
//
// Inside a process one writer goroutine owns the only write connection;
// appends queue to it and it commits appends that arrive together in one
// transaction (group commit), each inside its own savepoint so that one
// append's conflict never affects another's. Across processes SQLite's file
// locks serialize writers: every write transaction starts with BEGIN
// IMMEDIATE and waits up to the busy timeout for the lock. Reads use a
// separate pool of read-only connections.
//
// Storage failures: an append whose commit finds the disk full fails with
// eventlog.ErrStorageFull and writes nothing; the next commit after space
// is freed succeeds, without a restart. An append whose commit meets an
// I/O error (a failed write or fsync) fails with
// eventlog.ErrStorageUnavailable, and the writer closes its connection and
// opens a new one before it commits anything else (see writer).
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"iter"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	driver "modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/internal/storekit"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is an eventlog.Store on one SQLite file. Use Open to make one.
type Store struct {
	opts   Options
	path   string
	writer *writer
	read   *sql.DB
	// Statements prepared once; database/sql prepares each on a reader
	// connection the first time that connection runs it.
	readStream, lookupCommand, loadSnapshot, head *sql.Stmt
	// probes[n] reads the versions of n streams, for small n.
	probes [maxPreparedProbe + 1]*sql.Stmt
	// known answers probes of the streams this process wrote.
	known *known

	gate storekit.Gate // calls in progress; Close waits for them
}

var (
	_ eventlog.Store         = (*Store)(nil)
	_ eventlog.VersionProber = (*Store)(nil)
)

// Open opens (creating if needed) the event log at path and brings its
// schema up to date. Two processes may open the same new file at once: the
// migration runs under SQLite's write lock, so exactly one applies it.
//
// Errors: an invalid option or path, a database that cannot be opened, or a
// schema newer than this package knows.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: database path %q must be a plain file path without ? or #", path)
	}
	if path == ":memory:" {
		return nil, errors.New("sqlite: an in-memory database cannot be shared by the writer and readers; use a file")
	}
	wdsn := opts.DSN(path, "immediate")
	wdb, err := openWriteDB(wdsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := migrateRetrying(ctx, wdb, opts.BusyTimeout); err != nil {
		_ = wdb.Close()
		return nil, fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	k := newKnown()
	w, err := newWriter(ctx, wdsn, filepath.Dir(path), wdb, opts.MaxBatch, k, opts.Logger)
	if err != nil {
		_ = wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", opts.DSN(path, "deferred")+"&_query_only=1")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sqlite: open %s: %w", path, err), w.close())
	}
	rdb.SetMaxOpenConns(opts.Readers)
	rdb.SetMaxIdleConns(opts.Readers)
	rdb.SetConnMaxIdleTime(0)
	s := &Store{opts: opts, path: path, writer: w, read: rdb, known: k}
	if err := s.prepare(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("sqlite: open %s: %w", path, err), s.closeStatements(), rdb.Close(), w.close())
	}
	return s, nil
}

// maxPreparedProbe is the largest stream count whose version probe is
// prepared in advance; larger probes are prepared per call.
const maxPreparedProbe = 8

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.readStream, `SELECT position, version, type, data, metadata, recorded_at FROM events
			WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?`},
		{&s.lookupCommand, `SELECT first_position, last_position FROM commands WHERE command_id = ?`},
		{&s.loadSnapshot, `SELECT streams, state FROM snapshots WHERE key = ?`},
		{&s.head, `SELECT COALESCE(MAX(position), 0) FROM events`},
	} {
		var err error
		if *p.stmt, err = s.read.PrepareContext(ctx, p.sql); err != nil {
			return err
		}
	}
	for n := 1; n <= maxPreparedProbe; n++ {
		var err error
		if s.probes[n], err = s.read.PrepareContext(ctx, probeSQL(n)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) closeStatements() error {
	var errs []error
	for _, st := range append([]*sql.Stmt{s.readStream, s.lookupCommand, s.loadSnapshot, s.head}, s.probes[:]...) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// DB returns the read-only connection pool, for tools and tests that query
// the file directly. Its connections refuse writes.
func (s *Store) DB() *sql.DB { return s.read }

// Close waits for calls in progress, stops the writer and closes the
// database. It is idempotent.
func (s *Store) Close() error {
	if !s.gate.Close() {
		return nil
	}
	var werr error
	if s.writer != nil {
		werr = s.writer.close()
	}
	rerr := errors.Join(s.closeStatements(), s.read.Close())
	return errors.Join(werr, rerr)
}

// Append implements eventlog.Store.
func (s *Store) Append(ctx context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	if err := s.gate.Enter(); err != nil {
		return eventlog.AppendResult{}, err
	}
	defer s.gate.Leave()
	if err := req.Validate(); err != nil {
		return eventlog.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventlog.AppendResult{}, err
	}
	if s.writer == nil {
		return eventlog.AppendResult{}, ErrReadOnly
	}
	call, err := prepareAppend(req)
	if err != nil {
		return eventlog.AppendResult{}, err
	}
	res, err := s.writer.submit(ctx, call)
	if err != nil && errors.Is(err, eventlog.ErrConflict) {
		// What this process knew of them was stale, or the caller's was.
		streams := make([]eventlog.StreamID, len(req.Expected))
		for i, e := range req.Expected {
			streams[i] = e.Stream
		}
		s.known.forget(streams)
	}
	return res, err
}

// readPageSize is how many records ReadStream fetches per query.
const readPageSize = 512

// ReadStream implements eventlog.Store.
func (s *Store) ReadStream(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) iter.Seq2[eventlog.Record, error] {
	return storekit.ReadPages(stream, after, readPageSize, func(after eventlog.Version) ([]eventlog.Record, error) {
		return s.readStreamPage(ctx, stream, after)
	})
}

func (s *Store) readStreamPage(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) ([]eventlog.Record, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	rows, err := s.readStream.QueryContext(ctx, stream.String(), int64(after), readPageSize)
	if err != nil {
		return nil, s.readErr("read stream", ctx, err)
	}
	defer func() { _ = rows.Close() }()
	page := make([]eventlog.Record, 0, 16)
	for rows.Next() {
		r := eventlog.Record{Stream: stream}
		if err := scanRecord(rows, &r, false); err != nil {
			return nil, err
		}
		page = append(page, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr("read stream", ctx, err)
	}
	return page, nil
}

// maxParams bounds the bound parameters of one query, well under SQLite's
// limit.
const maxParams = 500

// StreamVersions implements eventlog.Store: it reads the database.
func (s *Store) StreamVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	return s.streamVersions(ctx, streams, false)
}

// ProbeVersions implements eventlog.VersionProber: it answers from the
// versions this process's writer committed while they are trusted (no
// other process's commit seen by the writer's last check, at most a
// second ago; see known), and from the database otherwise. Another
// process's appends since that check are not seen.
func (s *Store) ProbeVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	return s.streamVersions(ctx, streams, true)
}

func (s *Store) streamVersions(ctx context.Context, streams []eventlog.StreamID, fromMemory bool) ([]eventlog.Version, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	for _, st := range streams {
		if st.IsZero() {
			return nil, &eventlog.InvalidError{What: "stream id", Reason: "must not be empty"}
		}
	}
	out := make([]eventlog.Version, len(streams))
	if len(streams) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, s.readErr("stream versions", ctx, err)
	}
	if fromMemory && s.known.lookup(streams, out) {
		return out, nil
	}
	index := make(map[string][]int, len(streams))
	for i, st := range streams {
		index[st.String()] = append(index[st.String()], i)
	}
	ids := make([]string, 0, len(index))
	for id := range index {
		ids = append(ids, id)
	}
	// One statement reads one snapshot; more need a read transaction.
	var q queryer = s.read
	if len(ids) > maxParams {
		tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return nil, s.readErr("stream versions", ctx, err)
		}
		defer func() { _ = tx.Rollback() }()
		q = tx
	}
	for start := 0; start < len(ids); start += maxParams {
		chunk := ids[start:min(start+maxParams, len(ids))]
		if err := s.versionsOf(ctx, q, chunk, func(id string, v eventlog.Version) {
			for _, i := range index[id] {
				out[i] = v
			}
		}); err != nil {
			return nil, s.readErr("stream versions", ctx, err)
		}
	}
	return out, nil
}

// probeSQL reads n streams' versions: one index seek per stream, the ids
// bound as ?1 to ?n.
func probeSQL(n int) string {
	var text strings.Builder
	for i := range n {
		if i > 0 {
			text.WriteString(" UNION ALL ")
		}
		k := strconv.Itoa(i + 1)
		text.WriteString("SELECT ?" + k + ", (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?" + k + ")")
	}
	return text.String()
}

// versionsOf calls found with the current version of each of ids, with one
// index seek per stream.
func (s *Store) versionsOf(ctx context.Context, q queryer, ids []string, found func(string, eventlog.Version)) error {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	var rows *sql.Rows
	var err error
	if _, inTx := q.(*sql.Tx); !inTx && len(ids) <= maxPreparedProbe {
		rows, err = s.probes[len(ids)].QueryContext(ctx, args...)
	} else {
		rows, err = q.QueryContext(ctx, probeSQL(len(ids)), args...)
	}
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var id string
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			return err
		}
		found(id, eventlog.Version(v))
	}
	return rows.Err()
}

// ReadFeed implements eventlog.Store.
func (s *Store) ReadFeed(ctx context.Context, q eventlog.FeedQuery) ([]eventlog.Record, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if err := q.Validate(); err != nil {
		return nil, err
	}
	var sqlText strings.Builder
	sqlText.WriteString(`SELECT position, stream_id, version, type, data, metadata, recorded_at FROM events WHERE position > ?`)
	args := []any{int64(q.After)}
	if len(q.Types) > 0 {
		types := append([]string(nil), q.Types...)
		sort.Strings(types)
		sqlText.WriteString(" AND type IN (")
		for i, t := range types {
			if i > 0 {
				sqlText.WriteByte(',')
			}
			sqlText.WriteByte('?')
			args = append(args, t)
		}
		sqlText.WriteByte(')')
	}
	if q.StreamPrefix != "" {
		// A range on the (stream_id, version) index; no byte of valid
		// UTF-8 is 0xFF, so incrementing the last byte gives the bound.
		upper := []byte(q.StreamPrefix)
		upper[len(upper)-1]++
		sqlText.WriteString(" AND stream_id >= ? AND stream_id < ?")
		args = append(args, q.StreamPrefix, string(upper))
	}
	sqlText.WriteString(" ORDER BY position LIMIT ?")
	args = append(args, q.Limit)
	rows, err := s.read.QueryContext(ctx, sqlText.String(), args...)
	if err != nil {
		return nil, s.readErr("read feed", ctx, err)
	}
	defer func() { _ = rows.Close() }()
	var out []eventlog.Record
	for rows.Next() {
		var r eventlog.Record
		if err := scanRecord(rows, &r, true); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.readErr("read feed", ctx, err)
	}
	return out, nil
}

// LookupCommand implements eventlog.Store.
func (s *Store) LookupCommand(ctx context.Context, commandID string) ([]eventlog.Record, bool, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, false, err
	}
	defer s.gate.Leave()
	if err := eventlog.ValidateCommandID(commandID); err != nil {
		return nil, false, err
	}
	// No transaction: the command row and its events were committed
	// together, and events never change.
	var first, last int64
	err := s.lookupCommand.QueryRowContext(ctx, commandID).Scan(&first, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, s.readErr("lookup command", ctx, err)
	}
	records, err := recordsBetween(ctx, s.read, first, last)
	if err != nil {
		return nil, false, s.readErr("lookup command", ctx, err)
	}
	return records, true, nil
}

// Head implements eventlog.Store.
func (s *Store) Head(ctx context.Context) (eventlog.Position, error) {
	if err := s.gate.Enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	var head int64
	if err := s.head.QueryRowContext(ctx).Scan(&head); err != nil {
		return 0, s.readErr("head", ctx, err)
	}
	return eventlog.Position(head), nil
}

// readErr wraps a read failure, preferring the context's error when the
// context ended.
func (s *Store) readErr(op string, ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("sqlite: %s: %w", op, cerr)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// migrateRetrying runs migrate, retrying for up to busyTimeout while the
// database is busy. The first connection to a new file converts it to WAL
// (the DSN's journal_mode pragma), which upgrades a read transaction to a
// write transaction: when another connection is converting or migrating the
// same file at that moment, SQLite fails with SQLITE_BUSY at once instead of
// waiting for the busy timeout.
func migrateRetrying(ctx context.Context, db *sql.DB, busyTimeout time.Duration) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		err := migrate(ctx, db)
		var serr *driver.Error
		if err == nil || !errors.As(err, &serr) || serr.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// migrationNames are the embedded migrations in order; the schema version
// of an up-to-date database is their number.
func migrationNames() ([]string, error) { return storekit.Migrations(migrationFiles) }

// migrate applies the embedded migrations not yet recorded in
// schema_version, all in one IMMEDIATE transaction.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: _txlock=immediate
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := storekit.Migrate(ctx, migrationTx{tx}, migrationFiles, "schema_version"); err != nil {
		return err
	}
	return tx.Commit()
}

// migrationTx runs migrations in a database/sql transaction.
type migrationTx struct{ tx *sql.Tx }

func (m migrationTx) Exec(ctx context.Context, query string, args ...any) error {
	_, err := m.tx.ExecContext(ctx, query, args...)
	return err
}

func (m migrationTx) QueryInt(ctx context.Context, query string) (int, error) {
	var n int
	err := m.tx.QueryRowContext(ctx, query).Scan(&n)
	return n, err
}
