package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
)

// BenchmarkDepositByHistory runs a deposit on an account whose stream holds
// 10 to 100,000 events, three ways:
//
//   - cold: no cache and no snapshot, so every command replays the stream;
//   - snapshot: no cache, a durable snapshot saved once the replay passes
//     the threshold (100), so a command reads only the tail after it;
//   - warm: the warm-instance cache, so a command probes the stream's
//     version and reads nothing.
//
// Read us/command: warm must not grow with history, and warm must be far
// cheaper than cold once the history is long.
func BenchmarkDepositByHistory(b *testing.B) {
	for _, history := range []int{10, 1_000, 10_000, 100_000} {
		store := benchAccount(b, history)
		for _, mode := range []string{"cold", "snapshot", "warm"} {
			b.Run(fmt.Sprintf("events=%d/%s", history, mode), func(b *testing.B) {
				opts := executor.Options{SnapshotThreshold: -1}
				switch mode {
				case "snapshot":
					opts.SnapshotThreshold = executor.DefaultSnapshotThreshold
				case "warm":
					opts.Cache = cache.New(0, 0)
				}
				deposit := bank.Deposit{Account: "bench", Amount: 1}
				ctx := context.Background()
				// Prime: the warm cache or the snapshot is made here.
				if _, err := bank.Execute(ctx, store, deposit, opts); err != nil {
					b.Fatal(err)
				}
				replayed := 0
				b.ResetTimer()
				for b.Loop() {
					res, err := bank.Execute(ctx, store, deposit, opts)
					if err != nil {
						b.Fatal(err)
					}
					replayed += res.Replayed
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/command")
				b.ReportMetric(float64(replayed)/float64(b.N), "replayed/command")
			})
		}
	}
}

// benchAccount opens a store holding an account with history events.
func benchAccount(b *testing.B, history int) *sqlite.Store {
	b.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	if _, err := bank.Execute(ctx, store, bank.OpenAccount{Account: "bench", Owner: "bench"}, executor.Options{SnapshotThreshold: -1}); err != nil {
		b.Fatal(err)
	}
	stream := bank.StreamOf("bench")
	data, _ := json.Marshal(bank.MoneyDeposited{Account: "bench", Amount: 1})
	for version := 1; version < history; {
		n := min(1000, history-version)
		req := eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: stream, Version: eventlog.Version(version)}}}
		for range n {
			req.Events = append(req.Events, eventlog.Event{Stream: stream, Type: bank.TypeMoneyDeposited, Data: data})
		}
		if _, err := store.Append(ctx, req); err != nil {
			b.Fatal(err)
		}
		version += n
	}
	return store
}
