package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/lagprobe"
)

// BenchmarkProjectionLag measures how far the local runner's projections
// fall behind under steady writes: lagClients clients send transfers
// between lagAccounts accounts over HTTP, each the next as soon as its
// last is answered (the runner's highest sustained rate on this machine,
// EVENTCORE_SYNC=normal as every test here), while the runner catches its
// projections up after commands as it always does. It reports
// transfers/s and the bank projections' worst lag, sampled every 20 ms
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
	var next atomic.Int64
	var failures atomic.Int64
	var once sync.Once
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range lagClients {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				from, to := (i*7919)%lagAccounts, (i*104729+1)%lagAccounts
				if from == to {
					to = (to + 1) % lagAccounts
				}
				status, out := post("transfer", fmt.Sprintf(`{"from":"lag-%d","to":"lag-%d","amount":1}`, from, to))
				if status != http.StatusOK {
					failures.Add(1)
					once.Do(func() { b.Errorf("transfer: %d %s", status, out) })
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	figures, err := probe.Stop()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(int64(b.N)-failures.Load())/elapsed.Seconds(), "transfers/s")
	b.ReportMetric(float64(figures.MaxEvents), "lag-max-events")
	b.ReportMetric(float64(figures.MaxAge.Microseconds())/1000, "lag-max-ms")
	b.ReportMetric(0, "ns/op")
}
