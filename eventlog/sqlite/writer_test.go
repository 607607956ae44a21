package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// When another process holds the write lock past the busy timeout, every
// queued append fails together with that error: the writer does not retry
// them one by one, each waiting the timeout again, while their callers
// cannot leave. Nothing is written.
func TestLockedFileFailsTheWholeBatchOnce(t *testing.T) {
	path := newPath(t)
	opts := sqlite.Options{BusyTimeout: 300 * time.Millisecond}
	s := openStore(t, path, opts)

	other, err := sql.Open("sqlite", opts.DSN(path, "immediate"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	other.SetMaxOpenConns(1)
	lock, err := other.Begin() // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}

	const appends = 20
	errs := make([]error, appends)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range appends {
		wg.Go(func() {
			stream := eventlog.MustStreamID("s")
			_, errs[i] = s.Append(context.Background(), eventlog.AppendRequest{
				Expected: []eventlog.ExpectedVersion{{Stream: stream}},
				Events:   []eventlog.Event{{Stream: stream, Type: "T", Data: []byte(`{}`)}},
			})
		})
	}
	wg.Wait()
	took := time.Since(start)
	_ = lock.Rollback()

	for i, err := range errs {
		if err == nil || errors.Is(err, eventlog.ErrConflict) {
			t.Fatalf("append %d: %v, want the lock's error", i, err)
		}
	}
	// One by one they would take at least appends x 300ms = 6s.
	if took > 3*time.Second {
		t.Errorf("%d appends against a locked file took %v: they were retried one by one", appends, took)
	}
	if head, err := s.Head(context.Background()); err != nil || head != 0 {
		t.Fatalf("head %d (%v) after failed appends", head, err)
	}
}
