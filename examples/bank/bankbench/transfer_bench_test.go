// Package bankbench_test measures bank transfers through the executor
// beside the same workload written as raw SQL, in one run.
package bankbench_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/internal/benchload"
)

// accounts is large enough that streams stay short over a run: the cost of
// replaying history without a cache is the subject of another benchmark.
const accounts = 1000

var benchRetry = executor.ExponentialBackoff{MaxRetries: 100, Initial: 200 * time.Microsecond, Max: 20 * time.Millisecond, Jitter: 0.2}

func accountID(i int) string { return fmt.Sprintf("acct-%04d", i) }

// runCallers runs b.N operations spread over callers goroutines and
// reports commands/s and the p50 and p99 latency of one operation.
func runCallers(b *testing.B, callers int, op func(rng *rand.Rand) error) {
	b.Helper()
	benchload.Bench(b, callers, "commands/s", op)
}

func pair(rng *rand.Rand) (int, int) {
	from := rng.IntN(accounts)
	to := rng.IntN(accounts - 1)
	if to >= from {
		to++
	}
	return from, to
}

// BenchmarkTransfer runs transfers of 1 between random accounts with 1, 8
// and 64 concurrent callers, through bank.Execute without a cache
// (impl=executor: every command reads both streams) and with the warm cache
// (impl=executor+cache: a warm command probes versions and reads nothing), and as
// raw SQL (impl=raw: one IMMEDIATE transaction that reads both streams'
// versions and inserts the two events, no fold, no checks).
func BenchmarkTransfer(b *testing.B) {
	for _, sync := range []sqlite.Synchronous{sqlite.SyncFull, sqlite.SyncNormal} {
		for _, callers := range []int{1, 8, 64} {
			opts := sqlite.Options{Synchronous: sync}
			for _, impl := range []string{"executor", "executor+cache"} {
				b.Run(fmt.Sprintf("sync=%s/callers=%d/impl=%s", sync, callers, impl), func(b *testing.B) {
					ctx := context.Background()
					store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "events.db"), opts)
					if err != nil {
						b.Fatal(err)
					}
					defer func() { _ = store.Close() }()
					execOpts := executor.Options{Retry: benchRetry, SnapshotThreshold: -1}
					if impl == "executor+cache" {
						execOpts.Cache = cache.New(0, 0)
					}
					for i := range accounts {
						mustExecute(b, store, bank.OpenAccount{Account: accountID(i), Owner: "bench"})
						mustExecute(b, store, bank.Deposit{Account: accountID(i), Amount: 1_000_000_000})
					}
					runCallers(b, callers, func(rng *rand.Rand) error {
						from, to := pair(rng)
						_, err := bank.Execute(ctx, store, bank.Transfer{From: accountID(from), To: accountID(to), Amount: 1}, execOpts)
						return err
					})
				})
			}
			b.Run(fmt.Sprintf("sync=%s/callers=%d/impl=raw", sync, callers), func(b *testing.B) {
				raw := openRawTransfers(b, opts)
				runCallers(b, callers, func(rng *rand.Rand) error {
					from, to := pair(rng)
					return raw.transfer(accountID(from), accountID(to))
				})
			})
		}
	}
}

func mustExecute(b *testing.B, store *sqlite.Store, cmd bank.Command) {
	b.Helper()
	if _, err := bank.Execute(context.Background(), store, cmd, executor.Options{}); err != nil {
		b.Fatal(err)
	}
}

type rawTransfers struct {
	db              *sql.DB
	version, insert *sql.Stmt
}

func openRawTransfers(b *testing.B, opts sqlite.Options) *rawTransfers {
	b.Helper()
	path := filepath.Join(b.TempDir(), "raw.db")
	s, err := sqlite.Open(context.Background(), path, opts) // the store's schema
	if err != nil {
		b.Fatal(err)
	}
	_ = s.Close()
	db, err := sql.Open("sqlite", opts.DSN(path, "immediate"))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1) // one writer, as in the store
	r := &rawTransfers{db: db}
	if r.version, err = db.Prepare(`SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?`); err != nil {
		b.Fatal(err)
	}
	if r.insert, err = db.Prepare(`INSERT INTO events (stream_id, version, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?)`); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.version.Close(); _ = r.insert.Close(); _ = db.Close() })
	return r
}

func (r *rawTransfers) transfer(from, to string) error {
	tx, err := r.db.Begin()
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	id := uuid.NewString()
	now := time.Now().UnixMicro()
	for _, e := range []struct{ stream, typ, data string }{
		{bank.StreamPrefix + from, bank.TypeTransferDebited, `{"account":"` + from + `","to":"` + to + `","amount":1,"transfer_id":"` + id + `"}`},
		{bank.StreamPrefix + to, bank.TypeTransferCredited, `{"account":"` + to + `","from":"` + from + `","amount":1,"transfer_id":"` + id + `"}`},
	} {
		var v int64
		if err := tx.Stmt(r.version).QueryRow(e.stream).Scan(&v); err != nil {
			return err
		}
		if _, err := tx.Stmt(r.insert).Exec(e.stream, v+1, e.typ, e.data, `{"event_id":"`+uuid.NewString()+`","command":"transfer"}`, now); err != nil {
			return err
		}
	}
	return tx.Commit()
}
