package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/internal/benchload"
	"github.com/eventcore-go/eventcore/internal/testproc"
)

// The transfer benchmarks run one command shape, a transfer: read two
// accounts' versions, then append one event to each with both expected
// versions, reading again after a conflict. Two ways, with the same pool
// size (postgres.DefaultMaxConns):
//
//   - store: the Store (group commit, one round trip per batch);
//   - raw: the same statements by hand, one transaction per command, no
//     group commit: lock both stream rows in order, check, update them,
//     take two positions from log_head, insert both events, commit.
//
// They report transfers/s and the p50 and p99 latency of a command
// (including its conflict retries). Both run against the server named by
// EVENTCORE_TEST_POSTGRES_URL: `make bench-postgres`.

const benchAccounts = 1000

func benchAccount(i int) string { return fmt.Sprintf("account-%04d", i) }

// seedAccounts gives every account a stream row, so that raw SQL (which
// inserts no placeholders) and the store start alike.
func seedAccounts(b testing.TB, pool *pgxpool.Pool) {
	ids := make([]string, benchAccounts)
	for i := range ids {
		ids[i] = benchAccount(i)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO streams (stream_id, version) SELECT unnest($1::text[]), 0`, ids); err != nil {
		b.Fatal(err)
	}
}

// transferFunc runs one transfer between two accounts.
type transferFunc func(ctx context.Context, from, to string) error

func storeTransfer(s *postgres.Store) transferFunc {
	data := json.RawMessage(`{"amount":1}`)
	return func(ctx context.Context, from, to string) error {
		streams := []eventlog.StreamID{eventlog.MustStreamID(from), eventlog.MustStreamID(to)}
		for {
			vs, err := s.StreamVersions(ctx, streams)
			if err != nil {
				return err
			}
			_, err = s.Append(ctx, eventlog.AppendRequest{
				Expected: []eventlog.ExpectedVersion{{Stream: streams[0], Version: vs[0]}, {Stream: streams[1], Version: vs[1]}},
				Events: []eventlog.Event{
					{Stream: streams[0], Type: "MoneyWithdrawn", Data: data, Metadata: eventlog.Metadata{Command: "transfer"}},
					{Stream: streams[1], Type: "MoneyDeposited", Data: data, Metadata: eventlog.Metadata{Command: "transfer"}},
				},
			})
			if errors.Is(err, eventlog.ErrConflict) {
				continue
			}
			return err
		}
	}
}

var errRawConflict = errors.New("raw: conflict")

func rawTransfer(pool *pgxpool.Pool) transferFunc {
	return func(ctx context.Context, from, to string) error {
		ids := []string{from, to}
		slices.Sort(ids)
		for {
			expected := map[string]int64{}
			rows, err := pool.Query(ctx, `SELECT stream_id, version FROM streams WHERE stream_id = ANY($1::text[])`, ids)
			if err != nil {
				return err
			}
			var id string
			var v int64
			if _, err := pgx.ForEachRow(rows, []any{&id, &v}, func() error { expected[id] = v; return nil }); err != nil {
				return err
			}
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
				md := func() string {
					return `{"event_id":"` + strconv.FormatInt(rand.Int64(), 16) + `","command":"transfer"}`
				}
				_, err = tx.Exec(ctx, `INSERT INTO events (position, stream_id, version, type, data, metadata, recorded_at)
					VALUES ($1, $2, $3, 'MoneyWithdrawn', '{"amount":1}', $4::json, now()), ($5, $6, $7, 'MoneyDeposited', '{"amount":1}', $8::json, now())`,
					last-1, from, expected[from]+1, md(), last, to, expected[to]+1, md())
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
		from := rng.IntN(benchAccounts)
		to := (from + 1 + rng.IntN(benchAccounts-1)) % benchAccounts
		return transfer(ctx, benchAccount(from), benchAccount(to))
	}
}

func BenchmarkTransfers(b *testing.B) {
	for _, callers := range []int{1, 8, 64} {
		for _, mode := range []string{"store", "raw"} {
			b.Run(fmt.Sprintf("callers=%d/%s", callers, mode), func(b *testing.B) {
				url := pgtest.NewDatabase(b)
				s, err := postgres.Open(context.Background(), url, postgres.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = s.Close() }()
				seedAccounts(b, s.Pool())
				transfer := storeTransfer(s)
				if mode == "raw" {
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
					defer pool.Close()
					transfer = rawTransfer(pool)
				}
				benchload.Bench(b, callers, "transfers/s", randomTransfers(context.Background(), transfer))
			})
		}
	}
	b.Run("processes=4x16/store", benchProcesses)
}

// Environment of the benchmark's child processes.
const (
	benchChildURLEnv = "EVENTCORE_PGBENCH_CHILD_URL"
	benchChildNEnv   = "EVENTCORE_PGBENCH_CHILD_N"
)

// benchProcesses runs b.N transfers from 4 child processes of 16 callers
// each, the shape of many Lambda environments sharing one database.
func benchProcesses(b *testing.B) {
	const processes = 4
	url := pgtest.NewDatabase(b)
	s, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	seedAccounts(b, s.Pool())
	lat, elapsed := testproc.Fanout(b, processes, "TestBenchChild", benchChildNEnv, []string{benchChildURLEnv + "=" + url})
	benchload.Report(b, "transfers/s", lat, elapsed)
}

// TestBenchChild is a child process of benchProcesses: it opens the store,
// prints "ready", waits for a line on stdin, runs its transfers from 16
// callers and prints their latencies in microseconds on one line.
func TestBenchChild(t *testing.T) {
	url := os.Getenv(benchChildURLEnv)
	if url == "" {
		t.Skip("runs only as a child process of BenchmarkTransfers")
	}
	s, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	testproc.Serve(t, benchChildNEnv, func(n int) ([]time.Duration, error) {
		return benchload.Run(n, 16, uint64(os.Getpid()), randomTransfers(context.Background(), storeTransfer(s)))
	})
}
