package lagprobe_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/internal/lagprobe"
	"github.com/eventcore-go/eventcore/projection"
)

// Before the catch-up both events of the log are behind, and as old as
// they are; after it nothing is.
func TestProbeSeesTheLag(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	eventsDB, readDB := filepath.Join(dir, "events.db"), filepath.Join(dir, "read.db")
	store, err := sqlite.Open(ctx, eventsDB, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	for _, cmd := range []bank.Command{bank.OpenAccount{Account: "a", Owner: "A"}, bank.Deposit{Account: "a", Amount: 5}} {
		if _, err := bank.Execute(ctx, store, cmd, executor.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	written := time.Now()
	db, err := sql.Open("sqlite", sqlite.Options{}.ReadModelDSN(readDB))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	runner, err := projection.NewRunner(ctx, db, store, projection.Options{}, bank.Balances{}, bank.History{})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{bank.ProjectionBalances, bank.ProjectionHistory}

	probe, err := lagprobe.Start(eventsDB, readDB, names, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	before, err := probe.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if before.MaxEvents != 2 || before.MaxAge < 30*time.Millisecond || before.MaxAge > time.Since(written)+time.Second || before.Samples < 1 {
		t.Errorf("before the catch-up: %+v, want 2 events at least 30ms old", before)
	}

	if _, err := runner.CatchUpAll(ctx); err != nil {
		t.Fatal(err)
	}
	probe, err = lagprobe.Start(eventsDB, readDB, names, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	after, err := probe.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if after.MaxEvents != 0 || after.MaxAge != 0 || after.Samples < 1 {
		t.Errorf("after the catch-up: %+v, want no lag", after)
	}
}

// Before the files exist, nothing is behind; the probe neither fails nor
// creates them.
func TestProbeBeforeTheFilesExist(t *testing.T) {
	dir := t.TempDir()
	eventsDB, readDB := filepath.Join(dir, "events.db"), filepath.Join(dir, "read.db")
	probe, err := lagprobe.Start(eventsDB, readDB, []string{"balances"}, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	figures, err := probe.Stop()
	if err != nil || figures.MaxEvents != 0 || figures.Samples < 1 {
		t.Fatalf("before the files exist: %+v, %v; want no lag and no error", figures, err)
	}
	for _, path := range []string{eventsDB, readDB} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; the probe must not create it", path, err)
		}
	}
}
