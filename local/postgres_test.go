package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/projection"
)

// pgEnv is an environment that puts everything in the PostgreSQL database
// at url; the SQLite variables point into an empty directory, which must
// stay empty.
func pgEnv(t *testing.T, url string, extra ...string) func(string) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		if m, _ := filepath.Glob(filepath.Join(dir, "*", "*")); len(m) > 0 {
			t.Errorf("PostgreSQL mode created SQLite files: %v", m)
		}
	})
	return testEnv(dir, append([]string{"EVENTCORE_DATABASE_URL", url}, extra...)...)
}

// The routes answer on PostgreSQL exactly as on SQLite.
func TestWalkThroughPostgres(t *testing.T) {
	walkThrough(t, pgEnv(t, pgtest.NewDatabase(t), "EVENTCORE_PROJECTION_INTERVAL", "1h"))
}

func TestRunErrorsPostgres(t *testing.T) {
	ready := func(string) { t.Error("ready called") }
	for _, tc := range []struct {
		env    []string
		prefix string
	}{
		{[]string{"EVENTCORE_DATABASE_URL", "mysql://u:secret@localhost/db"}, "EVENTCORE_DATABASE_URL: "},
		{[]string{"EVENTCORE_DATABASE_URL", "postgres://u:secret@localhost/db", "EVENTCORE_REPLICA_URL", "file:///tmp/r"}, "EVENTCORE_DATABASE_URL: "},
		// Nothing listens there: the connect budget runs out.
		{[]string{"EVENTCORE_DATABASE_URL", "postgres://u:secret@127.0.0.1:1/db?connect_timeout=1", "EVENTCORE_DATABASE_CONNECT_BUDGET", "300ms"}, "EVENTCORE_DATABASE_URL: "},
	} {
		start := time.Now()
		err := run(context.Background(), "127.0.0.1:0", testEnv(t.TempDir(), tc.env...), ready)
		if err == nil || !strings.HasPrefix(err.Error(), tc.prefix) || strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want one line starting %q without the password", tc.env, err, tc.prefix)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%v: failed after %v", tc.env, d)
		}
	}
}

// TestKillNinePostgres kills the runner with SIGKILL at random moments
// while clients send commands, with the log and the read models in
// PostgreSQL: after each restart every acknowledged command is in the log
// once, positions run without a gap, and once the projections have caught
// up, the read models equal a replay of the whole log into a fresh
// database (no event applied twice or skipped across the crashes).
func TestKillNinePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	if runtime.GOOS == "windows" {
		t.Skip("SIGKILL")
	}
	url := pgtest.NewDatabase(t)
	bin := buildRunner(t)
	env := []string{"EVENTCORE_DATABASE_URL=" + url, "EVENTCORE_PROJECTION_INTERVAL=20ms", "EVENTCORE_PROJECTION_BATCH=7"}
	p, all := crashRounds(t, bin, env)
	// A lease the killed runner held blocks its projection until it
	// expires.
	eventually(t, projection.DefaultLeaseTTL+20*time.Second, "projections caught up", func() bool {
		a := do(t, "GET", p.url+"/projections", "")
		return a.status == 200 && strings.Count(a.body, `"lag":0`) == 2
	})
	stopCleanly(t, p)

	ctx := context.Background()
	store, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	for _, a := range all {
		records, found, err := store.LookupCommand(ctx, a.key)
		if err != nil || !found || len(records) != len(a.positions) {
			t.Fatalf("LookupCommand(%s): %d records, %v, %v", a.key, len(records), found, err)
		}
	}
	crashed, err := postgres.OpenDB(ctx, url, postgres.DBOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = crashed.Close() }()

	// The replay: the same projections over the same log, in SQLite.
	replayed, err := sql.Open("sqlite", sqlite.Options{}.DSN(filepath.Join(t.TempDir(), "replay.db"), "immediate"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = replayed.Close() }()
	r, err := projection.NewRunner(ctx, replayed, store, projection.Options{}, bank.Balances{}, bank.History{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CatchUpAll(ctx); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`SELECT account, balance, position FROM bank_balances ORDER BY account`,
		`SELECT account, position, type, amount, balance, COALESCE(counterparty, ''), recorded_at FROM bank_history ORDER BY account, position`,
	} {
		got, want := dump(t, crashed, q), dump(t, replayed, q)
		if len(want) < crashWorkers {
			t.Fatalf("the replay has only %d rows for %s", len(want), q)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d rows after the crashes, %d in the replay", q, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: row %d is %s after the crashes, %s in the replay", q, i, got[i], want[i])
			}
		}
	}
	t.Logf("%d acknowledged commands; read models equal their replay", len(all))
}

// dump returns the rows of q, each formatted as one string.
func dump(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = string(b)
			}
		}
		out = append(out, fmt.Sprint(vals...))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
