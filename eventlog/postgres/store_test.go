package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/eventlogtest"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
)

func TestConformance(t *testing.T) {
	configs := []struct {
		name string
		opts postgres.Options
	}{
		{"Default", postgres.Options{}},
		{"OneWriterNoBatch", postgres.Options{Writers: 1, MaxBatch: 1, MaxConns: 3}},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			eventlogtest.Run(t, func(t *testing.T) eventlog.Store {
				return openStore(t, pgtest.NewDatabase(t), c.opts)
			})
		})
	}
}

// openStore opens the store at url and closes it when the test ends.
func openStore(t testing.TB, url string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func sid(s string) eventlog.StreamID { return eventlog.MustStreamID(s) }

func appendOne(t testing.TB, s eventlog.Store, st eventlog.StreamID, v eventlog.Version, commandID string) eventlog.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), eventlog.AppendRequest{
		Expected:  []eventlog.ExpectedVersion{{Stream: st, Version: v}},
		Events:    []eventlog.Event{{Stream: st, Type: "E", Data: json.RawMessage(`{}`)}},
		CommandID: commandID,
	})
	if err != nil {
		t.Fatalf("Append to %s at %d: %v", st, v, err)
	}
	return res
}

func TestEventsAreImmutable(t *testing.T) {
	s := openStore(t, pgtest.NewDatabase(t), postgres.Options{})
	appendOne(t, s, sid("order-1"), 0, "cmd-1")
	for _, stmt := range []string{
		`UPDATE events SET type = 'Changed'`,
		`UPDATE events SET data = '{"forged":true}'`,
		`DELETE FROM events`,
		`TRUNCATE events`,
		`TRUNCATE events CASCADE`,
		`UPDATE commands SET first_position = 7`,
		`DELETE FROM commands`,
		`TRUNCATE commands`,
		`DELETE FROM log_head`,
	} {
		if _, err := s.Pool().Exec(context.Background(), stmt); err == nil {
			t.Errorf("%s: succeeded, want an error", stmt)
		}
	}
	var n int
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = 'E' AND data::text = '{}'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("events after the attempts: %d, %v; want the one event unchanged", n, err)
	}
	recs, found, err := s.LookupCommand(context.Background(), "cmd-1")
	if err != nil || !found || len(recs) != 1 {
		t.Errorf("LookupCommand after the attempts: %v, %v, %v", recs, found, err)
	}
}

func TestSnapshots(t *testing.T) {
	s := openStore(t, pgtest.NewDatabase(t), postgres.Options{})
	ctx := context.Background()
	if _, found, err := s.LoadSnapshot(ctx, "k"); err != nil || found {
		t.Fatalf("LoadSnapshot of nothing: %v, %v", found, err)
	}
	a, b := sid("a"), sid("b")
	save := func(va, vb eventlog.Version, state string) {
		t.Helper()
		err := s.SaveSnapshot(ctx, eventlog.Snapshot{Key: "k", Streams: []eventlog.ExpectedVersion{{Stream: a, Version: va}, {Stream: b, Version: vb}}, State: []byte(state)})
		if err != nil {
			t.Fatalf("SaveSnapshot: %v", err)
		}
	}
	load := func() eventlog.Snapshot {
		t.Helper()
		snap, found, err := s.LoadSnapshot(ctx, "k")
		if err != nil || !found {
			t.Fatalf("LoadSnapshot: %v, %v", found, err)
		}
		return snap
	}
	save(2, 3, "five")
	save(1, 1, "two") // older: ignored
	if got := load(); string(got.State) != "five" || got.Streams[0] != (eventlog.ExpectedVersion{Stream: a, Version: 2}) || got.Streams[1].Version != 3 {
		t.Errorf("snapshot %+v, want the one at 2,3", got)
	}
	save(4, 3, "seven")
	if got := load(); string(got.State) != "seven" {
		t.Errorf("snapshot state %q, want seven", got.State)
	}
	for _, bad := range []eventlog.Snapshot{{}, {Key: "k"}, {Key: "k", Streams: []eventlog.ExpectedVersion{{}}}} {
		if err := s.SaveSnapshot(ctx, bad); !errors.Is(err, eventlog.ErrInvalid) {
			t.Errorf("SaveSnapshot(%+v): %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := s.LoadSnapshot(ctx, ""); !errors.Is(err, eventlog.ErrInvalid) {
		t.Errorf("LoadSnapshot(\"\"): %v, want ErrInvalid", err)
	}
	_ = s.Close()
	if _, _, err := s.LoadSnapshot(ctx, "k"); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("LoadSnapshot after Close: %v", err)
	}
	if err := s.SaveSnapshot(ctx, eventlog.Snapshot{Key: "k", Streams: []eventlog.ExpectedVersion{{Stream: a}}}); !errors.Is(err, eventlog.ErrClosed) {
		t.Errorf("SaveSnapshot after Close: %v", err)
	}
}

// TestConcurrentMigrations opens one new database from many goroutines at
// once: every Open succeeds and the schema is applied once.
func TestConcurrentMigrations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	const n = 8
	var wg sync.WaitGroup
	stores := make([]*postgres.Store, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			stores[i], errs[i] = postgres.Open(context.Background(), url, postgres.Options{MaxConns: 3})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer func() { _ = stores[i].Close() }()
	}
	var rows int
	if err := stores[0].Pool().QueryRow(context.Background(), `SELECT count(*) FROM eventlog_schema`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("eventlog_schema rows: %d, %v", rows, err)
	}
	appendOne(t, stores[3], sid("s"), 0, "")
	appendOne(t, stores[5], sid("s"), 1, "")
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		url  string
		opts postgres.Options
	}{
		{"mysql://localhost/db", postgres.Options{}},
		{"host=localhost dbname=x", postgres.Options{}},
		{"postgres://localhost/db", postgres.Options{Writers: 8, MaxConns: 8}},
		{"postgres://localhost/db", postgres.Options{MaxBatch: -1}},
	} {
		if s, err := postgres.Open(ctx, tc.url, tc.opts); err == nil {
			_ = s.Close()
			t.Errorf("Open(%q, %+v) succeeded", tc.url, tc.opts)
		}
	}
	// A server that is not there: retried until the budget is spent.
	start := time.Now()
	_, err := postgres.Open(ctx, "postgres://u:secret@127.0.0.1:1/db?connect_timeout=1", postgres.Options{ConnectBudget: 700 * time.Millisecond})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Open of a closed port: %v (must fail and not show the password)", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("Open of a closed port gave up after %v, want about the 700ms budget", d)
	}
	// A missing database is not retried.
	server := pgtest.ServerURL(t)
	start = time.Now()
	if _, err := postgres.Open(ctx, pgtest.WithDatabase(t, server, "no_such_database"), postgres.Options{}); err == nil {
		t.Error("Open of a missing database succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open of a missing database took %v: retried an error that cannot go away", d)
	}
}
