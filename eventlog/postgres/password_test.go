package postgres_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
)

// Options.Password is asked for each new connection of the store and of
// OpenDB, and its error fails the connection.
func TestPasswordHook(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := context.Background()
	var calls atomic.Int64
	password := func(context.Context) (string, error) { calls.Add(1); return "token", nil }
	s, err := postgres.Open(ctx, url, postgres.Options{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if calls.Load() == 0 {
		t.Error("the store connected without asking for the password")
	}
	before := calls.Load()
	db, err := postgres.OpenDB(ctx, url, postgres.DBOptions{Password: password})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if calls.Load() == before {
		t.Error("OpenDB connected without asking for the password")
	}

	boom := errors.New("no credentials")
	failing := func(context.Context) (string, error) { return "", boom }
	if _, err := postgres.Open(ctx, url, postgres.Options{Password: failing, ConnectBudget: 1}); !errors.Is(err, boom) {
		t.Errorf("Open with a failing password: %v, want it wrapped", err)
	}
	if _, err := postgres.OpenDB(ctx, url, postgres.DBOptions{Password: failing, ConnectBudget: 1}); !errors.Is(err, boom) {
		t.Errorf("OpenDB with a failing password: %v, want it wrapped", err)
	}
}
