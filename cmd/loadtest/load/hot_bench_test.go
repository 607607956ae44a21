package load

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventcore-go/eventcore/cmd/loadtest/internal/localtest"
)

// BenchmarkHotAccounts sends 32 clients × 2,000 transfers through the
// local runner over 10 accounts (hot: every command overlaps others) and
// over 1,000 (spread), one after the other on one runner, and reports
// both rates, their ratio and the answers of 409. Inside one process the
// hot load is ordered by admission, not raced: it should answer no 409
// and lose little throughput to the spread one.
func BenchmarkHotAccounts(b *testing.B) {
	r := localtest.Start(b)
	const clients, perClient = 32, 2000
	for i := range b.N {
		rates := map[int]float64{}
		conflicts := 0
		for _, accounts := range []int{1000, 10} {
			cfg := Default()
			cfg.URL, cfg.Clients, cfg.Count, cfg.Accounts = r.URL, clients, clients*perClient, accounts
			cfg.Prefix = fmt.Sprintf("hot%d-%d", i, accounts)
			cfg.Mix = Mix{Transfer: 1}
			s, err := Run(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			if s.Answered() != cfg.Count || s.Statuses[200]+s.Statuses[409] != cfg.Count {
				b.Fatalf("%d accounts: statuses %v codes %v", accounts, s.Statuses, s.Codes)
			}
			rates[accounts] = s.PerSecond()
			conflicts += s.Statuses[409]
		}
		b.ReportMetric(rates[10], "hot-transfers/s")
		b.ReportMetric(rates[1000], "spread-transfers/s")
		b.ReportMetric(rates[10]/rates[1000], "hot/spread")
		b.ReportMetric(float64(conflicts), "409s")
	}
	b.ReportMetric(0, "ns/op")
}
