package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"text/tabwriter"

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
// cheaper than cold once the history is long. Every deposit adds an event,
// so the deposits go round-robin over up to 100 accounts of the same
// history, which keeps the history each command meets close to the nominal
// one (replayed/command shows what a command actually read).
func BenchmarkDepositByHistory(b *testing.B) {
	histories := []int{10, 1_000, 10_000, 100_000}
	modes := []string{"cold", "snapshot", "warm"}
	latency := map[int]map[string]float64{} // us/command of each sub-benchmark's last round
	defer printHistoryTable(histories, modes, latency)
	for _, history := range histories {
		latency[history] = map[string]float64{}
		accounts := min(100, max(1, 100_000/history))
		store := benchAccounts(b, history, accounts)
		for _, mode := range modes {
			b.Run(fmt.Sprintf("events=%d/%s", history, mode), func(b *testing.B) {
				opts := executor.Options{SnapshotThreshold: -1}
				switch mode {
				case "snapshot":
					opts.SnapshotThreshold = executor.DefaultSnapshotThreshold
				case "warm":
					opts.Cache = cache.New(0, 0)
				}
				deposits := make([]bank.Deposit, accounts)
				for i := range deposits {
					deposits[i] = bank.Deposit{Account: benchAccountID(i), Amount: 1}
				}
				ctx := context.Background()
				// Prime: the warm cache or the snapshots are made here
				// (twice: the cache admits a key on its second sighting).
				for range 2 {
					for _, d := range deposits {
						if _, err := bank.Execute(ctx, store, d, opts); err != nil {
							b.Fatal(err)
						}
					}
				}
				replayed, i := 0, 0
				b.ResetTimer()
				for b.Loop() {
					res, err := bank.Execute(ctx, store, deposits[i%accounts], opts)
					if err != nil {
						b.Fatal(err)
					}
					replayed += res.Replayed
					i++
				}
				us := float64(b.Elapsed().Microseconds()) / float64(b.N)
				latency[history][mode] = us
				b.ReportMetric(us, "us/command")
				b.ReportMetric(float64(replayed)/float64(b.N), "replayed/command")
			})
		}
	}
}

// printHistoryTable prints the deposit latencies as the README's table,
// with the two ratios the targets are about.
func printHistoryTable(histories []int, modes []string, latency map[int]map[string]float64) {
	if len(latency[histories[0]]) < len(modes) || len(latency[histories[len(histories)-1]]) < len(modes) {
		return // a -bench filter ran only some of them
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(w, "\nhistory\tcold us\tsnapshot us\twarm us\twarm / warm@10\tcold / warm\t")
	for _, h := range histories {
		l := latency[h]
		_, _ = fmt.Fprintf(w, "%d\t%.0f\t%.0f\t%.0f\t%.2f\t%.0fx\t\n", h, l["cold"], l["snapshot"], l["warm"],
			l["warm"]/latency[histories[0]]["warm"], l["cold"]/l["warm"])
	}
	_ = w.Flush()
}

func benchAccountID(i int) string { return fmt.Sprintf("bench-%03d", i) }

// benchAccounts opens a store holding accounts accounts of history events
// each.
func benchAccounts(b *testing.B, history, accounts int) *sqlite.Store {
	b.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	for a := range accounts {
		id := benchAccountID(a)
		if _, err := bank.Execute(ctx, store, bank.OpenAccount{Account: id, Owner: "bench"}, executor.Options{SnapshotThreshold: -1}); err != nil {
			b.Fatal(err)
		}
		stream := bank.StreamOf(id)
		data, _ := json.Marshal(bank.MoneyDeposited{Account: id, Amount: 1})
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
	}
	return store
}
