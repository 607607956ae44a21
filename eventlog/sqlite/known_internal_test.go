package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

func openTwo(t *testing.T) (a, b *Store) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.db")
	var err error
	if a, err = Open(context.Background(), path, Options{Synchronous: SyncNormal}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if b, err = Open(context.Background(), path, Options{Synchronous: SyncNormal}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return a, b
}

func appendAt(s *Store, stream string, expected eventlog.Version) (eventlog.AppendResult, error) {
	id := eventlog.MustStreamID(stream)
	return s.Append(context.Background(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: id, Version: expected}},
		Events:   []eventlog.Event{{Stream: id, Type: "E", Data: []byte(`{}`)}},
	})
}

func versionOf(t *testing.T, s *Store, stream string) eventlog.Version {
	t.Helper()
	v, err := s.ProbeVersions(context.Background(), []eventlog.StreamID{eventlog.MustStreamID(stream)})
	if err != nil {
		t.Fatal(err)
	}
	return v[0]
}

// The versions this process committed are answered from memory: with the
// readers closed, a probe of a stream the process wrote still answers,
// and one of a stream it never wrote goes to the database (and fails).
func TestProbesOfWrittenStreamsNeedNoQuery(t *testing.T) {
	a, _ := openTwo(t)
	for v := range eventlog.Version(3) {
		if _, err := appendAt(a, "mine", v); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.read.Close(); err != nil {
		t.Fatal(err)
	}
	if got := versionOf(t, a, "mine"); got != 3 {
		t.Fatalf("version of a written stream %d, want 3", got)
	}
	if _, err := a.ProbeVersions(context.Background(), []eventlog.StreamID{eventlog.MustStreamID("mine"), eventlog.MustStreamID("other")}); err == nil {
		t.Fatal("a probe that includes a stream this process never wrote did not ask the database")
	}
}

// StreamVersions itself never answers from memory: right after another
// process appended, it sees the append, where a probe may not.
func TestStreamVersionsReadsTheDatabase(t *testing.T) {
	a, b := openTwo(t)
	for v := range eventlog.Version(3) {
		if _, err := appendAt(a, "mine", v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := appendAt(b, "mine", 3); err != nil {
		t.Fatal(err)
	}
	v, err := a.StreamVersions(context.Background(), []eventlog.StreamID{eventlog.MustStreamID("mine")})
	if err != nil || v[0] != 4 {
		t.Fatalf("StreamVersions %v %v right after another process appended; want 4", v, err)
	}
}

// Another process's write makes what this one knows stale: that costs a
// refused append (never a wrong write), after which the stream is asked of
// the database; and this process's next commit, which sees the other
// writer, forgets everything it knew.
func TestStaleKnowledgeCostsARetryNeverAWrongWrite(t *testing.T) {
	a, b := openTwo(t)
	if _, err := appendAt(a, "s", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := appendAt(a, "t", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := appendAt(b, "s", 1); err != nil { // the other process
		t.Fatal(err)
	}
	if _, err := appendAt(b, "t", 1); err != nil {
		t.Fatal(err)
	}
	stale := versionOf(t, a, "s")
	if stale != 1 && stale != 2 {
		t.Fatalf("version %d", stale)
	}
	if stale == 1 {
		_, err := appendAt(a, "s", stale)
		if !errors.Is(err, eventlog.ErrConflict) {
			t.Fatalf("an append on stale knowledge: %v, want a conflict", err)
		}
	}
	if got := versionOf(t, a, "s"); got != 2 {
		t.Fatalf("after the refused append the version is %d, want the database's 2", got)
	}
	// a's next commit that checks (at most every dataVersionEvery) sees
	// b's writes and forgets t's stale version too.
	time.Sleep(dataVersionEvery)
	if _, err := appendAt(a, "u", 0); err != nil {
		t.Fatal(err)
	}
	if got := versionOf(t, a, "t"); got != 2 {
		t.Fatalf("after a commit that saw another writer, t's version is %d, want 2", got)
	}
}

// A probe never answers below a version this process's readers could
// already see: a commit becomes visible to readers before the writer
// records its versions, so the writer forgets the batch's streams first.
// One goroutine appends while others read the stream's new events from the
// database and then probe it.
func TestProbesNeverLagTheProcessOwnCommits(t *testing.T) {
	a, _ := openTwo(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stream := eventlog.MustStreamID("hot")
	const appends, readers = 500, 4
	var wg sync.WaitGroup
	var appending atomic.Bool
	var overlapped atomic.Int64 // probes made while appends went on
	appending.Store(true)
	wg.Go(func() {
		defer stop()
		defer appending.Store(false)
		for v := range eventlog.Version(appends) {
			if _, err := appendAt(a, "hot", v); err != nil {
				if ctx.Err() == nil {
					t.Error(err)
				}
				return
			}
		}
	})
	for range readers {
		wg.Go(func() {
			var seen eventlog.Version
			for ctx.Err() == nil {
				for r, err := range a.ReadStream(ctx, stream, seen) {
					if err != nil {
						if ctx.Err() == nil {
							t.Error(err)
						}
						return
					}
					seen = r.Version
				}
				probed, err := a.ProbeVersions(ctx, []eventlog.StreamID{stream})
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				if probed[0] < seen {
					t.Errorf("probe answered %d after a read saw version %d", probed[0], seen)
					stop()
					return
				}
				if appending.Load() {
					overlapped.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := overlapped.Load(); n < 10 && !t.Failed() {
		t.Fatalf("only %d probes ran beside the appends: the test checked nothing", n)
	}
}

// A command sent again answers the records of its first commit; they must
// not take what a process knows of the stream back to that version,
// whether it knew the stream or not (then committed must not record
// them). committing skips them too, but that only saves a query.
func TestRepeatedCommandLeavesKnownVersions(t *testing.T) {
	a, b := openTwo(t)
	ctx := context.Background()
	id := eventlog.MustStreamID("s")
	req := eventlog.AppendRequest{
		Expected:  []eventlog.ExpectedVersion{{Stream: id, Version: 0}},
		Events:    []eventlog.Event{{Stream: id, Type: "E", Data: []byte(`{}`)}},
		CommandID: "once",
	}
	if _, err := a.Append(ctx, req); err != nil {
		t.Fatal(err)
	}
	for v := eventlog.Version(1); v < 5; v++ {
		if _, err := appendAt(a, "s", v); err != nil {
			t.Fatal(err)
		}
	}
	// Sent again to this process, which knows the stream, and to another
	// (b), which does not.
	for _, s := range []*Store{a, b} {
		again, err := s.Append(ctx, req)
		if err != nil || !again.Duplicate {
			t.Fatalf("the repeated command: %+v, %v; want its first records, Duplicate", again, err)
		}
		if got := versionOf(t, s, "s"); got != 5 {
			t.Fatalf("probe after a repeated command: %d, want 5", got)
		}
	}
}
