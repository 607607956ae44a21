package projection

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Defaults of Options.
const (
	DefaultBatchSize    = 4000
	DefaultLeaseTTL     = 30 * time.Second
	DefaultPollInterval = 20 * time.Millisecond
)

// MaxNameLength is the longest projection name, in bytes.
const MaxNameLength = 64

// Retry limits: a FailurePolicy's Retries and Backoff of 0 take these
// defaults, and no wait between tries is longer than maxBackoff.
const (
	defaultRetries = 3
	defaultBackoff = 50 * time.Millisecond
	maxBackoff     = 10 * time.Second
)

// releaseTimeout bounds the transaction that gives a lease back after a
// run, which runs even when the run's context has ended.
const releaseTimeout = 5 * time.Second

// Options configure a Runner. The zero value is the default.
type Options struct {
	// BatchSize is the most events applied in one transaction, 1 to
	// eventlog.MaxFeedLimit; 0 means DefaultBatchSize.
	BatchSize int
	// LeaseTTL is how long a lease stays valid after it was last taken or
	// renewed; each batch renews it. A runner that dies holding a lease
	// blocks its projections for up to this long. 0 means DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Owner identifies this runner in the lease table. It must differ
	// between runners that may run at the same time; "" means
	// "HOST/PID@START/UUID", new for each Runner, whose lease another
	// runner of the same machine takes over at once when that process no
	// longer runs (see owner.go); the lease of any other owner waits for
	// LeaseTTL.
	Owner string
	// Logger receives a debug line per batch and warnings for retries,
	// dead letters and leases lost; nil discards them.
	Logger *slog.Logger
	// PollInterval is how often WaitFor looks again at the log and the
	// checkpoint when nothing in this Runner can wake it: while the log
	// has not reached the position waited for (another process appends
	// it) or another Runner holds the projection's lease. 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// Dialect is the read-model database's SQL dialect: SQLite (the zero
	// value) or Postgres.
	Dialect Dialect
}

// StoppedError is the error of a run that stopped at a failing event,
// under the Stop strategy or after Retry ran out of tries. It wraps both
// ErrProjectionStopped and the error Apply returned.
type StoppedError struct {
	Projection string
	Position   eventlog.Position
	Stream     eventlog.StreamID
	Type       string
	Tries      int   // how many times Apply ran on the event
	Err        error // Apply's last error
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("projection %q: stopped at position %d (type %q, stream %q) after %d tries: %v",
		e.Projection, e.Position, e.Type, e.Stream, e.Tries, e.Err)
}

// Unwrap returns ErrProjectionStopped and the event's error.
func (e *StoppedError) Unwrap() []error { return []error{ErrProjectionStopped, e.Err} }

// Runner applies the event feed to projectors. Make one with NewRunner.
//
// Every projector's checkpoint, dead letters and lease live in the
// read-model database beside its tables:
//
//	projection_checkpoints (name TEXT PRIMARY KEY, position INTEGER)
//	projection_dead_letters (projection, position, stream, version, type, error, at)  -- at: Unix µs
//	projection_leases (name TEXT PRIMARY KEY, owner TEXT, expires_at INTEGER)          -- expires_at: Unix ms
//
// Concurrency: a Runner is safe for concurrent use. Calls on one projection
// from goroutines of one Runner run one after another (a later call waits
// for the earlier one, or for its ctx to end); calls on different
// projections run side by side, serialized only by the database's write
// lock. Across Runners and processes, a lease row keeps a projection to one
// Runner at a time; the other gets ErrLocked. Lease expiry compares the
// wall clocks of the processes sharing the database, which should agree to
// well within LeaseTTL. Exactly-once application does not rest on the lease:
// every batch re-reads the checkpoint under the database's write lock
// (SQLite), or after renewing the lease, whose row stays locked until the
// batch commits (PostgreSQL, where batches of different projections run
// at once).
type Runner struct {
	db       *sql.DB
	store    eventlog.Store
	batch    int
	leaseTTL time.Duration
	owner    string
	log      *slog.Logger
	poll     time.Duration
	dialect  Dialect
	// checkpointAt reads a projection's checkpoint; on SQLite a statement
	// prepared once (every read of the read API asks for its as_of), on
	// PostgreSQL the pool, which never pins a prepared statement.
	checkpointAt queryRower
	names        []string
	entries      map[string]*entry
	// writing holds a token while a write transaction of this Runner is
	// open: they take turns here rather than in SQLite's busy handler,
	// which sleeps.
	writing chan struct{}
}

// writeTx is a write transaction that gives the Runner's write turn back
// when it ends.
type writeTx struct {
	*sql.Tx
	done func()
}

func (t *writeTx) Commit() error {
	defer t.done()
	return t.Tx.Commit()
}

func (t *writeTx) Rollback() error {
	defer t.done()
	return t.Tx.Rollback()
}

// beginWrite waits for the Runner's write turn (or ctx's end) and begins
// a write transaction.
func (r *Runner) beginWrite(ctx context.Context) (*writeTx, error) {
	select {
	case r.writing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		<-r.writing
		return nil, err
	}
	var once sync.Once
	return &writeTx{Tx: tx, done: func() { once.Do(func() { <-r.writing }) }}, nil
}

// entry is one projector, the in-process lock of its name and the
// channel that tells waiters its checkpoint may have moved.
type entry struct {
	name string
	p    Projector
	sem  chan struct{} // holds a token while a call works on the projection

	mu      sync.Mutex
	changed chan struct{}     // closed (and replaced) by signal
	wanted  eventlog.Position // the furthest position a WaitFor waits for; 0 when none waits
	waiters int
}

// wait registers a WaitFor caller waiting for pos; the function it returns
// unregisters it.
func (e *entry) wait(pos eventlog.Position) func() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.waiters++
	e.wanted = max(e.wanted, pos)
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.waiters--; e.waiters == 0 {
			e.wanted = 0
		}
	}
}

// want is the furthest position a WaitFor caller waits for, 0 if none.
func (e *entry) want() eventlog.Position {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.wanted
}

func (e *entry) lock(ctx context.Context) error {
	select {
	case e.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *entry) unlock() {
	<-e.sem
	e.signal()
}

// busy reports whether a call of this Runner works on the projection.
func (e *entry) busy() bool { return len(e.sem) > 0 }

// watch returns a channel that signal closes.
func (e *entry) watch() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// signal wakes the waiters: a batch was committed, or a call that worked
// on the projection returned.
func (e *entry) signal() {
	e.mu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

const sqliteSchema = `
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name     TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_dead_letters (
    projection TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    stream     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (projection, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS projection_leases (
    name       TEXT    PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
`

// NewRunner returns a Runner applying store's feed to projectors, whose
// read models, checkpoints, dead letters and leases live in db.
//
// With opts.Dialect SQLite (the default), db is an SQLite database opened
// by the caller, for modernc.org/sqlite with a DSN that makes BeginTx issue
// BEGIN IMMEDIATE (_txlock=immediate, as eventlog/sqlite's
// Options.DSN(path, "immediate") builds) and a busy timeout: every write
// transaction of the Runner then takes SQLite's write lock when it begins
// and waits for it, instead of failing with SQLITE_BUSY when it first
// writes. With Postgres, db is a PostgreSQL database opened through pgx's
// database/sql driver (eventlog/postgres.OpenDB), at the default isolation
// (read committed); the tables are created under a transaction-scoped
// advisory lock, so processes may start at once. The Runner never closes
// db or store.
//
// NewRunner checks the options and the projector names (1 to
// MaxNameLength of [a-z0-9_-], unique) and the event types of projectors
// that are TypeFilters, then, in one transaction, creates its tables if
// they do not exist and runs every projector's Setup. Zero projectors are
// allowed. Errors: an invalid option, name or type; a Setup error or a
// database error of that transaction, after which nothing was created; a
// database error preparing the checkpoint read (SQLite), after the tables
// were created. On SQLite the Runner keeps that one statement prepared on
// db until Close.
func NewRunner(ctx context.Context, db *sql.DB, store eventlog.Store, opts Options, projectors ...Projector) (*Runner, error) {
	if db == nil || store == nil {
		return nil, errors.New("projection: NewRunner needs a database and a store")
	}
	switch {
	case opts.BatchSize == 0:
		opts.BatchSize = DefaultBatchSize
	case opts.BatchSize < 0 || opts.BatchSize > eventlog.MaxFeedLimit:
		return nil, fmt.Errorf("projection: batch size %d is not between 1 and %d", opts.BatchSize, eventlog.MaxFeedLimit)
	}
	switch {
	case opts.LeaseTTL == 0:
		opts.LeaseTTL = DefaultLeaseTTL
	case opts.LeaseTTL < time.Millisecond:
		return nil, fmt.Errorf("projection: lease TTL %v is shorter than a millisecond", opts.LeaseTTL)
	}
	switch {
	case opts.PollInterval == 0:
		opts.PollInterval = DefaultPollInterval
	case opts.PollInterval < 0:
		return nil, fmt.Errorf("projection: poll interval %v is negative", opts.PollInterval)
	}
	if opts.Dialect != SQLite && opts.Dialect != Postgres {
		return nil, fmt.Errorf("projection: unknown dialect %v", opts.Dialect)
	}
	if opts.Owner == "" {
		opts.Owner = defaultOwner()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{
		db: db, store: store, batch: opts.BatchSize, leaseTTL: opts.LeaseTTL,
		owner: opts.Owner, log: opts.Logger, poll: opts.PollInterval, dialect: opts.Dialect, writing: make(chan struct{}, 1), entries: make(map[string]*entry, len(projectors)),
	}
	for i, p := range projectors {
		if p == nil {
			return nil, fmt.Errorf("projection: projector %d is nil", i)
		}
		name := p.Name()
		if err := ValidateName(name); err != nil {
			return nil, err
		}
		if _, dup := r.entries[name]; dup {
			return nil, fmt.Errorf("projection: two projectors are named %q", name)
		}
		for _, t := range eventTypes(p) {
			if err := eventlog.ValidateEventType(t); err != nil {
				return nil, fmt.Errorf("projection %q: %w", name, err)
			}
		}
		r.names = append(r.names, name)
		r.entries[name] = &entry{name: name, p: p, sem: make(chan struct{}, 1), changed: make(chan struct{})}
	}
	if err := r.setup(ctx, projectors); err != nil {
		return nil, err
	}
	r.checkpointAt = db
	if r.dialect == SQLite {
		stmt, err := db.PrepareContext(ctx, checkpointQuery)
		if err != nil {
			return nil, fmt.Errorf("projection: prepare the checkpoint read: %w", err)
		}
		r.checkpointAt = stmtRower{stmt}
	}
	return r, nil
}

// Close releases what the Runner prepared on its database (on SQLite, the
// statement that reads checkpoints); it closes neither the database nor
// the store. Call it when the Runner is replaced or no longer used, after
// the calls in flight have returned: a Checkpoint after Close fails. It
// is idempotent, and a no-op on PostgreSQL.
func (r *Runner) Close() error {
	if s, ok := r.checkpointAt.(stmtRower); ok {
		return s.stmt.Close()
	}
	return nil
}

// stmtRower is a prepared statement used as a queryRower: the query it
// was prepared with, whatever query it is given.
type stmtRower struct{ stmt *sql.Stmt }

func (s stmtRower) QueryRowContext(ctx context.Context, _ string, args ...any) *sql.Row {
	return s.stmt.QueryRowContext(ctx, args...)
}

func (r *Runner) setup(ctx context.Context, projectors []Projector) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projection: setup: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if r.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, setupLockKey); err != nil {
			return fmt.Errorf("projection: setup lock: %w", err)
		}
	}
	for _, q := range schemaStatements(r.dialect) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("projection: create tables: %w", err)
		}
	}
	ctx = withDialect(ctx, r.dialect)
	for _, p := range projectors {
		if err := p.Setup(ctx, tx); err != nil {
			return fmt.Errorf("projection %q: setup: %w", p.Name(), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projection: setup: %w", err)
	}
	return nil
}

// ValidateName checks a projection name: 1 to MaxNameLength bytes of
// [a-z0-9_-].
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return fmt.Errorf("projection: name %q is not 1 to %d characters", name, MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return fmt.Errorf("projection: name %q has %q; only a-z, 0-9, _ and - are allowed", name, c)
		}
	}
	return nil
}

// Names returns the projection names in the order the projectors were
// given.
func (r *Runner) Names() []string { return slices.Clone(r.names) }

// DB returns the read-model database.
func (r *Runner) DB() *sql.DB { return r.db }

// Owner returns the owner id this Runner writes in the lease table.
func (r *Runner) Owner() string { return r.owner }

func (r *Runner) entry(name string) (*entry, error) {
	e, ok := r.entries[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProjection, name)
	}
	return e, nil
}

// Checkpoint returns the position of the last event the projection has
// taken into account (applied, skipped or, with a TypeFilter, passed over),
// 0 before its first batch. Errors: ErrUnknownProjection; a database error.
func (r *Runner) Checkpoint(ctx context.Context, name string) (eventlog.Position, error) {
	if _, err := r.entry(name); err != nil {
		return 0, err
	}
	cp, err := readCheckpoint(ctx, r.checkpointAt, name)
	if err != nil {
		return 0, fmt.Errorf("projection %q: read checkpoint: %w", name, err)
	}
	return cp, nil
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const checkpointQuery = `SELECT position FROM projection_checkpoints WHERE name = $1`

func readCheckpoint(ctx context.Context, q queryRower, name string) (eventlog.Position, error) {
	var pos int64
	err := q.QueryRowContext(ctx, checkpointQuery, name).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return eventlog.Position(pos), err
}

// CatchUp applies the events after the projection's checkpoint, batch by
// batch, until the checkpoint reaches until (0 means the log's head read
// when the call began) or the log has no more events; it never moves the
// checkpoint past until. With until 0, a call that reached its target
// while callers of WaitFor wait for later positions goes on to the head as
// it is then (taking the lease again). The Report's Head is the head read
// when the call began, its Checkpoint the checkpoint when it returned.
//
// The call first takes the projection's lease; when another Runner holds it
// (not expired) CatchUp returns an error wrapping ErrLocked at once, and it
// also returns one, after the batches already committed, when another
// Runner took over the lease while this one worked. When the checkpoint is
// already at the target, CatchUp returns at once without the lease. The
// lease is given back when the call returns. Calls of one Runner on one
// projection wait for each other instead (with ctx): a call that waited
// usually finds the work done.
//
// Each batch is one transaction: it renews the lease (or, for a catch-up
// that fits in one batch, takes it), re-reads the checkpoint, applies up
// to BatchSize events after it (only the projector's types when it is a
// TypeFilter; read before the transaction began, and again if the
// checkpoint moved meanwhile) all at once, with ApplyBatch for a
// BatchProjector, and writes the new checkpoint. When that fails, the
// batch's changes are rolled back and its events applied one at a time,
// each in a savepoint. An event whose Apply fails there has its changes
// rolled back and meets the projector's FailurePolicy: Retry tries it
// again, waiting Backoff and then twice as long each time (the batch's
// transaction stays open meanwhile); Skip records a dead letter and goes
// on; Stop, or Retry out of tries, commits the batch up to the event
// before and returns a *StoppedError (wrapping ErrProjectionStopped and
// Apply's error). When a filtered batch comes back short, the checkpoint
// moves up to the head read before the feed, so that the lag reaches 0
// even when the last events are of other types.
//
// Context: a batch is committed whole or not at all, so when ctx ends
// during a batch that batch is rolled back. When ctx ends before the
// target is reached, CatchUp returns the report of the batches committed
// and a nil error if at least one batch was committed during the call (a
// deadline is a normal end: the next call goes on from the checkpoint);
// otherwise it returns an error wrapping ctx.Err(). Callers running under
// a deadline (a Lambda) should choose BatchSize so that a batch fits well
// within it.
//
// A panic in Apply propagates to the caller after the batch has been
// rolled back and the lease given back.
//
// Errors: ErrUnknownProjection; ErrLocked; *StoppedError; a context error
// as said above; a store or database error, with the batches before it
// committed.
func (r *Runner) CatchUp(ctx context.Context, name string, until eventlog.Position) (Report, error) {
	rep, _, err := r.catchUp(ctx, name, until, nil)
	return rep, err
}

// WaitFor returns once the projection's checkpoint has reached pos: the
// read model then reflects every event up to pos (read your writes). It
// never polls what this Runner does itself: a waiter wakes when a batch of
// any call of this Runner on the projection commits, or when such a call
// returns. While no call of this Runner works on the projection, WaitFor
// catches it up itself (CatchUp to the head), so that one catch-up serves
// every waiter whose events are in the log; while the log has not reached
// pos (another process appends it) or another Runner holds the lease, it
// looks again every PollInterval.
//
// The Report sums what WaitFor's own catch-ups applied and skipped; its
// Checkpoint is the last one read (at least pos on success), its Head the
// last head read (0 if none was needed).
//
// Errors: ErrUnknownProjection; an error wrapping ctx.Err() when ctx ends
// first; a catch-up's error other than ErrLocked (a *StoppedError, a store
// or database error). It is safe for concurrent use, by any number of
// waiters.
func (r *Runner) WaitFor(ctx context.Context, name string, pos eventlog.Position) (Report, error) {
	rep := Report{Name: name}
	e, err := r.entry(name)
	if err != nil {
		return rep, err
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	defer e.wait(pos)()
	for {
		changed := e.watch() // before the read: a batch after it closes it
		cp, err := readCheckpoint(ctx, r.db, name)
		if err != nil {
			return rep, waitError(ctx, name, pos, fmt.Errorf("projection %q: read checkpoint: %w", name, err))
		}
		rep.Checkpoint = cp
		if cp >= pos {
			return rep, nil
		}
		if !e.busy() {
			head, err := r.store.Head(ctx)
			if err != nil {
				return rep, waitError(ctx, name, pos, fmt.Errorf("projection %q: read head: %w", name, err))
			}
			rep.Head = head
			if head > cp {
				c, err := r.CatchUp(ctx, name, 0)
				rep.Applied += c.Applied
				rep.Skipped += c.Skipped
				switch {
				case err == nil:
					continue
				case !errors.Is(err, ErrLocked):
					return rep, waitError(ctx, name, pos, err)
				}
			}
		}
		if timer == nil {
			timer = time.NewTimer(r.poll)
		} else {
			timer.Reset(r.poll)
		}
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return rep, fmt.Errorf("projection %q: waiting for position %d: %w", name, pos, ctx.Err())
		}
	}
}

// waitError is WaitFor's error: ctx's when it ended, err otherwise.
func waitError(ctx context.Context, name string, pos eventlog.Position, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("projection %q: waiting for position %d: %w", name, pos, ctx.Err())
	}
	return err
}

// catchUp is CatchUp, also saying whether a batch was committed. share,
// when not nil, is the feed's pages shared with other projections.
func (r *Runner) catchUp(ctx context.Context, name string, until eventlog.Position, share *feedShare) (rep Report, progressed bool, err error) {
	rep.Name = name
	e, err := r.entry(name)
	if err != nil {
		return rep, false, err
	}
	head, err := r.store.Head(ctx)
	if err != nil {
		return rep, false, fmt.Errorf("projection %q: read head: %w", name, err)
	}
	rep.Head = head
	target := until
	if target == 0 {
		target = head
	}
	if rep.Checkpoint, err = readCheckpoint(ctx, r.db, name); err != nil {
		return rep, false, fmt.Errorf("projection %q: read checkpoint: %w", name, err)
	}
	if rep.Checkpoint >= target {
		return rep, false, nil
	}
	if err := e.lock(ctx); err != nil {
		return rep, false, fmt.Errorf("projection %q: %w", name, err)
	}
	defer e.unlock()
	// Another call of this Runner may have done the work meanwhile.
	if rep.Checkpoint, err = readCheckpoint(ctx, r.db, name); err != nil {
		return rep, false, fmt.Errorf("projection %q: read checkpoint: %w", name, err)
	}
	if rep.Checkpoint >= target {
		return rep, false, nil
	}
	// A short catch-up takes the lease in its one batch's transaction, so
	// that it is one commit. A longer one takes it in a transaction of its
	// own first, so that other Runners see it while the batches run. The
	// last batch gives it back in its own transaction.
	take, err := r.leaseFor(ctx, name, rep.Checkpoint, target)
	if err != nil {
		return rep, false, err
	}
	held := !take // the lease is committed as this Runner's
	defer func() {
		if held {
			r.release(ctx, name)
		}
	}()

	feed := r.newFeedReader(e, share)
	policy := policyOf(e.p)
	for {
		if ctx.Err() != nil {
			return rep, progressed, ctxEnd(ctx, name, progressed)
		}
		res, err := r.runBatch(ctx, e, feed, policy, target, rep.Checkpoint, take)
		if res.committed {
			held, take = !res.released, false
			e.signal()
			progressed = true
			rep.Applied += res.applied
			rep.Skipped += res.skipped
			rep.Checkpoint = res.checkpoint
		}
		var stopped *StoppedError
		switch {
		case err != nil && ctx.Err() != nil && !errors.As(err, &stopped):
			return rep, progressed, ctxEnd(ctx, name, progressed)
		case err != nil:
			return rep, progressed, err
		case res.done && until == 0 && res.released && e.want() > rep.Checkpoint:
			// Callers of WaitFor wait for later events: go on to the head
			// as it is now, under a lease taken again.
			head, err := r.store.Head(ctx)
			if err != nil {
				return rep, progressed, fmt.Errorf("projection %q: read head: %w", name, err)
			}
			if head <= rep.Checkpoint {
				return rep, progressed, nil
			}
			target = head
			if take, err = r.leaseFor(ctx, name, rep.Checkpoint, target); err != nil {
				return rep, progressed, err
			}
			held = !take
		case res.done:
			return rep, progressed, nil
		}
	}
}

// leaseFor prepares a catch-up from cp to target: when it fits in one
// batch it only checks that no other Runner holds the lease, and answers
// take, for the batch to take it; otherwise it takes the lease in a
// transaction of its own. Errors: ErrLocked; a database error.
func (r *Runner) leaseFor(ctx context.Context, name string, cp, target eventlog.Position) (take bool, err error) {
	if target-cp > eventlog.Position(r.batch) {
		return false, r.acquire(ctx, name)
	}
	// A read first: a lease held elsewhere answers ErrLocked without
	// waiting for the write lock, which its holder may have for a while.
	_, err = r.checkLease(ctx, r.db, name)
	return true, err
}

// ctxEnd is CatchUp's answer when ctx ended before the target.
func ctxEnd(ctx context.Context, name string, progressed bool) error {
	if progressed {
		return nil
	}
	return fmt.Errorf("projection %q: %w", name, ctx.Err())
}

// acquire takes the lease on name for this Runner: when no row exists, the
// row has expired or it is already this Runner's.
func (r *Runner) acquire(ctx context.Context, name string) error {
	// A read first: a lease held elsewhere answers ErrLocked without
	// waiting for the write lock, which its holder may have for a while.
	if _, err := r.checkLease(ctx, r.db, name); err != nil {
		return err
	}
	tx, err := r.beginWrite(ctx)
	if err != nil {
		return fmt.Errorf("projection %q: take lease: %w", name, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := r.takeLease(ctx, tx.Tx, name); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projection %q: take lease: %w", name, err)
	}
	return nil
}

// checkLease returns an error wrapping ErrLocked when another owner holds
// an unexpired lease on name, unless that owner is a process of this
// machine that no longer runs: then it returns that owner, whose lease
// takeLease may take over.
func (r *Runner) checkLease(ctx context.Context, q queryRower, name string) (dead string, err error) {
	var owner string
	var expires int64
	err = q.QueryRowContext(ctx, `SELECT owner, expires_at FROM projection_leases WHERE name = $1`, name).Scan(&owner, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("projection %q: read lease: %w", name, err)
	case owner == r.owner || expires <= time.Now().UnixMilli():
		return "", nil
	case deadLocalOwner(owner):
		return owner, nil
	}
	return "", fmt.Errorf("projection %q: %w: lease held by %q until %s", name, ErrLocked, owner,
		time.UnixMilli(expires).UTC().Format(time.RFC3339Nano))
}

// takeLease takes or renews the lease inside a write transaction.
func (r *Runner) takeLease(ctx context.Context, tx *sql.Tx, name string) error {
	dead, err := r.checkLease(ctx, tx, name)
	if err != nil {
		return err
	}
	// The condition repeats checkLease's under the row's lock: in
	// PostgreSQL another runner may have renewed the lease since the read.
	// An owner id is never empty, so dead = "" matches no row.
	now := time.Now()
	res, err := tx.ExecContext(ctx, `INSERT INTO projection_leases (name, owner, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
		WHERE projection_leases.owner = excluded.owner OR projection_leases.expires_at <= $4 OR projection_leases.owner = $5`,
		name, r.owner, now.Add(r.leaseTTL).UnixMilli(), now.UnixMilli(), dead)
	if err != nil {
		return fmt.Errorf("projection %q: take lease: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("projection %q: take lease: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("projection %q: %w: the lease was taken by another runner", name, ErrLocked)
	}
	if dead != "" {
		r.log.InfoContext(ctx, "projection lease taken over from a process that no longer runs", "projection", name, "from", dead)
	}
	return nil
}

// renewLease extends this Runner's lease inside a batch's transaction; it
// fails with ErrLocked when the lease is no longer this Runner's.
func (r *Runner) renewLease(ctx context.Context, tx *sql.Tx, name string) error {
	res, err := tx.ExecContext(ctx, `UPDATE projection_leases SET expires_at = $1 WHERE name = $2 AND owner = $3`,
		time.Now().Add(r.leaseTTL).UnixMilli(), name, r.owner)
	if err != nil {
		return fmt.Errorf("projection %q: renew lease: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("projection %q: renew lease: %w", name, err)
	}
	if n == 0 {
		r.log.WarnContext(ctx, "projection lease lost", "projection", name, "owner", r.owner)
		return fmt.Errorf("projection %q: %w: the lease was taken over by another runner", name, ErrLocked)
	}
	return nil
}

// release gives the lease back, if it is still this Runner's, even when
// ctx has ended.
func (r *Runner) release(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := func() error {
		tx, err := r.beginWrite(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx, `DELETE FROM projection_leases WHERE name = $1 AND owner = $2`, name, r.owner); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if err != nil {
		r.log.WarnContext(ctx, "projection lease not released; it will expire", "projection", name, "error", err.Error())
	}
}

// CatchUpAll runs CatchUp (until the head) on every projection, all at
// once, each in its own transactions (on SQLite they still write one at a
// time, but one reads the feed while another writes), and returns their
// reports in the order of Names. A projection's error, ErrLocked or any
// other, does not keep the others from running: the errors are joined
// (errors.Is finds each). When ctx has ended before the call, nothing
// runs; when it ends during the call, ctx's error is returned only if no
// batch of any projection was committed during the call.
func (r *Runner) CatchUpAll(ctx context.Context) ([]Report, error) {
	if ctx.Err() != nil {
		return []Report{}, fmt.Errorf("projection: %w", ctx.Err())
	}
	reports := make([]Report, len(r.names))
	errs := make([]error, len(r.names))
	progressed := make([]bool, len(r.names))
	share := r.newFeedShare(r.names)
	var wg sync.WaitGroup
	for i, name := range r.names {
		wg.Go(func() { reports[i], progressed[i], errs[i] = r.catchUp(ctx, name, 0, share) })
	}
	wg.Wait()
	if ctx.Err() != nil && slices.Contains(progressed, true) {
		for i, err := range errs {
			if errors.Is(err, ctx.Err()) {
				errs[i] = nil
			}
		}
	}
	return reports, errors.Join(errs...)
}

// Status returns every projection's checkpoint, the log's head, the lag
// between them and its number of dead letters, in the order of Names. The
// head is read after the checkpoints, so the lag is never negative.
func (r *Runner) Status(ctx context.Context) ([]Status, error) {
	cps := make(map[string]eventlog.Position, len(r.names))
	dead := make(map[string]int, len(r.names))
	err := func() error {
		tx, err := r.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		rows, err := tx.QueryContext(ctx, `SELECT name, position FROM projection_checkpoints`)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var name string
			var pos int64
			if err := rows.Scan(&name, &pos); err != nil {
				return err
			}
			cps[name] = eventlog.Position(pos)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		counts, err := tx.QueryContext(ctx, `SELECT projection, COUNT(*) FROM projection_dead_letters GROUP BY projection`)
		if err != nil {
			return err
		}
		defer func() { _ = counts.Close() }()
		for counts.Next() {
			var name string
			var n int
			if err := counts.Scan(&name, &n); err != nil {
				return err
			}
			dead[name] = n
		}
		return counts.Err()
	}()
	if err != nil {
		return nil, fmt.Errorf("projection: status: %w", err)
	}
	head, err := r.store.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("projection: status: read head: %w", err)
	}
	out := make([]Status, len(r.names))
	for i, name := range r.names {
		cp := cps[name]
		var lag uint64
		if head > cp {
			lag = uint64(head - cp)
		}
		out[i] = Status{Name: name, Checkpoint: cp, Head: head, Lag: lag, DeadLetters: dead[name]}
	}
	return out, nil
}

// DeadLetters returns up to limit (all when limit <= 0) of the
// projection's dead letters, oldest position first. Errors:
// ErrUnknownProjection; a database error.
func (r *Runner) DeadLetters(ctx context.Context, name string, limit int) ([]DeadLetter, error) {
	if _, err := r.entry(name); err != nil {
		return nil, err
	}
	q := `SELECT position, stream, version, type, error, at
		FROM projection_dead_letters WHERE projection = $1 ORDER BY position`
	args := []any{name}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("projection %q: dead letters: %w", name, err)
	}
	defer func() { _ = rows.Close() }()
	var out []DeadLetter
	for rows.Next() {
		d := DeadLetter{Projection: name}
		var pos, version, at int64
		if err := rows.Scan(&pos, &d.Stream, &version, &d.Type, &d.Error, &at); err != nil {
			return nil, fmt.Errorf("projection %q: dead letters: %w", name, err)
		}
		d.Position, d.Version, d.At = eventlog.Position(pos), eventlog.Version(version), time.UnixMicro(at).UTC()
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("projection %q: dead letters: %w", name, err)
	}
	return out, nil
}

// Rebuild empties the projection for a replay: under its lease, in one
// transaction, it runs the projector's Reset, sets the checkpoint to 0 and
// deletes the projection's dead letters. The read model is then empty until
// the caller runs CatchUp. A call of this Runner working on the projection
// is waited for. Errors: ErrUnknownProjection; ErrLocked when
// another Runner holds the lease; a Reset or database error, after which
// nothing changed.
func (r *Runner) Rebuild(ctx context.Context, name string) error {
	e, err := r.entry(name)
	if err != nil {
		return err
	}
	if err := e.lock(ctx); err != nil {
		return fmt.Errorf("projection %q: %w", name, err)
	}
	defer e.unlock()
	if _, err := r.checkLease(ctx, r.db, name); err != nil {
		return err
	}
	tx, err := r.beginWrite(ctx)
	if err != nil {
		return fmt.Errorf("projection %q: rebuild: %w", name, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := r.takeLease(ctx, tx.Tx, name); err != nil {
		return err
	}
	if err := e.p.Reset(withDialect(ctx, r.dialect), tx.Tx); err != nil {
		return fmt.Errorf("projection %q: reset: %w", name, err)
	}
	for _, q := range []string{
		`DELETE FROM projection_checkpoints WHERE name = $1`,
		`DELETE FROM projection_dead_letters WHERE projection = $1`,
		`DELETE FROM projection_leases WHERE name = $1`,
	} {
		if _, err := tx.ExecContext(ctx, q, name); err != nil {
			return fmt.Errorf("projection %q: rebuild: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projection %q: rebuild: %w", name, err)
	}
	return nil
}

func eventTypes(p Projector) []string {
	if f, ok := p.(TypeFilter); ok {
		return f.EventTypes()
	}
	return nil
}

// policyOf returns p's FailurePolicy with its defaults filled in.
func policyOf(p Projector) FailurePolicy {
	var fp FailurePolicy
	if pp, ok := p.(PolicyProvider); ok {
		fp = pp.FailurePolicy()
	}
	if fp.Retries <= 0 {
		fp.Retries = defaultRetries
	}
	if fp.Backoff <= 0 {
		fp.Backoff = defaultBackoff
	}
	return fp
}
