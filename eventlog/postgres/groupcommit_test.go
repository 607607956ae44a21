package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
)

// holdStream locks stream's row FOR UPDATE in a transaction of its own,
// so that appends to it wait; release ends the transaction.
func holdStream(t *testing.T, s *postgres.Store, stream string) (tx pgx.Tx, release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM streams WHERE stream_id = $1 FOR UPDATE`, stream); err != nil {
		t.Fatal(err)
	}
	return tx, func() { _ = tx.Rollback(ctx) }
}

// waitForLockWait waits until n appends of s's database wait for a lock.
func waitForLockWait(t *testing.T, s *postgres.Store, n int) {
	t.Helper()
	pgtest.WaitForLockWaiters(t, s.Pool().Config().ConnString(), n, "eventlog_append")
}

// TestBatchConflictRefusesOnlyItsOwn queues appends while the one writer
// is busy, so that they are committed in one batch: of ten appends at the
// same version of one stream exactly one is recorded, the others are
// refused with a ConflictError, and appends to other streams in the same
// batch are recorded, all in one transaction.
func TestBatchConflictRefusesOnlyItsOwn(t *testing.T) {
	s := openStore(t, pgtest.NewDatabase(t), postgres.Options{Writers: 1})
	appendOne(t, s, sid("blocker"), 0, "")
	_, release := holdStream(t, s, "blocker")

	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { appendOne(t, s, sid("blocker"), 1, "") })
	waitForLockWait(t, s, 1)

	const racing, others = 10, 5
	errs := make([]error, racing+others)
	results := make([]eventlog.AppendResult, racing+others)
	for i := range racing + others {
		st := sid("contended")
		if i >= racing {
			st = sid(fmt.Sprintf("other-%d", i))
		}
		wg.Go(func() {
			results[i], errs[i] = s.Append(ctx, eventlog.AppendRequest{
				Expected:  []eventlog.ExpectedVersion{{Stream: st, Version: 0}},
				Events:    []eventlog.Event{{Stream: st, Type: "E", Data: json.RawMessage(`{}`)}},
				CommandID: fmt.Sprintf("cmd-%d", i),
			})
		})
	}
	// Every append queues behind the blocked one.
	for deadline := time.Now().Add(30 * time.Second); postgres.QueuedAppends(s) < racing+others; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d appends queued within 30s", postgres.QueuedAppends(s), racing+others)
		}
		time.Sleep(2 * time.Millisecond)
	}
	release()
	wg.Wait()

	recorded := 0
	for i, err := range errs {
		var conflict *eventlog.ConflictError
		switch {
		case err == nil:
			if i < racing {
				recorded++
			}
		case i < racing && errors.As(err, &conflict):
			if len(conflict.Conflicts) != 1 || conflict.Conflicts[0].Actual != 1 {
				t.Errorf("append %d: conflict %+v, want contended at 1", i, conflict.Conflicts)
			}
		default:
			t.Errorf("append %d: %v", i, err)
		}
	}
	if recorded != 1 {
		t.Errorf("%d of %d racing appends recorded, want 1", recorded, racing)
	}
	var txs int
	if err := s.Pool().QueryRow(ctx, `SELECT count(DISTINCT xmin::text) FROM events WHERE stream_id <> 'blocker'`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	if txs != 1 {
		t.Errorf("the queued appends were committed in %d transactions, want one batch", txs)
	}
	var commands int
	if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM commands`).Scan(&commands); err != nil || commands != 1+others {
		t.Errorf("%d command ids recorded (%v), want %d: a refused append must not record its id", commands, err, 1+others)
	}
}

// TestDeadlockIsRetried makes PostgreSQL abort an append with a deadlock:
// a transaction holds b and then asks for a while the append holds a and
// waits for b. The append's backend detects the cycle (the other
// transaction waits longer before it looks), the batch is run again and
// the append succeeds.
func TestDeadlockIsRetried(t *testing.T) {
	s := openStore(t, pgtest.NewDatabase(t), postgres.Options{Writers: 1})
	ctx := context.Background()
	a, b := sid("a"), sid("b")
	appendOne(t, s, a, 0, "")
	appendOne(t, s, b, 0, "")
	deadlocks := func() int64 {
		var n int64
		if err := s.Pool().QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()

	tx, release := holdStream(t, s, "b")
	defer release()
	if _, err := tx.Exec(ctx, `SET LOCAL deadlock_timeout = '60s'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: a, Version: 1}, {Stream: b, Version: 1}},
			Events:   []eventlog.Event{{Stream: a, Type: "E", Data: json.RawMessage(`{}`)}, {Stream: b, Type: "E", Data: json.RawMessage(`{}`)}},
		})
		done <- err
	}()
	waitForLockWait(t, s, 1)
	// Blocks until the append's backend breaks the cycle by aborting.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM streams WHERE stream_id = 'a' FOR UPDATE`); err != nil {
		t.Fatalf("the other side of the deadlock was aborted instead: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("Append after a deadlock: %v, want it retried", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for deadlocks() == before && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if deadlocks() == before {
		t.Error("pg_stat_database counted no deadlock: the test did not provoke one")
	}
	requireVersions(t, s, []eventlog.StreamID{a, b}, []eventlog.Version{2, 2})
}

func requireVersions(t *testing.T, s eventlog.Store, streams []eventlog.StreamID, want []eventlog.Version) {
	t.Helper()
	got, err := s.StreamVersions(context.Background(), streams)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("stream %s at version %d, want %d", streams[i], got[i], want[i])
		}
	}
}

// TestContention runs two stores (two pools, as two processes would) on
// one database, each with several writers and large batches, and many
// goroutines appending to random subsets of a few streams, written and
// read-only, named in random order: every append either succeeds or is
// refused with a ConflictError (no deadlock or other error surfaces), and
// the log stays gapless.
func TestContention(t *testing.T) {
	url := pgtest.NewDatabase(t)
	stores := []*postgres.Store{
		openStore(t, url, postgres.Options{Writers: 4, MaxConns: 8}),
		openStore(t, url, postgres.Options{Writers: 4, MaxConns: 8}),
	}
	const goroutines, perG, nStreams = 32, 30, 5
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	recorded, refused := 0, 0
	for g := range goroutines {
		wg.Go(func() {
			s := stores[g%len(stores)]
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range perG {
				perm := rng.Perm(nStreams)[:1+rng.IntN(nStreams-1)]
				streams := make([]eventlog.StreamID, len(perm))
				for i, p := range perm {
					streams[i] = sid(fmt.Sprintf("s%d", p))
				}
				vs, err := s.StreamVersions(ctx, streams)
				if err != nil {
					t.Error(err)
					return
				}
				req := eventlog.AppendRequest{}
				for i, st := range streams {
					req.Expected = append(req.Expected, eventlog.ExpectedVersion{Stream: st, Version: vs[i]})
					if i == 0 || rng.IntN(2) == 0 {
						req.Events = append(req.Events, eventlog.Event{Stream: st, Type: "E", Data: json.RawMessage(`{}`)})
					}
				}
				_, err = s.Append(ctx, req)
				var conflict *eventlog.ConflictError
				mu.Lock()
				switch {
				case err == nil:
					recorded++
				case errors.As(err, &conflict):
					refused++
				default:
					t.Errorf("Append: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var count, maxPos int64
	if err := stores[0].Pool().QueryRow(ctx, `SELECT count(*), COALESCE(max(position), 0) FROM events`).Scan(&count, &maxPos); err != nil {
		t.Fatal(err)
	}
	if count != maxPos {
		t.Errorf("count(*) = %d, max(position) = %d", count, maxPos)
	}
	t.Logf("%d appends recorded, %d refused, %d events", recorded, refused, count)
}
