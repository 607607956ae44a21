package replica_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/eventlogtest"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/replica"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

func feed(t *testing.T, ctx context.Context, s eventlog.Store) []eventlog.Record {
	t.Helper()
	recs, err := s.ReadFeed(ctx, eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func sameFeed(t *testing.T, ctx context.Context, want, got eventlog.Store) {
	t.Helper()
	w, g := feed(t, ctx, want), feed(t, ctx, got)
	if len(w) != len(g) {
		t.Fatalf("follower has %d events, writer %d", len(g), len(w))
	}
	for i := range w {
		if w[i].Position != g[i].Position || w[i].Stream != g[i].Stream || w[i].Version != g[i].Version || string(w[i].Data) != string(g[i].Data) {
			t.Fatalf("event %d differs: writer %+v, follower %+v", i, w[i], g[i])
		}
	}
}

func TestFollowerCatchesUpIncrementally(t *testing.T) {
	for name, newURL := range replicas(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			url := newURL(t)
			fpath := filepath.Join(t.TempDir(), "follower.db")
			// Before the writer exists the replica is empty: the log reads empty.
			f, err := replica.OpenFollower(ctx, replica.Options{URL: url, Path: fpath}, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			if h, err := f.Head(ctx); err != nil || h != 0 {
				t.Fatalf("empty replica: head %d, %v", h, err)
			}
			w := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "events.db")})
			w.appendMany(t, ctx, "note-a", 0, 10)
			if _, err := f.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			sameFeed(t, ctx, w.store, f)
			full, _ := f.Stats()
			if full != 1 {
				t.Fatalf("full restores = %d, want 1", full)
			}
			// Each synced append is one level-0 file; the follower applies
			// exactly those, without restoring again.
			w.appendMany(t, ctx, "note-b", 10, 25)
			n, err := f.CatchUp(ctx)
			if err != nil {
				t.Fatal(err)
			}
			full, incr := f.Stats()
			if full != 1 || n != 15 || incr != 15 {
				t.Fatalf("after 15 more appends: applied %d (total %d), full restores %d; want 15 incremental, 1 full", n, incr, full)
			}
			sameFeed(t, ctx, w.store, f)
			if n, err := f.CatchUp(ctx); err != nil || n != 0 {
				t.Fatalf("nothing new: applied %d, %v", n, err)
			}
			if _, err := f.Append(ctx, eventlog.AppendRequest{}); err != sqlite.ErrReadOnly {
				t.Fatalf("follower append: %v", err)
			}
			// The restored copy is a sound database.
			var ok string
			if vs := eventlogtest.CheckLog(t, feed(t, ctx, f)); len(vs) != 2 {
				t.Fatalf("streams %v", vs)
			}
			s, err := sqlite.OpenReadOnly(ctx, fpath, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			if err := s.DB().QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
				t.Fatalf("integrity_check: %q %v", ok, err)
			}
		})
	}
}

// When the level-0 files the follower needs are gone (compacted and
// deleted by retention), it restores fully instead of skipping history.
func TestFollowerRestoresFullyAcrossAGap(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "replica")
	url := "file://" + dir
	w := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "events.db")})
	w.appendMany(t, ctx, "note-a", 0, 5)
	f, err := replica.OpenFollower(ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "f.db")}, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	w.appendMany(t, ctx, "note-a", 5, 10)
	if err := w.w.Maintain(ctx); err != nil { // compacts level 0 into level 1
		t.Fatal(err)
	}
	l0 := filepath.Join(dir, "ltx", "0")
	entries, err := os.ReadDir(l0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries { // what retention would do after five minutes
		if err := os.Remove(filepath.Join(l0, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.appendOne(ctx, "note-a", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if full, _ := f.Stats(); full != 2 {
		t.Fatalf("full restores = %d, want 2 (the gap forced one)", full)
	}
	sameFeed(t, ctx, w.store, f)
}

// A full restore that fails (a damaged replica file) leaves the follower
// failing its reads, not showing an empty log, and the next CatchUp after
// the replica is repaired restores it.
func TestFollowerFailedRestoreFailsReads(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "replica")
	w := mustNode(t, ctx, replica.Options{URL: "file://" + dir, Path: filepath.Join(t.TempDir(), "events.db")})
	w.appendMany(t, ctx, "note-a", 0, 5)
	f, err := replica.OpenFollower(ctx, replica.Options{URL: "file://" + dir, Path: filepath.Join(t.TempDir(), "f.db")}, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	w.appendMany(t, ctx, "note-a", 5, 7)
	if err := w.w.Maintain(ctx); err != nil { // compacted into the higher levels
		t.Fatal(err)
	}
	// Level 0 is gone (a gap behind the next file) and every compacted
	// file is damaged.
	if err := os.RemoveAll(filepath.Join(dir, "ltx", "0")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.appendOne(ctx, "note-a", 7); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "ltx", "*", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no compacted files: %v", err)
	}
	good := map[string][]byte{}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		good[p] = b
		if err := os.WriteFile(p, b[:len(b)/2], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.CatchUp(ctx); err == nil {
		t.Fatal("CatchUp over a damaged replica succeeded")
	}
	if h, err := f.Head(ctx); !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("Head after a failed restore = %d, %v; want ErrUnavailable", h, err)
	}
	if _, err := f.CatchUp(ctx); err == nil { // still damaged: fails again, no panic
		t.Fatal("second CatchUp over a damaged replica succeeded")
	}
	for p, b := range good {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := f.Head(ctx); err != nil || h != 8 {
		t.Fatalf("Head after the repair = %d, %v; want 8", h, err)
	}
}

// Reads of the follower's copy go on while a catch-up waits on a slow
// replica: only applying the new files holds them back.
func TestFollowerReadsDuringCatchUp(t *testing.T) {
	ctx := context.Background()
	s3 := replicatest.StartS3(t)
	url := s3.URL("follow/events")
	w := mustNode(t, ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "w.db")})
	w.appendMany(t, ctx, "note", 0, 2)
	f, err := replica.OpenFollower(ctx, replica.Options{URL: url, Path: filepath.Join(t.TempDir(), "f.db")}, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	w.appendMany(t, ctx, "note", 2, 3)

	s3.SetDelay(3 * time.Second)
	caught := make(chan error, 1)
	go func() {
		_, err := f.CatchUp(ctx)
		caught <- err
	}()
	s3.WaitHeld(t) // the catch-up lists the replica, slowly
	began := time.Now()
	if head, err := f.Head(ctx); err != nil || head != 2 {
		t.Fatalf("a read during the catch-up: head %d, %v; want the copy's 2", head, err)
	}
	// Every request to the replica takes 3 s; a read that waited for one
	// took at least half of that.
	if took := time.Since(began); took > 1500*time.Millisecond {
		t.Fatalf("a read during the catch-up took %v: it waited for the replica", took)
	}
	s3.SetDelay(0) // the rest of the catch-up need not be slow
	if err := <-caught; err != nil {
		t.Fatal(err)
	}
	if head, err := f.Head(ctx); err != nil || head != 3 {
		t.Fatalf("after the catch-up: head %d, %v; want 3", head, err)
	}
}
