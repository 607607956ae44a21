package replica_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/eventcore-go/eventcore/replica"
)

// countWriter counts the bytes written to it.
type countWriter struct{ n atomic.Int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

func TestRestoreReportsItsProgress(t *testing.T) {
	ctx := context.Background()
	url := fileURL(t)
	path := filepath.Join(t.TempDir(), "events.db")
	var calls int
	var total int64
	var read countWriter
	var ended []error
	opts := replica.Options{URL: url, Path: path, RestoreProgress: func(p string, n int64) (io.Writer, func(error)) {
		calls++
		if p != path {
			t.Errorf("progress of %q, want %q", p, path)
		}
		total = n
		return &read, func(err error) { ended = append(ended, err) }
	}}
	n := mustNode(t, ctx, opts)
	if calls != 0 {
		t.Fatalf("a new replica (nothing to restore) reported %d restores", calls)
	}
	n.appendMany(t, ctx, "note-a", 0, 50)
	if err := n.close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		_ = os.Remove(p)
	}
	_ = os.RemoveAll(filepath.Join(filepath.Dir(path), ".events.db-litestream"))

	n = mustNode(t, ctx, opts)
	if head, err := n.store.Head(ctx); err != nil || head != 50 {
		t.Fatalf("head after restore = %d, %v; want 50", head, err)
	}
	if calls != 1 || len(ended) != 1 || ended[0] != nil {
		t.Fatalf("restore reported %d starts and ends %v; want one of each, without error", calls, ended)
	}
	// The replica's files are read whole (headers, pages, trailers), once
	// each from a file replica: the bytes read are the listed total.
	if total <= 0 || read.n.Load() != total {
		t.Fatalf("read %d of %d bytes", read.n.Load(), total)
	}
}
