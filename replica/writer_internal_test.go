package replica

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// gateLease holds every lease check until the test lets one through, so
// that a test can keep a sync running.
type gateLease struct{ gate chan struct{} }

func (g *gateLease) ensure(ctx context.Context, _ time.Duration) (bool, error) {
	select {
	case <-g.gate:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (g *gateLease) expiry() (until, renewFrom time.Time) { return time.Now(), time.Now() }
func (g *gateLease) release(context.Context) error        { return nil }

// A caller that gives up (its client hung up) while it leads a shared
// sync must not fail the other callers waiting on that sync.
func TestLeaderCancellationDoesNotFailOthers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{URL: "file://" + filepath.Join(dir, "replica"), Path: filepath.Join(dir, "a.db")}
	w, err := OpenWriter(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, opts.Path, sqlite.Options{NoAutoCheckpoint: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	g := &gateLease{gate: make(chan struct{})}
	w.lease = &lease{store: g, timeout: time.Minute}
	for round := range 5 {
		first := make(chan error, 1)
		go func() { first <- w.Sync(ctx) }()
		time.Sleep(10 * time.Millisecond) // first leads, held in its lease check
		leaving, cancel := context.WithCancel(ctx)
		left, healthy := make(chan error, 1), make(chan error, 1)
		go func() { left <- w.Sync(leaving) }()
		go func() { healthy <- w.Sync(ctx) }()
		time.Sleep(10 * time.Millisecond)
		g.gate <- struct{}{} // the first sync ends; one of the two leads next
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		cancel() // the leaving caller hangs up, perhaps while leading
		time.Sleep(10 * time.Millisecond)
		select {
		case g.gate <- struct{}{}:
		case <-time.After(time.Second):
		}
		if err := <-left; err != nil {
			t.Logf("round %d: the caller that hung up got %v", round, err) // its own cancellation, or nil if it led
		}
		var err error
		select {
		case err = <-healthy:
		case <-time.After(time.Second):
			g.gate <- struct{}{}
			err = <-healthy
		}
		if err != nil {
			t.Fatalf("round %d: a healthy caller failed because another hung up: %v", round, err)
		}
	}
}
