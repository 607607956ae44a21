package bankbench_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
)

// BenchmarkHotStreams runs transfers from 32 callers through one process's
// admission and warm cache over 10 accounts (every command overlaps
// others) and over 1,000, under synchronous NORMAL: the in-process cost of
// ordering commands on hot streams instead of racing them.
func BenchmarkHotStreams(b *testing.B) {
	for _, n := range []int{1000, 10} {
		b.Run(fmt.Sprintf("accounts=%d", n), func(b *testing.B) {
			ctx := context.Background()
			store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "events.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = store.Close() }()
			for i := range n {
				mustExecute(b, store, bank.OpenAccount{Account: accountID(i), Owner: "bench"})
				mustExecute(b, store, bank.Deposit{Account: accountID(i), Amount: 1_000_000_000})
			}
			opts := executor.Options{Retry: benchRetry, SnapshotThreshold: -1, Cache: cache.New(0, 0), Admission: executor.NewAdmission()}
			var retries atomic.Int64
			opts.OnRetry = func(executor.RetryInfo) { retries.Add(1) }
			runCallers(b, 32, func(rng *rand.Rand) error {
				from := rng.IntN(n)
				to := (from + 1 + rng.IntN(n-1)) % n
				_, err := bank.Execute(ctx, store, bank.Transfer{From: accountID(from), To: accountID(to), Amount: 1}, opts)
				return err
			})
			b.ReportMetric(float64(retries.Load()), "retries")
		})
	}
}
