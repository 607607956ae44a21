package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/litestream"
	"github.com/superfly/ltx"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/internal/turns"
)

// leaseMargin is how much longer than a sync the writer lease must still
// last before a write (a quarter of the TTL when that is shorter): the
// slack for clock skew between instances and an upload still in flight
// when a sync gives up.
const leaseMargin = 2 * time.Second

// LeaseSlack is the margin used with a lease of ttl.
func LeaseSlack(ttl time.Duration) time.Duration { return min(leaseMargin, ttl/4) }

// Writer replicates the SQLite file that this process writes. Its life:
//
//  1. OpenWriter takes the writer lease and makes the local file the
//     replica's newest state (restoring it when missing or different).
//  2. The caller opens the file (and creates its schema if new), then
//     calls Start, which attaches Litestream and syncs once.
//  3. Every commit is followed by Sync before it is acknowledged; Guard
//     before a write checks the lease; Begin at the start of an
//     invocation tells whether another writer moved the replica meanwhile
//     (then the caller closes the file, calls Reload and opens it again);
//     Maintain compacts and snapshots.
//  4. Close makes a last sync (only while the lease is ours) and releases
//     the lease.
//
// The caller's SQLite connections must not checkpoint the WAL themselves
// (sqlite.Options.NoAutoCheckpoint): Litestream checkpoints during Sync,
// after it has copied the frames.
//
// Methods are safe for concurrent use. Guard and Begin cost no I/O while
// the lease lasts, and never wait for a sync in flight: a commit made
// while a sync uploads is covered by the next sync. Syncs run one at a
// time, because Litestream uploads the level-0 files of a replica in
// transaction order and a reader (a restore, a Follower) needs them
// contiguous: a later file visible before an earlier one would look like
// a gap.
type Writer struct {
	opts   Options
	client litestream.ReplicaClient
	lease  *lease

	// syncs shares syncs among Sync's callers: a sync started after a
	// commit covers it.
	syncs turns.Group

	// ops (a lock with a timeout) serialises the work on Litestream's
	// handles: a sync, Start, Reload, Close and Maintain's sync. Appends
	// never take it. closing ends when Close begins, and with it the
	// work in flight (opCtx), so that Close does not wait for it.
	ops   chan struct{}
	maint sync.RWMutex // read-held by Maintain's work after it let go of ops
	// endMaint makes maintEnded, closed once no maintenance runs (Close).
	endMaint   sync.Once
	maintEnded chan struct{}
	closing    context.Context
	stopOps    context.CancelFunc
	db         *litestream.DB    // set and read holding ops
	store      *litestream.Store // likewise
	// pendingFull is true from Start until a sync succeeds: the first sync
	// after a restore uploads a whole snapshot, so it gets a longer budget.
	// Holding ops.
	pendingFull bool

	synced atomic.Uint64 // the replica's head (a TXID) as this writer last saw or made it
	stale  atomic.Bool   // another writer moved the replica since synced
}

// OpenWriter connects to the replica at opts.URL, takes the writer lease
// and makes opts.Path hold the replica's newest state: a missing file is
// restored (a replica with nothing in it means a new, empty log); a file
// whose replication state does not match the replica's newest transaction
// is replaced by a restore; a file already at that transaction is kept.
//
// Errors: a URL that cannot be used, a replica that cannot be read or
// whose restore fails SQLite's integrity check (never silently empty), and
// eventlog.ErrNotWriter when another process holds the lease (unless
// Options.StartWithoutLease).
func OpenWriter(ctx context.Context, opts Options) (*Writer, error) {
	opts = opts.withDefaults()
	client, err := newClient(ctx, opts.URL, opts.Logger)
	if err != nil {
		return nil, err
	}
	lease, err := newLeaser(ctx, client, opts)
	if err != nil {
		return nil, err
	}
	w := &Writer{opts: opts, client: client, lease: lease, ops: make(chan struct{}, 1)}
	w.closing, w.stopOps = context.WithCancel(context.Background())
	w.syncs.Gather = true
	// Nothing to compare yet: reconcile makes the file the replica's head.
	if err := lease.hold(ctx, opts.SyncTimeout, func(context.Context) error { return nil }); err != nil {
		if !opts.StartWithoutLease || !errors.Is(err, eventlog.ErrNotWriter) {
			return nil, err
		}
		// Restore anyway (reading is safe); writes wait for the lease, and
		// Begin reloads if the holder wrote more before it let go.
		opts.Logger.Warn("starting without the writer lease; writes are refused until it is free", "error", err.Error())
	}
	if err := w.reconcile(ctx); err != nil {
		return nil, errors.Join(err, lease.release(context.WithoutCancel(ctx)))
	}
	return w, nil
}

// reconcile makes the local file the replica's newest state.
func (w *Writer) reconcile(ctx context.Context) error {
	newest, trailer, err := headFile(ctx, w.client)
	if err != nil {
		return fmt.Errorf("replica %s: %w", redact(w.opts.URL), err)
	}
	var top ltx.TXID
	if newest != nil {
		top = newest.MaxTXID
	}
	present, err := exists(w.opts.Path)
	if err != nil {
		return err
	}
	if present {
		switch {
		case top == 0:
			// A new (or emptied) replica: the local file becomes its first
			// state; Litestream's local bookkeeping of another replica goes.
			w.synced.Store(0)
			return os.RemoveAll(metaPath(w.opts.Path))
		case sameAsLocal(w.opts.Path, newest, trailer):
			w.synced.Store(uint64(top))
			return nil
		}
		// Behind, ahead (transactions never acknowledged), at the same
		// transaction with other contents (a fork), or no longer provably
		// the same (the replica compacted its level-0 file away): the
		// replica wins.
		local, _ := litestream.NewDB(w.opts.Path).Pos()
		w.opts.Logger.Warn("local database is not the replica's newest state; restoring it",
			"path", w.opts.Path, "local_txid", uint64(local.TXID), "replica_txid", uint64(top))
	}
	if err := wipe(w.opts.Path); err != nil {
		return err
	}
	if err := restore(ctx, w.client, top, w.opts); err != nil {
		return err
	}
	w.synced.Store(uint64(top))
	return nil
}

// Start attaches Litestream to the file, which must now exist, and syncs
// it to the replica. It is called once after OpenWriter and after each
// Reload.
func (w *Writer) Start(ctx context.Context) error {
	w.lockOps()
	defer w.unlockOps()
	if w.db != nil {
		return errors.New("replica: writer already started")
	}
	db := litestream.NewDB(w.opts.Path)
	db.MonitorInterval = 0 // no background goroutine: syncs happen in Sync
	db.ShutdownSyncTimeout = 0
	db.Logger = w.opts.Logger.With("component", "litestream")
	r := litestream.NewReplicaWithClient(db, w.client)
	r.MonitorEnabled = false
	db.Replica = r
	store := litestream.NewStore([]*litestream.DB{db}, litestream.DefaultCompactionLevels)
	store.SnapshotInterval = w.opts.SnapshotInterval
	store.SnapshotRetention = w.opts.Retention
	store.Logger = db.Logger
	db.MonitorInterval, db.ShutdownSyncTimeout = 0, 0 // NewStore resets the latter
	if err := db.Open(); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	w.db, w.store, w.pendingFull = db, store, true
	err := w.syncLocked(ctx)
	switch {
	case err != nil && w.opts.StartWithoutLease && errors.Is(err, eventlog.ErrNotWriter):
		return nil // the first sync under the lease replicates the file
	case errors.Is(err, eventlog.ErrUnavailable):
		// The replica answered the restore; a failed upload now is
		// retried by the next Sync, which a command waits for.
		w.opts.Logger.Warn("first sync to the replica failed; the next sync retries it", "error", err.Error())
		return nil
	}
	return err
}

// Guard checks, before a write, that this process holds the writer lease
// for longer than a sync can take, renewing it when due. It costs no I/O
// while the lease lasts, and never waits for a sync. Errors wrap
// eventlog.ErrNotWriter (the lease is another's, or the replica moved and
// the caller must Reload) or eventlog.ErrUnavailable (the lease store
// cannot be reached).
func (w *Writer) Guard(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.opts.SyncTimeout)
	defer cancel()
	return w.guardFor(ctx, w.opts.SyncTimeout)
}

// errStale is the answer to a writer whose replica another writer moved.
var errStale = fmt.Errorf("%w: another writer changed the replica; this instance must reload", eventlog.ErrNotWriter)

// guardFor is Guard for work that may take up to d.
func (w *Writer) guardFor(ctx context.Context, d time.Duration) error {
	if w.stale.Load() {
		return errStale
	}
	return w.lease.hold(ctx, d+LeaseSlack(w.opts.LeaseTTL), w.checkHead)
}

// checkHead runs when the lease was taken anew: the replica must still be
// at the transaction this writer last synced, else another writer wrote
// meanwhile and this one is stale until it reloads. No sync can be in
// flight then: each sync is guarded by a lease that outlasts it.
func (w *Writer) checkHead(ctx context.Context) error {
	top, err := head(ctx, w.client)
	if err != nil {
		return fmt.Errorf("%w: replica: %w", eventlog.ErrUnavailable, err)
	}
	if synced := w.synced.Load(); uint64(top) != synced {
		w.stale.Store(true)
		w.opts.Logger.Warn("the replica moved while this instance did not hold the lease",
			"synced_txid", synced, "replica_txid", uint64(top))
		return errStale
	}
	return nil
}

// Begin is called at the start of an invocation, before any write: it
// takes or renews the lease and reports stale = true when another writer
// changed the replica since this one last synced, in which case the caller
// must close the file, call Reload and open it again before writing. Like
// Guard, it costs no I/O while the lease lasts.
func (w *Writer) Begin(ctx context.Context) (stale bool, err error) {
	err = w.Guard(ctx)
	return w.stale.Load(), err
}

// Sync makes every transaction committed to the file so far durable in
// the replica, within Options.SyncTimeout. Errors wrap
// eventlog.ErrUnavailable when the replica cannot be written (the
// transactions are committed locally and will be synced by a later call,
// unless the instance is lost first) and eventlog.ErrNotWriter when the
// lease is not this process's.
//
// Concurrent calls are coalesced: a call made while a sync runs waits for
// it to end, then one waiting call syncs for all of them, so N callers
// cost about two syncs, not N. A call whose transactions were covered by
// a sync that failed returns that sync's error.
func (w *Writer) Sync(ctx context.Context) error {
	err := w.syncs.Do(ctx, "replica sync", w.leadSync)
	if err != nil && !errors.Is(err, eventlog.ErrUnavailable) && !errors.Is(err, eventlog.ErrNotWriter) {
		err = fmt.Errorf("%w: %w", eventlog.ErrUnavailable, err)
	}
	return err
}

// leadSync runs one sync for every caller waiting on it: not bounded by
// the leading caller's cancellation (a client that hangs up must not fail
// the others), only by the sync budget.
func (w *Writer) leadSync(ctx context.Context) error {
	w.lockOps()
	defer w.unlockOps()
	ctx, cancel := w.opCtx(ctx)
	defer cancel()
	return w.syncLocked(ctx)
}

func (w *Writer) lockOps()   { w.ops <- struct{}{} }
func (w *Writer) unlockOps() { <-w.ops }

// opCtx is ctx, also ended when Close begins.
func (w *Writer) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(w.closing, cancel)
	return ctx, func() { stop(); cancel() }
}

// syncLocked runs one sync, holding ops.
func (w *Writer) syncLocked(ctx context.Context) error {
	if w.db == nil {
		return errors.New("replica: writer not started")
	}
	budget := w.opts.SyncTimeout
	if w.pendingFull {
		budget = max(budget, w.opts.LeaseTTL/2-LeaseSlack(w.opts.LeaseTTL))
		if d, ok := ctx.Deadline(); ok {
			budget = min(budget, max(time.Until(d)-time.Second, w.opts.SyncTimeout))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	if err := w.guardFor(ctx, budget); err != nil {
		return err
	}
	if err := w.db.SyncAndWait(ctx); err != nil {
		return fmt.Errorf("%w: replica %s: %w", eventlog.ErrUnavailable, redact(w.opts.URL), err)
	}
	w.synced.Store(uint64(w.db.Replica.Pos().TXID))
	w.pendingFull = false
	return nil
}

// SyncCount returns how many syncs Sync has run (fewer than its calls
// when concurrent calls shared them).
func (w *Writer) SyncCount() int64 { return int64(w.syncs.Runs()) }

// Maintain does Litestream's periodic work: it compacts the replica's
// small files into larger ones at each level when due (30 s, 5 min, 1 h),
// writes a snapshot every SnapshotInterval and deletes what Retention no
// longer needs, so that a restore reads a bounded number of files. Call it
// regularly from an invocation (a schedule); it costs nothing when nothing
// is due. Syncs may run beside it (it does not hold them up while it
// uploads); Reload and Close must not.
func (w *Writer) Maintain(ctx context.Context) error {
	ctx, cancel := w.opCtx(ctx)
	defer cancel()
	w.lockOps()
	err := w.syncLocked(ctx)
	if err == nil {
		// The compaction and snapshot uploads below must end well within
		// the lease.
		err = w.guardFor(ctx, w.opts.LeaseTTL/2-LeaseSlack(w.opts.LeaseTTL))
	}
	db, store := w.db, w.store
	if err == nil {
		w.maint.RLock() // before ops go, so that Close waits for it
		defer w.maint.RUnlock()
	}
	w.unlockOps()
	if err != nil {
		return err
	}
	ctx, stop := context.WithTimeout(ctx, w.opts.LeaseTTL/2-LeaseSlack(w.opts.LeaseTTL))
	defer stop()
	levels := append(litestream.CompactionLevels{}, litestream.DefaultCompactionLevels[1:]...)
	levels = append(levels, store.SnapshotLevel())
	var errs []error
	for _, lvl := range levels {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := store.CompactDB(ctx, db, lvl)
		if err != nil && !errors.Is(err, litestream.ErrNoCompaction) && !errors.Is(err, litestream.ErrCompactionTooEarly) {
			errs = append(errs, fmt.Errorf("compact level %d: %w", lvl.Level, err))
		}
	}
	if err := store.EnforceSnapshotRetention(ctx, db); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Reload replaces the local file with the replica's newest state after
// Begin reported it stale. The caller has closed its connections to the
// file and calls Start once it has opened it again. Nothing local is
// synced: the local transactions were never acknowledged.
func (w *Writer) Reload(ctx context.Context) error {
	w.lockOps()
	defer w.unlockOps()
	ctx, cancel := w.opCtx(ctx)
	defer cancel()
	w.detachLocked(ctx)
	top, err := head(ctx, w.client)
	if err != nil {
		return fmt.Errorf("%w: replica: %w", eventlog.ErrUnavailable, err)
	}
	if err := wipe(w.opts.Path); err != nil {
		return err
	}
	if err := restore(ctx, w.client, top, w.opts); err != nil {
		return err
	}
	w.synced.Store(uint64(top))
	w.stale.Store(false)
	return nil
}

// detachLocked closes Litestream's handles without syncing, holding ops.
func (w *Writer) detachLocked(ctx context.Context) {
	if w.db == nil {
		return
	}
	r := w.db.Replica
	w.db.Replica = nil
	_ = w.db.Close(ctx)
	_ = r.Stop(true)
	w.db, w.store = nil, nil
}

// Close syncs what is left, if the lease is still this process's and the
// replica has not moved, then releases Litestream and the lease, within
// ctx's deadline: it first ends the work in flight (a sync, a reload,
// maintenance: their callers get errors, so nothing more is acknowledged),
// gives the last sync at most two thirds of the time left, and keeps the
// rest for the release, so that a successor takes over at once. If the
// work in flight does not end in time, the lease is released all the same
// and the local file abandoned. After Close the writer never takes the
// lease again.
func (w *Writer) Close(ctx context.Context) error {
	w.stopOps()
	w.endMaint.Do(func() {
		w.maintEnded = make(chan struct{})
		go func() {
			w.maint.Lock() // never unlocked: nothing is maintained after Close
			close(w.maintEnded)
		}()
	})
	select {
	case <-w.maintEnded:
	case <-ctx.Done():
	}
	select {
	case w.ops <- struct{}{}:
	case <-ctx.Done():
		return errors.Join(fmt.Errorf("replica: close: the work in flight did not end: %w", ctx.Err()), w.lease.release(context.WithoutCancel(ctx)))
	}
	defer w.unlockOps()
	var errs []error
	if w.db != nil {
		if !w.stale.Load() && w.lease.heldFor(LeaseSlack(w.opts.LeaseTTL)) {
			budget := w.opts.SyncTimeout
			if deadline, ok := ctx.Deadline(); ok {
				budget = min(budget, time.Until(deadline)*2/3)
			}
			sync, cancel := context.WithTimeout(ctx, budget)
			errs = append(errs, w.db.Close(sync))
			cancel()
			w.db, w.store = nil, nil
		} else {
			w.detachLocked(ctx)
		}
	}
	release, cancel := context.WithTimeout(ctx, w.opts.SyncTimeout)
	defer cancel()
	errs = append(errs, w.lease.release(release))
	return errors.Join(errs...)
}
