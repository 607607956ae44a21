package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/benchload"
	"github.com/eventcore-go/eventcore/internal/lagprobe"
)

// BenchmarkProjectionLag measures how far the local runner's projections
// fall behind under steady writes: lagClients clients send transfers
// between lagAccounts accounts over HTTP, each the next as soon as its
// last is answered (the runner's highest sustained rate on this machine,
// EVENTCORE_SYNC=normal as every test here), while the runner catches its
// projections up after commands as it always does. It reports
// transfers/s, their p50 and p99, and the bank projections' worst lag, sampled every 20 ms
// from the files (see lagprobe): lag-max-events, the most events the
// slowest projection had still to apply, and lag-max-ms, the age of the
// oldest of them. Goal: under a second.
func BenchmarkProjectionLag(b *testing.B) {
	const lagClients, lagAccounts = 32, 200
	dir := b.TempDir()
	base := start(b, testEnv(dir)).url
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: lagClients}, Timeout: 30 * time.Second}
	post := func(command, body string) (int, string) {
		resp, err := client.Post(base+"/commands/"+command, "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		out, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, string(out)
	}
	for i := range lagAccounts {
		for _, c := range []struct{ command, body string }{
			{"open-account", fmt.Sprintf(`{"account":"lag-%d","owner":"L"}`, i)},
			{"deposit", fmt.Sprintf(`{"account":"lag-%d","amount":1000000}`, i)},
		} {
			if status, out := post(c.command, c.body); status != http.StatusOK {
				b.Fatalf("%s: %d %s", c.command, status, out)
			}
		}
	}
	data := filepath.Join(dir, "data")
	probe, err := lagprobe.Start(filepath.Join(data, "events.db"), filepath.Join(data, "projections.db"), []string{"balances", "history"}, 20*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	benchload.Bench(b, lagClients, "transfers/s", func(rng *rand.Rand) error {
		from := rng.IntN(lagAccounts)
		to := (from + 1 + rng.IntN(lagAccounts-1)) % lagAccounts
		if status, out := post("transfer", fmt.Sprintf(`{"from":"lag-%d","to":"lag-%d","amount":1}`, from, to)); status != http.StatusOK {
			return fmt.Errorf("transfer: %d %s", status, out)
		}
		return nil
	})
	figures, err := probe.Stop()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(figures.MaxEvents), "lag-max-events")
	b.ReportMetric(float64(figures.MaxAge.Microseconds())/1000, "lag-max-ms")
}
