package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/lagprobe"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// BenchmarkManagedInstances measures transfers between 100 accounts
// through the execute function under the emulator, in one run: one
// invocation at a time (concurrency=1: the lambda shape, the emulator's
// default mode, which needs neither root nor /var/task) and 8 and 64 at
// once in one execution environment (the managed-instances shape,
// AWS_LAMBDA_MAX_CONCURRENCY=8 or 64; needs root, see startManaged), for
//
//   - mode=file: a local log, EVENTCORE_SYNC=full, no replica;
//   - mode=litestream: a log replicated to the test S3, with 20 ms added
//     to every S3 request;
//   - mode=file+project, at 64 only: mode=file with the project function
//     catching the read models up beside it, for the lag.
//
// Each sub-benchmark has an environment of its own, whose accounts are
// opened and funded before the timer starts. As many clients as the
// concurrency send transfers, each the next one as soon as its last is
// answered. It reports:
//
//   - commands/s: transfers answered 200 per second of wall time, from
//     the first request to the last answer;
//   - p50-ms, p99-ms: the latency a client sees (resends included) of the
//     transfers answered 200 or 409;
//   - 409/op: the share of transfers answered 409 concurrency (the
//     executor's retries ran out);
//   - resends/op: Runtime.Unavailable answers (every worker busy, where
//     Lambda would throttle) resent per transfer;
//   - commands/sync (mode=litestream): transfers per S3 upload, that is
//     how many commands one replica sync covered;
//   - lag-max-events, lag-max-ms (mode=file+project: the project function
//     beside the writer, in the lambda shape on the same files, invoked
//     with a scheduled catch-up again as soon as it answers, after one
//     catch-up before the load): how far the bank's projections fell
//     behind the log while the transfers ran, the most events the slowest
//     projection had still to apply, and the age of the oldest of them,
//     sampled every 20 ms (see lagprobe). Deployed, the catch-ups run on
//     the ProjectionSchedule (a minute at most often) and on reads with
//     min_position, so this is the catch-up's capacity against the write
//     rate, not the staleness between two schedules.
//
// Any other answer fails the benchmark. The litestream@64 sub-benchmark
// logs the goals beside the figures: litestream@64 at least 12
// times litestream@1 and at least 0.7 times file@64. Run it, for example, with
//
//	go test -run '^$' -bench Managed -benchtime 2000x ./functions/
func BenchmarkManagedInstances(b *testing.B) {
	requireBinaries(b)
	s3 := replicatest.StartS3(b)
	s3.SetDelay(s3Delay)
	throughput := map[string]float64{}
	runs := 0
	for _, mode := range []string{"file", "litestream", "file+project"} {
		for _, concurrency := range []int{1, 8, 64} {
			if mode == "file+project" && concurrency != 64 {
				continue // the lag at the highest write rate
			}
			name := fmt.Sprintf("mode=%s/concurrency=%d", mode, concurrency)
			b.Run(name, func(b *testing.B) {
				dir := sharedDir(b)
				env := fileEnv(dir)
				if mode == "litestream" {
					// A replica of its own each time: -count runs a
					// sub-benchmark again against the same test S3.
					runs++
					env = litestreamEnv(dir, s3.URL(fmt.Sprintf("bench/%s-%d-%d", mode, concurrency, runs)))
				}
				label := "execute (" + name + ")"
				var f *function
				if concurrency == 1 {
					f = startFunction(b, "execute", label, env)
				} else {
					f = startManaged(b, "execute", label, concurrency, env)
				}
				bk := newBank("bench", 100, 10_000)
				bk.open(b, f, min(concurrency, 16))
				puts := s3.Puts()
				var lag func() lagprobe.Figures
				if mode == "file+project" {
					project := startFunction(b, "project", "project ("+name+")", env)
					lag = followProjections(b, project, env["EVENTCORE_DB"], env["EVENTCORE_READ_DB"])
				}
				throughput[name] = measureTransfers(b, f, bk, concurrency)
				if lag != nil {
					l := lag()
					b.ReportMetric(float64(l.MaxEvents), "lag-max-events")
					b.ReportMetric(float64(l.MaxAge.Microseconds())/1000, "lag-max-ms")
				}
				if mode == "litestream" {
					// One upload per sync (and a lease renewal now and then).
					b.ReportMetric(float64(b.N)/float64(s3.Puts()-puts), "commands/sync")
				}
				if mode == "litestream" && concurrency == 64 {
					logGoals(b, throughput)
				}
			})
		}
	}
}

// followProjections invokes project's scheduled catch-up back to back and
// samples the bank projections' lag every 20 ms from the files the
// functions share (see lagprobe). The returned function stops both and
// returns the worst lag seen; a failed catch-up or sample fails the
// benchmark then.
func followProjections(b *testing.B, project *function, eventsDB, readDB string) func() lagprobe.Figures {
	scheduled, err := json.Marshal(scheduledEvent())
	if err != nil {
		b.Fatal(err)
	}
	// A first catch-up before the load: the function's cold start and the
	// accounts' opening events are not the lag under steady writes.
	project.invokeOK(b, json.RawMessage(scheduled))
	probe, err := lagprobe.Start(eventsDB, readDB, []string{"balances", "history"}, 20*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() {
		defer close(failed)
		for ctx.Err() == nil {
			status, out, err := project.post(ctx, scheduled)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				failed <- fmt.Errorf("scheduled catch-up: %w", err)
				return
			case status != http.StatusOK || bytes.Contains(out, []byte(`"errorType"`)):
				failed <- fmt.Errorf("scheduled catch-up answered %d: %s", status, out)
				return
			}
		}
	}()
	return func() lagprobe.Figures {
		cancel()
		if err := <-failed; err != nil {
			b.Fatal(err)
		}
		figures, err := probe.Stop()
		if err != nil {
			b.Fatal(err)
		}
		return figures
	}
}

// logGoals logs the goals for the throughputs measured so far.
func logGoals(b *testing.B, throughput map[string]float64) {
	for _, g := range []struct {
		of, over string
		want     float64
	}{
		{"mode=litestream/concurrency=64", "mode=litestream/concurrency=1", 12},
		{"mode=litestream/concurrency=64", "mode=file/concurrency=64", 0.7},
	} {
		if throughput[g.of] == 0 || throughput[g.over] == 0 {
			continue
		}
		got := throughput[g.of] / throughput[g.over]
		met := "met"
		if got < g.want {
			met = "NOT met"
		}
		b.Logf("goal %s >= %.1f x %s: %.0f / %.0f commands/s = %.2f: %s", g.of, g.want, g.over, throughput[g.of], throughput[g.over], got, met)
	}
}

// measureTransfers sends b.N transfers of bk from clients goroutines and
// reports the figures BenchmarkManagedInstances describes. It returns
// commands/s.
func measureTransfers(b *testing.B, f *function, bk *bank, clients int) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	jobs := make(chan int)
	var (
		mu        sync.Mutex
		latencies []time.Duration
		ok        int
		conflicts int
		resends   int
		failure   error
	)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range jobs {
				a := f.send(ctx, bk.request(i))
				mu.Lock()
				resends += a.resends
				switch {
				case a.err != nil:
					failure = firstErr(failure, fmt.Errorf("transfer %d: %w", i, a.err))
				case a.status == http.StatusOK:
					ok++
					latencies = append(latencies, a.latency)
				case a.status == http.StatusConflict && a.errorCode() == "concurrency":
					conflicts++
					latencies = append(latencies, a.latency)
				default:
					failure = firstErr(failure, fmt.Errorf("transfer %d answered %d: %s", i, a.status, a.body))
				}
				mu.Unlock()
			}
		})
	}
	var start time.Time
	i := 0
	for b.Loop() {
		if i == 0 {
			start = time.Now()
		}
		jobs <- i
		i++
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	if failure != nil {
		b.Fatal(failure)
	}
	if len(latencies) == 0 {
		b.Fatal("no transfer was answered")
	}
	slices.Sort(latencies)
	perSecond := float64(ok) / elapsed.Seconds()
	b.ReportMetric(perSecond, "commands/s")
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[min(len(latencies)-1, len(latencies)*99/100)].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(conflicts)/float64(i), "409/op")
	b.ReportMetric(float64(resends)/float64(i), "resends/op")
	b.ReportMetric(0, "ns/op")
	return perSecond
}

// firstErr keeps the first error.
func firstErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}
