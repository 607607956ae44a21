package app_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// BenchmarkReplicaCost measures what replication adds to a command: the
// same deposit through the execute handler with no replica (the
// baseline), a file:// replica and an S3 replica (gofakes3 over loopback),
// interleaved one command each so all three see the same machine. It
// reports each mode's p50 and p99 in microseconds and the ratio of the
// mean latency to the baseline's. The fake S3 answers in microseconds;
// real S3 adds its own round trips (tens of milliseconds per PUT).
func BenchmarkReplicaCost(b *testing.B) {
	ctx := context.Background()
	modes, apps := replicaModes(b, "bench", 10)
	lat := map[string][]time.Duration{}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for _, mode := range modes {
			start := time.Now()
			status, body, _ := apps[mode].Execute.HandleDirect(ctx, handler.CommandRequest{Command: "deposit", Input: fmt.Appendf(nil, `{"account":"a%d","amount":1}`, i%10)})
			lat[mode] = append(lat[mode], time.Since(start))
			if status != 200 {
				b.Fatalf("%s: %d %s", mode, status, body)
			}
		}
	}
	b.StopTimer()
	mean := func(d []time.Duration) float64 {
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		return float64(sum) / float64(len(d))
	}
	for _, mode := range modes {
		d := slices.Clone(lat[mode])
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), mode+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), mode+"-p99-µs")
		if mode != "none" {
			b.ReportMetric(mean(lat[mode])/mean(lat["none"]), mode+"/none")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// replicaModes opens one execute-role instance per mode (none, file, s3)
// with accounts a0 ... a(accounts-1) open in each.
func replicaModes(b *testing.B, prefix string, accounts int) ([]string, map[string]*app.App) {
	b.Helper()
	s3 := replicatest.StartS3(b)
	modes := []string{"none", "file", "s3"}
	apps := map[string]*app.App{}
	for _, mode := range modes {
		dir := b.TempDir()
		env := map[string]string{"EVENTCORE_DB": filepath.Join(dir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(dir, "p.db")}
		switch mode {
		case "file":
			env["EVENTCORE_REPLICA_URL"] = "file://" + filepath.Join(dir, "replica")
		case "s3":
			env["EVENTCORE_REPLICA_URL"] = s3.URL(prefix + "/events")
		}
		a := openRole(b, app.RoleExecute, env)
		b.Cleanup(func() { _ = a.Close() })
		for i := range accounts {
			if status, body, _ := a.Execute.HandleDirect(context.Background(), handler.CommandRequest{Command: "open-account", Input: fmt.Appendf(nil, `{"account":"a%d","owner":"O"}`, i)}); status != 200 {
				b.Fatalf("%s: %d %s", mode, status, body)
			}
		}
		apps[mode] = a
	}
	return modes, apps
}

// BenchmarkReplicaConcurrent is BenchmarkReplicaCost with 8 callers at
// once: each round sends a burst of 64 deposits (8 goroutines, 8 each, on
// their own accounts) to each mode in turn, and reports each mode's
// commands/s and the replicated modes' throughput as a fraction of the
// baseline's. Concurrent callers share group commits and, with a replica,
// share syncs.
func BenchmarkReplicaConcurrent(b *testing.B) {
	ctx := context.Background()
	const callers, each = 8, 8
	modes, apps := replicaModes(b, "bench-concurrent", callers)
	spent := map[string]time.Duration{}
	commands := 0
	b.ResetTimer()
	for b.Loop() {
		for _, mode := range modes {
			start := time.Now()
			var wg sync.WaitGroup
			for c := range callers {
				wg.Go(func() {
					for range each {
						status, body, _ := apps[mode].Execute.HandleDirect(ctx, handler.CommandRequest{Command: "deposit", Input: fmt.Appendf(nil, `{"account":"a%d","amount":1}`, c)})
						if status != 200 {
							b.Errorf("%s: %d %s", mode, status, body)
						}
					}
				})
			}
			wg.Wait()
			spent[mode] += time.Since(start)
		}
		commands += callers * each
	}
	b.StopTimer()
	for _, mode := range modes {
		b.ReportMetric(float64(commands)/spent[mode].Seconds(), mode+"-commands/s")
		if mode != "none" {
			b.ReportMetric(spent["none"].Seconds()/spent[mode].Seconds(), mode+"/none")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkReplicaLatency measures how well replicated commands overlap
// when the replica is far away: deposits from 1, 8 and 64 callers at once
// against an S3 that adds 20 ms to every request, beside the same load
// with no replica, alternating bursts so both see the same machine. With
// no overlap, a replicated command costs one round trip and callers queue
// behind each other's syncs; with it, the commands of callers in flight
// share a sync, and throughput grows with the callers.
func BenchmarkReplicaLatency(b *testing.B) {
	ctx := context.Background()
	for _, callers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			s3 := replicatest.StartS3(b)
			apps := map[string]*app.App{}
			for _, mode := range []string{"none", "s3-20ms"} {
				dir := b.TempDir()
				env := map[string]string{"EVENTCORE_DB": filepath.Join(dir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(dir, "p.db")}
				if mode != "none" {
					env["EVENTCORE_REPLICA_URL"] = s3.URL("latency/events")
				}
				a := openRole(b, app.RoleExecute, env)
				b.Cleanup(func() { _ = a.Close() })
				for c := range callers {
					if status, body, _ := a.Execute.HandleDirect(ctx, handler.CommandRequest{Command: "open-account", Input: fmt.Appendf(nil, `{"account":"a%d","owner":"O"}`, c)}); status != 200 {
						b.Fatalf("%s: %d %s", mode, status, body)
					}
				}
				apps[mode] = a
			}
			s3.SetDelay(20 * time.Millisecond)
			each := max(4, 64/callers)
			spent := map[string]time.Duration{}
			var lat []time.Duration
			var mu sync.Mutex
			commands := 0
			for b.Loop() {
				for _, mode := range []string{"none", "s3-20ms"} {
					start := time.Now()
					var wg sync.WaitGroup
					for c := range callers {
						wg.Go(func() {
							for range each {
								began := time.Now()
								status, body, _ := apps[mode].Execute.HandleDirect(ctx, handler.CommandRequest{Command: "deposit", Input: fmt.Appendf(nil, `{"account":"a%d","amount":1}`, c)})
								if status != 200 {
									b.Errorf("%s: %d %s", mode, status, body)
								}
								if mode != "none" {
									mu.Lock()
									lat = append(lat, time.Since(began))
									mu.Unlock()
								}
							}
						})
					}
					wg.Wait()
					spent[mode] += time.Since(start)
				}
				commands += callers * each
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(commands)/spent["none"].Seconds(), "none-commands/s")
			b.ReportMetric(float64(commands)/spent["s3-20ms"].Seconds(), "s3-20ms-commands/s")
			b.ReportMetric(spent["none"].Seconds()/spent["s3-20ms"].Seconds(), "s3-20ms/none")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "s3-20ms-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "s3-20ms-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
