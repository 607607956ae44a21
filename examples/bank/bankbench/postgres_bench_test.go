package bankbench_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/internal/benchload"
	"github.com/eventcore-go/eventcore/internal/testproc"
)

// BenchmarkTransfersPostgres runs bank transfers of 1 between random
// accounts of 1,000 on PostgreSQL (the server named by
// EVENTCORE_TEST_POSTGRES_URL: `make bench-postgres`), with 1, 8 and 64
// concurrent callers, two ways with the same pool of
// postgres.DefaultMaxConns connections:
//
//   - impl=executor: bank.Execute as the execute handler runs it, with a
//     warm cache (cache.New(0, 0), warmed by opening and funding the
//     accounts) and an executor.Admission; the store group-commits;
//   - impl=raw: the same statements by hand, one transaction per command,
//     no group commit (read both versions; lock both stream rows in order,
//     check, update them, take two positions from log_head, insert both
//     events, commit), reading again after a conflict.
//
// processes=4x16/impl=executor runs the executor from 4 child processes of
// 16 callers each, the shape of many Lambda environments on one database;
// each child's cache starts cold. Each reports transfers/s and the p50 and
// p99 latency of a command, conflict retries included.
func BenchmarkTransfersPostgres(b *testing.B) {
	for _, callers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("callers=%d/impl=executor", callers), func(b *testing.B) {
			store := openPostgres(b, pgtest.NewDatabase(b))
			opts := handlerOptions()
			seedBank(b, store, opts)
			benchload.Bench(b, callers, "transfers/s", randomTransfers(context.Background(), executorTransfer(store, opts)))
		})
		b.Run(fmt.Sprintf("callers=%d/impl=raw", callers), func(b *testing.B) {
			url := pgtest.NewDatabase(b)
			store := openPostgres(b, url) // the store's schema
			seedStreams(b, store.Pool())
			benchload.Bench(b, callers, "transfers/s", randomTransfers(context.Background(), rawPostgresTransfer(rawPool(b, url))))
		})
	}
	b.Run("processes=4x16/impl=executor", benchProcessesPostgres)
}

// handlerOptions are the executor options the execute handler uses: a
// cache, an Admission, the default retry policy and snapshot threshold.
func handlerOptions() executor.Options {
	return executor.Options{Cache: cache.New(0, 0), Admission: executor.NewAdmission()}
}

func openPostgres(b testing.TB, url string) *postgres.Store {
	b.Helper()
	s, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// rawPool is a pool of the store's size, in the store's query mode.
func rawPool(b testing.TB, url string) *pgxpool.Pool {
	b.Helper()
	cfg, err := postgres.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = postgres.DefaultMaxConns
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

// seedBank opens and funds every account through bank.Execute with opts
// (which warms its cache), from 16 goroutines.
func seedBank(b testing.TB, store *postgres.Store, opts executor.Options) {
	b.Helper()
	var next atomic.Int64
	errs := make([]error, 16)
	var wg sync.WaitGroup
	for g := range errs {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < accounts; i = int(next.Add(1)) - 1 {
				for _, cmd := range []bank.Command{
					bank.OpenAccount{Account: accountID(i), Owner: "bench"},
					bank.Deposit{Account: accountID(i), Amount: 1_000_000_000},
				} {
					if _, err := bank.Execute(context.Background(), store, cmd, opts); err != nil {
						errs[g] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
}

// seedStreams gives every account a stream row, as raw SQL inserts none.
func seedStreams(b testing.TB, pool *pgxpool.Pool) {
	b.Helper()
	ids := make([]string, accounts)
	for i := range ids {
		ids[i] = bank.StreamPrefix + accountID(i)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO streams (stream_id, version) SELECT unnest($1::text[]), 0`, ids); err != nil {
		b.Fatal(err)
	}
}

// transferFunc runs one transfer of 1 between two accounts.
type transferFunc func(ctx context.Context, from, to string) error

func executorTransfer(store *postgres.Store, opts executor.Options) transferFunc {
	return func(ctx context.Context, from, to string) error {
		_, err := bank.Execute(ctx, store, bank.Transfer{From: from, To: to, Amount: 1}, opts)
		return err
	}
}

var errRawConflict = errors.New("raw: conflict")

func rawPostgresTransfer(pool *pgxpool.Pool) transferFunc {
	return func(ctx context.Context, from, to string) error {
		fromID, toID := bank.StreamPrefix+from, bank.StreamPrefix+to
		ids := []string{fromID, toID}
		slices.Sort(ids)
		for {
			expected := map[string]int64{}
			var id string
			var v int64
			rows, err := pool.Query(ctx, `SELECT stream_id, version FROM streams WHERE stream_id = ANY($1::text[])`, ids)
			if err != nil {
				return err
			}
			if _, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error { expected[id] = v; return nil }); err != nil {
				return err
			}
			tid := uuid.NewString()
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, `SELECT stream_id, version FROM streams WHERE stream_id = ANY($1::text[]) ORDER BY stream_id FOR UPDATE`, ids)
				if err != nil {
					return err
				}
				if _, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error {
					if expected[id] != v {
						return errRawConflict
					}
					return nil
				}); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `UPDATE streams SET version = version + 1 WHERE stream_id = ANY($1::text[])`, ids); err != nil {
					return err
				}
				var last int64
				if err := tx.QueryRow(ctx, `UPDATE log_head SET position = position + 2 RETURNING position`).Scan(&last); err != nil {
					return err
				}
				md := func() string { return `{"event_id":"` + uuid.NewString() + `","command":"transfer"}` }
				_, err = tx.Exec(ctx, `INSERT INTO events (position, stream_id, version, type, data, metadata, recorded_at)
					VALUES ($1, $2, $3, $4, $5::json, $6::json, now()), ($7, $8, $9, $10, $11::json, $12::json, now())`,
					last-1, fromID, expected[fromID]+1, bank.TypeTransferDebited,
					`{"account":"`+from+`","to":"`+to+`","amount":1,"transfer_id":"`+tid+`"}`, md(),
					last, toID, expected[toID]+1, bank.TypeTransferCredited,
					`{"account":"`+to+`","from":"`+from+`","amount":1,"transfer_id":"`+tid+`"}`, md())
				return err
			})
			if errors.Is(err, errRawConflict) {
				continue
			}
			return err
		}
	}
}

// randomTransfers turns transfer into an operation between random
// accounts for benchload.
func randomTransfers(ctx context.Context, transfer transferFunc) func(*rand.Rand) error {
	return func(rng *rand.Rand) error {
		from, to := pair(rng)
		return transfer(ctx, accountID(from), accountID(to))
	}
}

// Environment of the benchmark's child processes.
const (
	childURLEnv = "EVENTCORE_BANKBENCH_CHILD_URL"
	childNEnv   = "EVENTCORE_BANKBENCH_CHILD_N"
)

// benchProcessesPostgres runs b.N transfers through the executor from 4
// child processes of 16 callers each.
func benchProcessesPostgres(b *testing.B) {
	const processes = 4
	url := pgtest.NewDatabase(b)
	seedBank(b, openPostgres(b, url), executor.Options{})
	lat, elapsed := testproc.Fanout(b, processes, "TestTransferChild", childNEnv, []string{childURLEnv + "=" + url})
	benchload.Report(b, "transfers/s", lat, elapsed)
}

// TestTransferChild is a child process of benchProcessesPostgres: it opens
// the store, prints "ready", waits for a line on stdin, runs its transfers
// from 16 callers through the executor and prints their latencies in
// microseconds on one line.
func TestTransferChild(t *testing.T) {
	url := os.Getenv(childURLEnv)
	if url == "" {
		t.Skip("runs only as a child process of BenchmarkTransfersPostgres")
	}
	store := openPostgres(t, url)
	testproc.Serve(t, childNEnv, func(n int) ([]time.Duration, error) {
		return benchload.Run(n, 16, uint64(os.Getpid()), randomTransfers(context.Background(), executorTransfer(store, handlerOptions())))
	})
}
