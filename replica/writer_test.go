package replica_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/replica"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// node is one writer process's view: the replicated writer and the event
// log it guards.
type node struct {
	w     *replica.Writer
	store *sqlite.Store
}

func openNode(t testing.TB, ctx context.Context, opts replica.Options) (*node, error) {
	t.Helper()
	w, err := replica.OpenWriter(ctx, opts)
	if err != nil {
		return nil, err
	}
	store, err := sqlite.Open(ctx, opts.Path, sqlite.Options{NoAutoCheckpoint: true})
	if err != nil {
		return nil, errors.Join(err, w.Close(ctx))
	}
	if err := w.Start(ctx); err != nil {
		return nil, errors.Join(err, store.Close(), w.Close(ctx))
	}
	return &node{w: w, store: store}, nil
}

// mustNode is openNode for tests that need it to open; the node closes
// when the test ends (closing it earlier too is fine).
func mustNode(t testing.TB, ctx context.Context, opts replica.Options) *node {
	t.Helper()
	n, err := openNode(t, ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.close(ctx) })
	return n
}

// appendMany appends to stream the events from to to-1 (see appendOne).
func (n *node) appendMany(t testing.TB, ctx context.Context, stream string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := n.appendOne(ctx, stream, i); err != nil {
			t.Fatal(err)
		}
	}
}

// reload does what the app does when Begin reports the node stale: close
// the store, Reload, open the store again and Start.
func (n *node) reload(t testing.TB, ctx context.Context) {
	t.Helper()
	path := n.store.Path()
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.w.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	var err error
	if n.store, err = sqlite.Open(ctx, path, sqlite.Options{NoAutoCheckpoint: true}); err != nil {
		t.Fatal(err)
	}
	if err := n.w.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func (n *node) close(ctx context.Context) error {
	return errors.Join(n.store.Close(), n.w.Close(ctx))
}

// appendOne appends one event to stream at its current version and syncs.
func (n *node) appendOne(ctx context.Context, stream string, i int) (eventlog.AppendResult, error) {
	id := eventlog.MustStreamID(stream)
	vs, err := n.store.StreamVersions(ctx, []eventlog.StreamID{id})
	if err != nil {
		return eventlog.AppendResult{}, err
	}
	if err := n.w.Guard(ctx); err != nil {
		return eventlog.AppendResult{}, err
	}
	res, err := n.store.Append(ctx, eventlog.AppendRequest{
		CommandID: fmt.Sprintf("%s-%d", stream, i),
		Expected:  []eventlog.ExpectedVersion{{Stream: id, Version: vs[0]}},
		Events:    []eventlog.Event{{Stream: id, Type: "Noted", Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}},
	})
	if err != nil {
		return res, err
	}
	return res, n.w.Sync(ctx)
}

// syncInFlight appends the first event of stream and starts a sync of it,
// which is in flight (on a slow replica) when it returns; the channel gets
// the sync's outcome.
func (n *node) syncInFlight(t testing.TB, ctx context.Context, s3 *replicatest.S3, stream eventlog.StreamID) <-chan error {
	t.Helper()
	if _, err := n.store.Append(ctx, eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: stream}}, Events: []eventlog.Event{{Stream: stream, Type: "Noted", Data: []byte(`{}`)}}}); err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- n.w.Sync(ctx) }()
	s3.WaitHeld(t)
	return synced
}

func fileURL(t testing.TB) string { return "file://" + filepath.Join(t.TempDir(), "replica") }

// replicas returns the kinds of replica every scenario runs against.
func replicas(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"file": func(t *testing.T) string { return fileURL(t) },
		"s3": func(t *testing.T) string {
			return replicatest.StartS3(t).URL("app/events")
		},
	}
}

func TestWriterRestoresDeletedFileAndPositionsContinue(t *testing.T) {
	for name, newURL := range replicas(t) {
		t.Run(name, func(t *testing.T) { testRestoresDeletedFile(t, newURL(t)) })
	}
}

func testRestoresDeletedFile(t *testing.T, url string) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	n, err := openNode(t, ctx, replica.Options{URL: url, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	n.appendMany(t, ctx, "note-a", 0, 20)
	if err := n.close(ctx); err != nil {
		t.Fatal(err)
	}
	// A clean restart on a file that is the replica's newest state keeps
	// the file (same inode: no restore replaced it).
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if n, err = openNode(t, ctx, replica.Options{URL: url, Path: path}); err != nil {
		t.Fatal(err)
	}
	if err := n.close(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("a restart at the replica's newest state restored the file anyway (%v)", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		_ = os.Remove(p)
	}
	_ = os.RemoveAll(filepath.Join(filepath.Dir(path), ".events.db-litestream"))

	n, err = openNode(t, ctx, replica.Options{URL: url, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.close(ctx) }()
	head, err := n.store.Head(ctx)
	if err != nil || head != 20 {
		t.Fatalf("head after restore = %d, %v; want 20", head, err)
	}
	res, err := n.appendOne(ctx, "note-a", 20)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Records[0]; got.Position != 21 || got.Version != 21 {
		t.Fatalf("next append at position %d version %d, want 21/21", got.Position, got.Version)
	}
}

func TestWriterReplicaDown(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	path := filepath.Join(t.TempDir(), "events.db")
	n, err := openNode(t, ctx, replica.Options{URL: s3.URL("down"), Path: path, SyncTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n.appendMany(t, ctx, "note-a", 0, 3)
	s3.SetDown(true)
	start := time.Now()
	_, err = n.appendOne(ctx, "note-a", 3)
	if !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("append with the replica down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a failed sync took %s, more than its timeout allows", d)
	}
	s3.SetDown(false)
	if _, err := n.appendOne(ctx, "note-a", 4); err != nil {
		t.Fatal(err)
	}
	if err := n.close(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything committed, the unacknowledged append included, reached the
	// replica once it came back.
	fresh := filepath.Join(t.TempDir(), "events.db")
	n, err = openNode(t, ctx, replica.Options{URL: s3.URL("down"), Path: fresh})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.close(ctx) }()
	if head, err := n.store.Head(ctx); err != nil || head != 5 {
		t.Fatalf("restored head = %d, %v; want 5", head, err)
	}
}

func TestSecondWriterIsRefused(t *testing.T) {
	for name, newURL := range replicas(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			url := newURL(t)
			first := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "a.db")})
			first.appendMany(t, ctx, "note-a", 0, 1)
			_, err := replica.OpenWriter(ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "b.db")})
			if !errors.Is(err, eventlog.ErrNotWriter) {
				t.Fatalf("second writer: %v, want ErrNotWriter", err)
			}
			if err := first.close(ctx); err != nil {
				t.Fatal(err)
			}
			// Released: the next writer gets it, with the first one's data.
			second := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "b.db")})
			if h, err := second.store.Head(ctx); err != nil || h != 1 {
				t.Fatalf("the next writer's log head %d, %v; want the first one's event", h, err)
			}
		})
	}
}

// A writer frozen past its lease (a Lambda instance between invocations)
// must notice that a successor wrote meanwhile and reload before it
// writes, never replicate its own older file over the newer history.
func TestFrozenWriterReloadsAfterSuccessorWrote(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	url := s3.URL("frozen")
	ttl := 5 * time.Second // outlasts the steps that need it held on a loaded machine
	opts := func(path, owner string) replica.Options {
		return replica.Options{URL: url, Path: path, LeaseTTL: ttl, SyncTimeout: 1500 * time.Millisecond, Owner: owner}
	}
	pathA := filepath.Join(t.TempDir(), "a.db")
	a := mustNode(t, ctx, opts(pathA, "a"))
	a.appendMany(t, ctx, "note-a", 0, 3)
	// While a holds the lease, b cannot start.
	if _, err := replica.OpenWriter(ctx, opts(filepath.Join(t.TempDir(), "b.db"), "b")); !errors.Is(err, eventlog.ErrNotWriter) {
		t.Fatalf("b while a holds the lease: %v", err)
	}
	time.Sleep(ttl + 200*time.Millisecond) // a is "frozen"; its lease expires
	b, err := openNode(t, ctx, opts(filepath.Join(t.TempDir(), "b.db"), "b"))
	if err != nil {
		t.Fatal(err)
	}
	b.appendMany(t, ctx, "note-a", 3, 5)
	// While b holds the lease, a's writes are refused.
	if _, err := a.appendOne(ctx, "note-a", 99); !errors.Is(err, eventlog.ErrNotWriter) {
		t.Fatalf("a while b holds the lease: %v", err)
	}
	if err := b.close(ctx); err != nil {
		t.Fatal(err)
	}
	// a wakes up: Begin takes the free lease, sees the replica moved.
	stale, err := a.w.Begin(ctx)
	if !stale {
		t.Fatalf("Begin after a successor wrote: stale = false (%v)", err)
	}
	a.reload(t, ctx)
	res, err := a.appendOne(ctx, "note-a", 5)
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Records[0].Version; v != 6 {
		t.Fatalf("a appended version %d after reload, want 6 (b's events kept)", v)
	}
}

// Many goroutines append and sync at once: every append that Sync
// acknowledged is in the replica, and the syncs were shared.
func TestConcurrentSyncsAreSharedAndLoseNothing(t *testing.T) {
	ctx := context.Background()
	url := fileURL(t)
	n, err := openNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "events.db")})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 25
	base := n.w.SyncCount()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := n.appendOne(ctx, fmt.Sprintf("note-%d", g), i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := n.w.SyncCount() - base
	t.Logf("%d acknowledged appends, %d syncs", workers*each, syncs)
	if syncs >= workers*each {
		t.Fatalf("%d syncs for %d concurrent appends: none were shared", syncs, workers*each)
	}
	if err := n.close(ctx); err != nil {
		t.Fatal(err)
	}
	restored := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "restored.db")})
	if head, err := restored.store.Head(ctx); err != nil || head != workers*each {
		t.Fatalf("restored head %d, %v; want %d", head, err, workers*each)
	}
}

// A local file at the replica's newest transaction id but with other
// contents (a fork) is replaced by the replica's state, not kept.
func TestForkAtTheSameTXIDIsRestored(t *testing.T) {
	ctx := context.Background()
	urlX, urlY := fileURL(t), fileURL(t)
	dirX, dirY := t.TempDir(), t.TempDir()
	for _, c := range []struct{ url, dir, stream string }{{urlX, dirX, "note-x"}, {urlY, dirY, "note-y"}} {
		n, err := openNode(t, ctx, replica.Options{URL: c.url, Path: filepath.Join(c.dir, "events.db")})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if _, err := n.appendOne(ctx, c.stream, i); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// X's file, with X's Litestream state, is put in front of Y's replica.
	if err := os.CopyFS(filepath.Join(dirY, "forked"), os.DirFS(dirX)); err != nil {
		t.Fatal(err)
	}
	n := mustNode(t, ctx, replica.Options{URL: urlY, Path: filepath.Join(dirY, "forked", "events.db")})
	recs, err := n.store.ReadFeed(ctx, eventlog.FeedQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].Stream.String() != "note-y" {
		t.Fatalf("after opening a forked file against Y's replica the log holds %d events, first stream %v; want Y's 3", len(recs), recs[0].Stream)
	}
}

// A successor that starts while a dead predecessor's lease has not expired
// restores, refuses writes, then once the lease expires takes it, reloads
// what the predecessor wrote after the restore, and continues.
func TestStartWithoutLease(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	ttl := 5 * time.Second // outlasts the steps that need it held on a loaded machine
	opts := func(path, owner string) replica.Options {
		return replica.Options{URL: s3.URL("successor"), Path: path, LeaseTTL: ttl, SyncTimeout: 1500 * time.Millisecond, Owner: owner, StartWithoutLease: true}
	}
	a, err := openNode(t, ctx, opts(filepath.Join(t.TempDir(), "a.db"), "a"))
	if err != nil {
		t.Fatal(err)
	}
	a.appendMany(t, ctx, "note-a", 0, 3)
	pathB := filepath.Join(t.TempDir(), "b.db")
	b, err := openNode(t, ctx, opts(pathB, "b"))
	if err != nil {
		t.Fatalf("a successor could not start while the lease was held: %v", err)
	}
	defer func() { _ = b.close(ctx) }()
	if _, err := b.appendOne(ctx, "note-a", 3); !errors.Is(err, eventlog.ErrNotWriter) {
		t.Fatalf("successor wrote while the predecessor held the lease: %v", err)
	}
	a.appendMany(t, ctx, "note-a", 3, 5)
	_ = a.store.Close() // then dies without releasing its lease
	time.Sleep(ttl + 200*time.Millisecond)
	stale, err := b.w.Begin(ctx)
	if !stale {
		t.Fatalf("Begin after the predecessor wrote past the restore: stale = false (%v)", err)
	}
	b.reload(t, ctx)
	res, err := b.appendOne(ctx, "note-a", 5)
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Records[0].Version; v != 6 {
		t.Fatalf("successor appended version %d, want 6", v)
	}
}

// The same without the frozen writer trying in between: its first call
// after thawing renews a lease the successor has released (deleted), which
// Amazon S3 answers with 404; the writer must take the lease anew and
// reload, not report the replica unavailable for ever.
func TestFrozenWriterAfterSuccessorReleased(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	ttl := 5 * time.Second // outlasts the steps that need it held on a loaded machine
	opts := func(path, owner string) replica.Options {
		return replica.Options{URL: s3.URL("released"), Path: path, LeaseTTL: ttl, SyncTimeout: 1500 * time.Millisecond, Owner: owner}
	}
	a := mustNode(t, ctx, opts(filepath.Join(t.TempDir(), "a.db"), "a"))
	if _, err := a.appendOne(ctx, "note-a", 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	b, err := openNode(t, ctx, opts(filepath.Join(t.TempDir(), "b.db"), "b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.appendOne(ctx, "note-a", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.close(ctx); err != nil { // releases: the lease object is deleted
		t.Fatal(err)
	}
	stale, err := a.w.Begin(ctx)
	if !stale {
		t.Fatalf("Begin after the successor wrote and released: stale = false, %v", err)
	}
}

// While a sync waits on a slow replica, appends (with their lease checks)
// still commit, and the next sync covers them: durability overlaps with
// work instead of stalling it.
func TestAppendsDoNotWaitForASyncInFlight(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	url := s3.URL("overlap/events")
	n := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "events.db"), SyncTimeout: 10 * time.Second})
	n.appendMany(t, ctx, "note", 0, 1)

	// Appends that waited for the sync would take the whole delay.
	s3.SetDelay(3 * time.Second)
	id := eventlog.MustStreamID("other")
	synced := n.syncInFlight(t, ctx, s3, id)

	const appends = 20
	for i := range appends {
		if err := n.w.Guard(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := n.store.Append(ctx, eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: id, Version: eventlog.Version(i + 1)}},
			Events:   []eventlog.Event{{Stream: id, Type: "Noted", Data: []byte(`{}`)}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-synced:
		t.Fatalf("the sync ended (%v) before %d appends made during it: they waited for it", err, appends)
	default:
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	s3.SetDelay(0)
	if err := n.w.Sync(ctx); err != nil { // covers the appends made during the first
		t.Fatal(err)
	}
	if err := n.close(ctx); err != nil {
		t.Fatal(err)
	}
	restored := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "restored.db")})
	if head, err := restored.store.Head(ctx); err != nil || head != 2+appends {
		t.Fatalf("restored head %d, %v; want %d", head, err, 2+appends)
	}
}

// Close within a deadline, while a sync waits on a slow replica: the sync
// in flight is ended (its caller is not acknowledged), Close keeps its
// deadline, and the lease is released, so that a successor takes over at
// once. A command still in flight afterwards cannot take the lease back.
func TestCloseKeepsItsDeadlineAndReleasesTheLease(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	url := s3.URL("slowclose/events")
	opts := replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "events.db"), SyncTimeout: 5 * time.Second, LeaseTTL: 30 * time.Second}
	n := mustNode(t, ctx, opts)
	n.appendMany(t, ctx, "note", 0, 1)
	// The sync in flight waits 3 s for the replica; requests made after it
	// are answered at once.
	s3.SetDelay(3 * time.Second)
	synced := n.syncInFlight(t, ctx, s3, eventlog.MustStreamID("other"))
	s3.SetDelay(0)
	const budget = time.Second
	deadline, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	began := time.Now()
	err := n.w.Close(deadline)
	// The sync in flight would hold Close for 3 s; a return a little past
	// the deadline is the scheduler, not a wait.
	if took := time.Since(began); took > budget+500*time.Millisecond {
		t.Fatalf("Close took %v, well over its deadline of %v (%v): it waited for the sync in flight", took, budget, err)
	}
	if err := <-synced; err == nil {
		t.Fatal("the sync Close ended was acknowledged")
	}
	if err := n.w.Guard(ctx); !errors.Is(err, eventlog.ErrNotWriter) {
		t.Fatalf("Guard after Close: %v, want ErrNotWriter (the lease must not be taken back)", err)
	}
	successor := opts
	successor.Path = filepath.Join(t.TempDir(), "successor.db")
	next := mustNode(t, ctx, successor) // fails the test if the lease is still held
	if head, err := next.store.Head(ctx); err != nil || head < 1 {
		t.Fatalf("the successor's log: head %d, %v", head, err)
	}
}
