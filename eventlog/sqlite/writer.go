package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/internal/storekit"
)

// appendCall is one Append waiting for the writer. Everything that does not
// need the write lock (validation, event ids, metadata encoding) is done by
// the caller before it queues.
type appendCall struct {
	snapshot *eventlog.Snapshot // when set, the call saves it instead of appending
	req      eventlog.AppendRequest
	rows     []pendingRow
	storekit.Handoff[appendOutcome]
}

type pendingRow struct {
	stream   string
	metadata eventlog.Metadata
	encoded  string // metadata as stored
}

type appendOutcome struct {
	result eventlog.AppendResult
	err    error
}

func prepareAppend(req eventlog.AppendRequest) (*appendCall, error) {
	c := &appendCall{req: req, rows: make([]pendingRow, len(req.Events))}
	c.Init()
	for i, ev := range req.Events {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("sqlite: append: event id: %w", err)
		}
		md := ev.Metadata
		md.EventID = id
		md.CommandID = req.CommandID
		enc, err := json.Marshal(md)
		if err != nil {
			return nil, fmt.Errorf("sqlite: append: metadata: %w", err)
		}
		c.rows[i] = pendingRow{stream: ev.Stream.String(), metadata: md, encoded: string(enc)}
	}
	return c, nil
}

// writer owns the one write connection. A single goroutine runs every write
// transaction, so statements need no locking and appends that queue while a
// commit is in progress are committed together by the next one.
//
// A commit that fails because the storage is full fails every append of its
// batch with eventlog.ErrStorageFull (logged once per episode: from the first
// such failure to the next commit that succeeds). A commit that meets an I/O
// error (a failed write or fsync) fails every append of its batch with
// eventlog.ErrStorageUnavailable, and the writer then closes its connection
// and opens a new one instead of trying the same transaction again: after a
// failed fsync the kernel may have dropped the dirty pages, so nothing that
// connection held in memory is trusted (PostgreSQL's "fsyncgate"). Appends
// that arrive before it has reopened fail with ErrStorageUnavailable too.
type writer struct {
	dsn      string // opens the write connection
	dir      string // the database's directory, whose free space tells a full disk
	log      *slog.Logger
	db       *sql.DB
	conn     *sql.Conn
	calls    chan *appendCall
	quit     chan struct{}
	stopped  chan struct{}
	maxBatch int

	version, insert, commandGet, commandPut *sql.Stmt
	begin, commitStmt, dataVersion          *sql.Stmt

	// known learns every commit's versions. dataVersionSeen is the writer
	// connection's PRAGMA data_version (which changes only when another
	// connection wrote the file) as a commit last read it, at
	// dataVersionAt; 0 before the first.
	known           *known
	dataVersionSeen int64
	dataVersionAt   time.Time

	// full is set from a commit that failed for want of space to the next
	// one that succeeds; broken from an I/O error to the reopen.
	full, broken bool
}

// dataVersionEvery is how often, at most, a commit reads PRAGMA
// data_version: every commit would add a statement to the hot path, and
// what a check misses in between costs a retry at most.
const dataVersionEvery = 50 * time.Millisecond

// Reopen delays after an I/O error: the first attempt is immediate, later
// ones back off up to reopenMaxDelay.
const (
	reopenFirstDelay = 10 * time.Millisecond
	reopenMaxDelay   = time.Second
)

// newWriter starts the writer over db, which dsn opened (its one
// connection); dir is the database's directory.
func newWriter(ctx context.Context, dsn, dir string, db *sql.DB, maxBatch int, k *known, log *slog.Logger) (*writer, error) {
	w := &writer{
		dsn: dsn, dir: dir, log: log, db: db, maxBatch: maxBatch, known: k,
		calls:   make(chan *appendCall, maxBatch),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	if err := w.openConn(ctx); err != nil {
		return nil, err
	}
	go w.loop()
	return w, nil
}

// openWriteDB opens the pool of the one write connection.
func openWriteDB(dsn string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// openConn takes w.db's connection and prepares the statements.
func (w *writer) openConn(ctx context.Context) error {
	conn, err := w.db.Conn(ctx)
	if err != nil {
		return err
	}
	w.conn = conn
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commitStmt, `COMMIT`},
		{&w.dataVersion, `PRAGMA data_version`},
		{&w.version, `SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?`},
		{&w.insert, `INSERT INTO events (stream_id, version, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?)`},
		{&w.commandGet, `SELECT first_position, last_position FROM commands WHERE command_id = ?`},
		{&w.commandPut, `INSERT INTO commands (command_id, first_position, last_position) VALUES (?, ?, ?)`},
	} {
		if *p.stmt, err = conn.PrepareContext(ctx, p.sql); err != nil {
			_ = w.closeConn()
			return err
		}
	}
	return nil
}

// closeConn closes the statements, the connection and its pool.
func (w *writer) closeConn() error {
	var errs []error
	for _, st := range []**sql.Stmt{&w.begin, &w.commitStmt, &w.dataVersion, &w.version, &w.insert, &w.commandGet, &w.commandPut} {
		if *st != nil {
			errs = append(errs, (*st).Close())
			*st = nil
		}
	}
	if w.conn != nil {
		errs = append(errs, w.conn.Close())
		w.conn = nil
	}
	if w.db != nil {
		errs = append(errs, w.db.Close())
		w.db = nil
	}
	return errors.Join(errs...)
}

// reopen replaces the write connection after an I/O error, retrying with
// backoff until it succeeds or the writer stops; meanwhile it answers
// every call with ErrStorageUnavailable. What this process knew of stream
// versions is forgotten: the failed transaction's outcome is unknown.
func (w *writer) reopen() {
	w.known.forgetAll()
	w.dataVersionSeen, w.dataVersionAt = 0, time.Time{}
	delay := time.Duration(0)
	for attempt := 1; ; attempt++ {
		_ = w.closeConn() // errors of a connection given up are expected
		db, err := openWriteDB(w.dsn)
		if err == nil {
			w.db = db
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err = w.openConn(ctx)
			if err == nil {
				// Something that reads the file through the new connection.
				err = w.dataVersion.QueryRowContext(ctx).Scan(&w.dataVersionSeen)
			}
			cancel()
		}
		if err == nil {
			w.broken = false
			w.dataVersionAt = time.Now()
			w.log.Info("event log reopened after a storage error", "attempts", attempt)
			return
		}
		w.log.Warn("event log could not be reopened", "attempt", attempt, "error", err.Error())
		delay = min(max(2*delay, reopenFirstDelay), reopenMaxDelay)
		timer := time.NewTimer(delay)
	wait:
		for {
			select {
			case c := <-w.calls:
				if c.Take() {
					c.Deliver(appendOutcome{err: errReopening})
				}
			case <-timer.C:
				break wait
			case <-w.quit:
				timer.Stop()
				return
			}
		}
	}
}

var errReopening = fmt.Errorf("sqlite: append: %w: reopening the database after an I/O error; nothing was written", eventlog.ErrStorageUnavailable)

// submit queues c and waits for its outcome. If ctx ends before the writer
// takes the call, the call is withdrawn and ctx's error returned: nothing
// was written. Once taken, the call runs to completion and its outcome is
// returned, whatever ctx does.
func (w *writer) submit(ctx context.Context, c *appendCall) (eventlog.AppendResult, error) {
	select {
	case w.calls <- c:
	case <-ctx.Done():
		return eventlog.AppendResult{}, ctx.Err()
	}
	out, err := c.Await(ctx)
	if err != nil {
		return eventlog.AppendResult{}, err
	}
	return out.result, out.err
}

func (w *writer) loop() {
	defer close(w.stopped)
	batch := make([]*appendCall, 0, w.maxBatch)
	for {
		batch = batch[:0]
		select {
		case c := <-w.calls:
			batch = w.take(batch, c)
		case <-w.quit:
			return
		}
	drain:
		for len(batch) < w.maxBatch {
			select {
			case c := <-w.calls:
				batch = w.take(batch, c)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			w.commit(batch)
		}
		if w.broken {
			w.reopen()
		}
	}
}

func (w *writer) take(batch []*appendCall, c *appendCall) []*appendCall {
	if c.Take() {
		return append(batch, c)
	}
	return batch
}

// commit runs batch in one transaction and delivers every outcome. With more
// than one append, each runs inside its own savepoint so that a conflict
// rolls back only that append. A database failure other than a conflict,
// after the transaction began, rolls back the whole transaction and the
// appends are run again one by one, so that one append's failure never
// fails another. A failure to begin (another process held the lock past
// the busy timeout) is every append's answer at once: running them one by
// one would only wait the timeout again for each. So is a failure of the
// storage (a full disk, an I/O error): no append of the batch is
// acknowledged, and none is tried again on this connection.
func (w *writer) commit(batch []*appendCall) {
	outcomes, began, err := w.commitTx(batch)
	if err != nil {
		if serr := w.storageError(err, batch); serr != nil {
			for _, c := range batch {
				c.Deliver(appendOutcome{err: serr})
			}
			return
		}
	}
	if err != nil && began && len(batch) > 1 {
		for _, c := range batch {
			w.commit([]*appendCall{c})
		}
		return
	}
	if err == nil && w.full {
		w.full = false
		w.log.Info("event log storage has space again: appends are committed")
	}
	for i, c := range batch {
		if err != nil {
			c.Deliver(appendOutcome{err: fmt.Errorf("sqlite: append: %w", err)})
			continue
		}
		c.Deliver(outcomes[i])
	}
}

// storageError returns the error of every append of a batch whose commit
// failed with err when err is a failure of the storage (SQLITE_FULL,
// SQLITE_IOERR), and nil otherwise. An I/O error marks the connection
// broken; on a filesystem without space, one that is not a failed fsync
// counts as a full disk (a write that failed with ENOSPC may surface as
// an I/O error).
func (w *writer) storageError(err error, batch []*appendCall) error {
	var coded interface{ Code() int }
	if !errors.As(err, &coded) {
		return nil
	}
	code := coded.Code()
	switch code & 0xff {
	case sqlite3.SQLITE_FULL:
		return w.fullError(err)
	case sqlite3.SQLITE_IOERR:
		w.broken = true
		if code != sqlite3.SQLITE_IOERR_FSYNC && code != sqlite3.SQLITE_IOERR_DIR_FSYNC && lowOnSpace(w.dir) {
			return w.fullError(err)
		}
		// The commands whose outcome is now unknown, by command id (the
		// Idempotency-Key), for whoever must retry them.
		var commands []string
		for _, c := range batch {
			if c.req.CommandID != "" {
				commands = append(commands, c.req.CommandID)
			}
		}
		w.log.Error("event log storage failed: the batch is not acknowledged and the database is reopened",
			"error", err.Error(), "appends", len(batch), "commands", commands)
		return fmt.Errorf("sqlite: append: %w: %w", eventlog.ErrStorageUnavailable, err)
	}
	return nil
}

func (w *writer) fullError(err error) error {
	if !w.full {
		w.full = true
		w.log.Warn("event log storage is full: appends are refused until space is freed", "dir", w.dir, "error", err.Error())
	}
	return fmt.Errorf("sqlite: append: %w: %w", eventlog.ErrStorageFull, err)
}

// commitTx returns each call's outcome, or an error when the transaction as
// a whole failed and nothing was written; began says whether the
// transaction had begun.
func (w *writer) commitTx(batch []*appendCall) (outcomes []appendOutcome, began bool, err error) {
	ctx := context.Background()
	if _, err := w.begin.ExecContext(ctx); err != nil {
		return nil, false, err
	}
	var dataVersion int64
	check := time.Since(w.dataVersionAt) >= dataVersionEvery
	if check {
		if err := w.dataVersion.QueryRowContext(ctx).Scan(&dataVersion); err != nil {
			w.rollback()
			return nil, true, err
		}
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	outcomes = make([]appendOutcome, len(batch))
	grouped := len(batch) > 1
	for i, c := range batch {
		if grouped {
			if _, err := w.conn.ExecContext(ctx, "SAVEPOINT append_call"); err != nil {
				w.rollback()
				return nil, true, err
			}
		}
		var res eventlog.AppendResult
		var err error
		if c.snapshot != nil {
			err = w.saveSnapshot(ctx, c.snapshot, now.UnixMicro())
		} else {
			res, err = w.apply(ctx, c, now)
		}
		var conflict *eventlog.ConflictError
		var invalid *eventlog.InvalidError
		switch {
		case errors.As(err, &conflict), errors.As(err, &invalid):
			outcomes[i] = appendOutcome{err: err}
			if grouped {
				if _, err := w.conn.ExecContext(ctx, "ROLLBACK TO append_call"); err != nil {
					w.rollback()
					return nil, true, err
				}
				if _, err := w.conn.ExecContext(ctx, "RELEASE append_call"); err != nil {
					w.rollback()
					return nil, true, err
				}
			}
		case err != nil:
			w.rollback()
			return nil, true, err
		default:
			outcomes[i] = appendOutcome{result: res}
			if grouped {
				if _, err := w.conn.ExecContext(ctx, "RELEASE append_call"); err != nil {
					w.rollback()
					return nil, true, err
				}
			}
		}
	}
	// Readers see the commit before known records it: until then the
	// batch's streams are answered from the database, never below a
	// version a reader already saw.
	w.known.committing(outcomes)
	if _, err := w.commitStmt.ExecContext(ctx); err != nil {
		w.rollback()
		return nil, true, err
	}
	if !check {
		w.known.committed(outcomes, false, false)
		return outcomes, true, nil
	}
	w.known.committed(outcomes, w.dataVersionSeen != 0 && dataVersion != w.dataVersionSeen, true)
	w.dataVersionSeen, w.dataVersionAt = dataVersion, time.Now()
	return outcomes, true, nil
}

func (w *writer) rollback() {
	// Fails harmlessly when SQLite already rolled the transaction back.
	_, _ = w.conn.ExecContext(context.Background(), "ROLLBACK")
}

// apply runs one append inside the open transaction.
func (w *writer) apply(ctx context.Context, c *appendCall, now time.Time) (eventlog.AppendResult, error) {
	req := c.req
	if req.CommandID != "" {
		var first, last int64
		err := w.commandGet.QueryRowContext(ctx, req.CommandID).Scan(&first, &last)
		switch {
		case err == nil:
			records, err := recordsBetween(ctx, w.conn, first, last)
			if err != nil {
				return eventlog.AppendResult{}, err
			}
			return eventlog.AppendResult{Records: records, Duplicate: true}, nil
		case !errors.Is(err, sql.ErrNoRows):
			return eventlog.AppendResult{}, err
		}
	}
	next := make(map[string]eventlog.Version, len(req.Expected))
	var conflicts []eventlog.StreamConflict
	for _, e := range req.Expected {
		var v int64
		if err := w.version.QueryRowContext(ctx, e.Stream.String()).Scan(&v); err != nil {
			return eventlog.AppendResult{}, err
		}
		if eventlog.Version(v) != e.Version {
			conflicts = append(conflicts, eventlog.StreamConflict{Stream: e.Stream, Expected: e.Version, Actual: eventlog.Version(v)})
		}
		next[e.Stream.String()] = eventlog.Version(v)
	}
	if len(conflicts) > 0 && !skipVersionCheck {
		return eventlog.AppendResult{}, &eventlog.ConflictError{Conflicts: conflicts}
	}
	recordedAt := now.UnixMicro()
	records := make([]eventlog.Record, len(req.Events))
	for i, ev := range req.Events {
		row := c.rows[i]
		v := next[row.stream] + 1
		next[row.stream] = v
		res, err := w.insert.ExecContext(ctx, row.stream, int64(v), ev.Type, string(ev.Data), row.encoded, recordedAt)
		if err != nil {
			return eventlog.AppendResult{}, err
		}
		pos, err := res.LastInsertId()
		if err != nil {
			return eventlog.AppendResult{}, err
		}
		records[i] = eventlog.Record{
			Position: eventlog.Position(pos), Stream: ev.Stream, Version: v,
			Type: ev.Type, Data: ev.Data, Metadata: row.metadata, RecordedAt: now,
		}
	}
	if req.CommandID != "" {
		first, last := records[0].Position, records[len(records)-1].Position
		if _, err := w.commandPut.ExecContext(ctx, req.CommandID, int64(first), int64(last)); err != nil {
			return eventlog.AppendResult{}, err
		}
	}
	return eventlog.AppendResult{Records: records}, nil
}

// queryer is what recordsBetween needs of a connection or transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// recordsBetween reads the records at positions first to last.
func recordsBetween(ctx context.Context, q queryer, first, last int64) ([]eventlog.Record, error) {
	rows, err := q.QueryContext(ctx, `SELECT position, stream_id, version, type, data, metadata, recorded_at
		FROM events WHERE position BETWEEN ? AND ? ORDER BY position`, first, last)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := make([]eventlog.Record, 0, last-first+1)
	for rows.Next() {
		var r eventlog.Record
		if err := scanRecord(rows, &r, true); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// close stops the loop after the calls already queued and closes the
// connection. Only Store.Close calls it, after every Append has returned.
func (w *writer) close() error {
	close(w.quit)
	<-w.stopped
	return w.closeConn()
}

// scanRecord reads the columns position, [stream_id,] version, type, data,
// metadata, recorded_at.
func scanRecord(rows *sql.Rows, r *eventlog.Record, withStream bool) error {
	var (
		pos, version, recordedAt int64
		stream                   string
		data, metadata           []byte
		err                      error
	)
	if withStream {
		err = rows.Scan(&pos, &stream, &version, &r.Type, &data, &metadata, &recordedAt)
	} else {
		err = rows.Scan(&pos, &version, &r.Type, &data, &metadata, &recordedAt)
	}
	if err != nil {
		return fmt.Errorf("sqlite: scan event: %w", err)
	}
	if withStream {
		if r.Stream, err = eventlog.NewStreamID(stream); err != nil {
			return fmt.Errorf("sqlite: event at position %d: %w", pos, err)
		}
	}
	r.Position = eventlog.Position(pos)
	r.Version = eventlog.Version(version)
	r.Data = data
	if err := json.Unmarshal(metadata, &r.Metadata); err != nil {
		return fmt.Errorf("sqlite: event at position %d: metadata: %w", pos, err)
	}
	r.RecordedAt = time.UnixMicro(recordedAt).UTC()
	return nil
}
