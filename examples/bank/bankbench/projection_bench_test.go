package bankbench_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/projection"
)

// catchUpEvents is the length of the log the catch-up benchmark replays.
const catchUpEvents = 100_000

// perEvent hides a projector's ApplyBatch, so that the Runner applies its
// events one at a time with Apply.
type perEvent struct{ projection.Projector }

func (p perEvent) EventTypes() []string { return p.Projector.(projection.TypeFilter).EventTypes() }

// seedTransfers appends the events of accounts openings and then of
// transfers between random pairs of them up to about events events, in
// appends of 500 events, straight to the store (the executor's cost is
// another benchmark's subject).
func seedTransfers(b *testing.B, s eventlog.Store, events int) {
	b.Helper()
	ctx := context.Background()
	versions := map[string]eventlog.Version{}
	var req eventlog.AppendRequest
	pending := map[string]eventlog.Version{} // versions before the pending append
	add := func(id, typ string, data any) {
		raw, err := json.Marshal(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := pending[id]; !ok {
			pending[id] = versions[id]
		}
		versions[id]++
		req.Events = append(req.Events, eventlog.Event{Stream: bank.StreamOf(id), Type: typ, Data: raw})
	}
	send := func() {
		// Expected versions are those before this append.
		for id, v := range pending {
			req.Expected = append(req.Expected, eventlog.ExpectedVersion{Stream: bank.StreamOf(id), Version: v})
		}
		if _, err := s.Append(ctx, req); err != nil {
			b.Fatal(err)
		}
		req, pending = eventlog.AppendRequest{}, map[string]eventlog.Version{}
	}
	for i := range accounts {
		add(accountID(i), bank.TypeAccountOpened, bank.AccountOpened{Account: accountID(i), Owner: "Bench"})
		if len(req.Events) == 500 {
			send()
		}
	}
	if len(req.Events) > 0 {
		send()
	}
	for n := accounts; n < events; n += 2 {
		from, to := (n*7919)%accounts, (n*104729+1)%accounts
		if from == to {
			to = (to + 1) % accounts
		}
		id := fmt.Sprintf("t%d", n)
		add(accountID(from), bank.TypeTransferDebited, bank.TransferDebited{Account: accountID(from), To: accountID(to), Amount: 1, TransferID: id})
		add(accountID(to), bank.TypeTransferCredited, bank.TransferCredited{Account: accountID(to), From: accountID(from), Amount: 1, TransferID: id})
		if len(req.Events) >= 500 {
			send()
		}
	}
	if len(req.Events) > 0 {
		send()
	}
}

// BenchmarkCatchUp replays a log of catchUpEvents bank events into both
// bank projections from position 0, at the default batch size, on SQLite
// and (with EVENTCORE_TEST_POSTGRES_URL) PostgreSQL. Beside them, in the
// same run: feed, the ceiling (reading the same feed in pages of a batch,
// filtered by the bank's types as the projections read it), and per-event,
// the projections applied one event at a time with Apply. It reports
// events/s per projection: the log's events over the time both took,
// running at once.
func BenchmarkCatchUp(b *testing.B) {
	b.Run("store=sqlite", func(b *testing.B) {
		dir := b.TempDir()
		store, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = store.Close() })
		seedTransfers(b, store, catchUpEvents)
		n := 0
		newDB := func(b *testing.B) *sql.DB {
			n++
			// The application's read-model database.
			db, err := sql.Open("sqlite", sqlite.Options{}.ReadModelDSN(filepath.Join(dir, fmt.Sprintf("read-%d.db", n))))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			return db
		}
		benchCatchUp(b, store, newDB, projection.SQLite)
	})
	b.Run("store=postgres", func(b *testing.B) {
		if os.Getenv(pgtest.EnvURL) == "" {
			b.Skip("needs " + pgtest.EnvURL)
		}
		url := pgtest.NewDatabase(b)
		store, err := postgres.Open(context.Background(), url, postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = store.Close() })
		seedTransfers(b, store, catchUpEvents)
		newDB := func(b *testing.B) *sql.DB {
			// A database of its own per run, so that each starts empty.
			db, err := postgres.OpenDB(context.Background(), pgtest.NewDatabase(b), postgres.DBOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			return db
		}
		benchCatchUp(b, store, newDB, projection.Postgres)
	})
}

func benchCatchUp(b *testing.B, store eventlog.Store, newDB func(*testing.B) *sql.DB, dialect projection.Dialect) {
	ctx := context.Background()
	head, err := store.Head(ctx)
	if err != nil {
		b.Fatal(err)
	}
	types := bank.Balances{}.EventTypes()
	b.Run("feed", func(b *testing.B) {
		for b.Loop() {
			after, n := eventlog.Position(0), 0
			for {
				page, err := store.ReadFeed(ctx, eventlog.FeedQuery{After: after, Limit: projection.DefaultBatchSize, Types: types})
				if err != nil {
					b.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				n += len(page)
				after = page[len(page)-1].Position
			}
			if n != int(head) {
				b.Fatalf("read %d events, want %d", n, head)
			}
		}
		b.ReportMetric(float64(head)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	// batch-500 is the batch path at the size that was the default
	// before: most of a batch's cost is per touched account (a lookup and
	// an upsert) and per commit, and with 1,000 accounts a batch of 500
	// events touches most of its accounts once.
	for _, mode := range []string{"batch", "batch-500", "per-event"} {
		b.Run("projections="+mode, func(b *testing.B) {
			var took time.Duration
			for b.Loop() {
				b.StopTimer()
				ps := []projection.Projector{bank.Balances{}, bank.History{}}
				if mode == "per-event" {
					ps = []projection.Projector{perEvent{bank.Balances{}}, perEvent{bank.History{}}}
				}
				var size int // the default
				if mode == "batch-500" {
					size = 500
				}
				r, err := projection.NewRunner(ctx, newDB(b), store, projection.Options{Dialect: dialect, BatchSize: size}, ps...)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				reports, err := r.CatchUpAll(ctx)
				took += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				for _, rep := range reports {
					if rep.Checkpoint != head || rep.Applied != int(head) {
						b.Fatalf("report %+v, want %d applied", rep, head)
					}
				}
			}
			b.ReportMetric(float64(head)*float64(b.N)/took.Seconds(), "events/s/projection")
		})
	}
}
