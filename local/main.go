// Command local runs the event log on this machine, with no cloud: it opens
// (creating if needed) the SQLite event log and reports its state.
//
// Configuration is read from the environment, with the names the Lambda
// functions use: EVENTCORE_DB (default ./data/events.db), EVENTCORE_SYNC
// (full or normal), EVENTCORE_JOURNAL (wal or truncate).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Error("local runner failed", "error", err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	path := envOr("EVENTCORE_DB", filepath.Join("data", "events.db"))
	var opts sqlite.Options
	var err error
	if v := os.Getenv("EVENTCORE_SYNC"); v != "" {
		if opts.Synchronous, err = sqlite.ParseSynchronous(v); err != nil {
			return fmt.Errorf("EVENTCORE_SYNC: %w", err)
		}
	}
	if v := os.Getenv("EVENTCORE_JOURNAL"); v != "" {
		if opts.Journal, err = sqlite.ParseJournal(v); err != nil {
			return fmt.Errorf("EVENTCORE_JOURNAL: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("EVENTCORE_DB: %w", err)
	}
	store, err := sqlite.Open(ctx, path, opts)
	if err != nil {
		return fmt.Errorf("EVENTCORE_DB: %w", err)
	}
	defer func() { _ = store.Close() }()
	head, err := store.Head(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("event log %s: %d events\n", path, head)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
