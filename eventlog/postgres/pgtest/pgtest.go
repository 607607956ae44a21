// Package pgtest gives tests a fresh PostgreSQL database on the server
// named by EVENTCORE_TEST_POSTGRES_URL.
//
// Without the variable a test skips with one line saying how to run it;
// under CI=true it fails instead, so that CI never passes by skipping.
// `make test-postgres` (or .ci/postgres run CMD) starts a throw-away server
// and sets the variable.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the environment variable naming the test server: a
// postgres:// URL of a superuser (or a role allowed to create databases).
const EnvURL = "EVENTCORE_TEST_POSTGRES_URL"

var counter atomic.Int64

// ServerURL returns the test server's URL, or skips (fails under CI=true)
// when EnvURL is not set.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		msg := "PostgreSQL tests need " + EnvURL + "; run `make test-postgres` or `.ci/postgres run go test ./...`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return u
}

// NewDatabase creates an empty database with a unique name and returns its
// URL; the database is dropped when the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL(t)
	name := fmt.Sprintf("eventcore_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1_000_000_000, counter.Add(1))
	admin(t, server, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		admin(t, server, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return WithDatabase(t, server, name)
}

// WithDatabase returns server's URL pointing at database name.
func WithDatabase(t testing.TB, server, name string) string {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("%s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

func admin(t testing.TB, server, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatalf("connect to %s: %v", EnvURL, err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, sql); err != nil && !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("%s: %v", sql, err)
	}
}

// WaitForLockWaiters returns once at least n sessions of the database at
// databaseURL wait for a lock while running a statement that contains
// query ("" for any): the point by which a test's transaction is blocked
// behind one it holds. A fixed sleep guesses that point, and a loaded
// machine outlasts the guess. It fails the test after 30 s.
func WaitForLockWaiters(t testing.TB, databaseURL string, n int, query string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("connect to look for lock waiters: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	seen := 0 // at the last look
	for {
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND strpos(query, $1) > 0`, query).Scan(&seen)
		if err != nil {
			t.Fatalf("waiting for %d sessions to wait for a lock (%d did at the last look): %v", n, seen, err)
		}
		if seen >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
