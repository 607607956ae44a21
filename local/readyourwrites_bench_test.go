package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReadYourWrites measures requests through the local runner, over
// HTTP, with benchClients clients on benchAccounts accounts. Each iteration
// of a client is a deposit, a read of the account with ?min_position= the
// position the deposit answered, and a plain read. It reports the p50 and
// p99 of each kind, and ryw/plain: the median cost of reading one's own
// write against a plain read.
func BenchmarkReadYourWrites(b *testing.B) {
	const benchClients, benchAccounts = 8, 4
	send := startBench(b, benchClients, benchAccounts, "bench")

	var mu sync.Mutex
	var commands, ryw, plain []time.Duration
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range benchClients {
		wg.Go(func() {
			account := fmt.Sprintf("bench-%d", c%benchAccounts)
			var cs, rs, ps []time.Duration
			for next.Add(1) <= int64(b.N) {
				status, out, took := send("POST", "/commands/deposit", `{"account":"`+account+`","amount":1}`)
				if status != 200 {
					b.Errorf("deposit: %d %s", status, out)
					return
				}
				cs = append(cs, took)
				var res struct {
					Events []struct {
						Position uint64 `json:"position"`
					} `json:"events"`
				}
				if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Events) != 1 {
					b.Errorf("deposit answered %s", out)
					return
				}
				status, out, took = send("GET", fmt.Sprintf("/accounts/%s?min_position=%d", account, res.Events[0].Position), "")
				if status != 200 {
					b.Errorf("read your write: %d %s", status, out)
					return
				}
				rs = append(rs, took)
				status, out, took = send("GET", "/accounts/"+account, "")
				if status != 200 {
					b.Errorf("plain read: %d %s", status, out)
					return
				}
				ps = append(ps, took)
			}
			mu.Lock()
			commands, ryw, plain = append(commands, cs...), append(ryw, rs...), append(plain, ps...)
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	if len(plain) == 0 {
		return
	}
	reportQuantiles(b, "command", commands)
	reportQuantiles(b, "ryw", ryw)
	reportQuantiles(b, "plain", plain)
	b.ReportMetric(float64(ryw[len(ryw)/2])/float64(plain[len(plain)/2]), "ryw/plain-p50")
}
