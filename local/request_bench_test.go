package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRequests measures plain requests through the local runner over
// HTTP: each iteration of a client is a deposit (POST /commands/deposit)
// and a read of the account (GET /accounts/{id}), with no min_position,
// so that the figures are the cost of a request through the runner's
// routing and handlers, not of waiting for a projection. With 1 client
// the latency is the request's own; with 8 it includes queueing on the
// machine. It reports the p50 and p99 of each kind and requests/s.
func BenchmarkRequests(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			send := startBench(b, clients, clients, "req")
			var mu sync.Mutex
			var commands, reads []time.Duration
			var next atomic.Int64
			b.ResetTimer()
			began := time.Now()
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					account := fmt.Sprintf("req-%d", c)
					var cs, rs []time.Duration
					for next.Add(1) <= int64(b.N) {
						status, out, took := send("POST", "/commands/deposit", `{"account":"`+account+`","amount":1}`)
						if status != 200 {
							b.Errorf("deposit: %d %s", status, out)
							return
						}
						cs = append(cs, took)
						// The read model may not have the account yet: a 404
						// costs the same route, handler and query.
						status, out, took = send("GET", "/accounts/"+account, "")
						if status != 200 && status != 404 {
							b.Errorf("read: %d %s", status, out)
							return
						}
						rs = append(rs, took)
					}
					mu.Lock()
					commands, reads = append(commands, cs...), append(reads, rs...)
					mu.Unlock()
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(len(commands)+len(reads))/time.Since(began).Seconds(), "requests/s")
			reportQuantiles(b, "deposit", commands)
			reportQuantiles(b, "read", reads)
		})
	}
}
