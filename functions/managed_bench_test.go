package functions_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
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
//   - lag-max-events, lag-max-ms (mode=file+project, mode=file at 64 with
//     the project function beside it, in the lambda shape on the same
//     files, invoked with a scheduled catch-up again as soon as it
//     answers): how far the bank's projections fell behind the log while
//     the transfers ran, the most events the slowest projection had still
//     to apply, and the age of the oldest of them, sampled every lagEvery
//     (see sampleLag). Deployed, the
//     catch-ups run on the ProjectionSchedule (a minute at most often)
//     and on reads with min_position, so this is the catch-up's capacity
//     against the write rate, not the staleness between two schedules.
//
// Any other answer fails the benchmark. The litestream@64 sub-benchmark
// logs the goals beside the figures: litestream@64 at least 12 times
// litestream@1 and at least 0.7 times file@64. Run it, for example, with
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
				var lag func() lagFigures
				if mode == "file+project" {
					project := startFunction(b, "project", "project ("+name+")", env)
					lag = followProjections(b, project, env["EVENTCORE_DB"], env["EVENTCORE_READ_DB"])
				}
				throughput[name] = measureTransfers(b, f, bk, concurrency)
				if lag != nil {
					l := lag()
					b.ReportMetric(float64(l.maxEvents), "lag-max-events")
					b.ReportMetric(float64(l.maxAge.Microseconds())/1000, "lag-max-ms")
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

// lagEvery is how often followProjections samples the lag.
const lagEvery = 20 * time.Millisecond

// lagFigures is the worst lag followProjections saw.
type lagFigures struct {
	maxEvents uint64        // events past the slowest projection's checkpoint
	maxAge    time.Duration // age of the oldest of them when sampled
	samples   int
}

// followProjections invokes project's scheduled catch-up back to back and
// samples, every lagEvery, the log's head in eventsDB and the
// projections' checkpoints in readDB (the files the functions share). The
// returned function stops both and returns the worst lag seen; a failed
// catch-up or sample fails the benchmark then.
func followProjections(b *testing.B, project *function, eventsDB, readDB string) func() lagFigures {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failure error
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		failure = firstErr(failure, err)
		mu.Unlock()
	}
	scheduled, err := json.Marshal(events.EventBridgeEvent{
		Version: "0", ID: "bench", DetailType: "Scheduled Event", Source: "aws.events",
		Time: time.Now().UTC(), Region: "us-east-1", Detail: json.RawMessage(`{}`),
	})
	if err != nil {
		b.Fatal(err)
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, project.url, bytes.NewReader(scheduled))
			if err != nil {
				fail(err)
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					fail(fmt.Errorf("scheduled catch-up: %w", err))
				}
				return
			}
			out, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || bytes.Contains(out, []byte(`"errorType"`)) {
				fail(fmt.Errorf("scheduled catch-up answered %d: %s", resp.StatusCode, out))
				return
			}
		}
	})
	var figures lagFigures
	wg.Go(func() {
		logDB, err := sql.Open("sqlite", sqlite.Options{}.DSN(eventsDB, "deferred")+"&_query_only=1")
		if err != nil {
			fail(err)
			return
		}
		defer func() { _ = logDB.Close() }()
		read, err := sql.Open("sqlite", sqlite.Options{}.DSN(readDB, "deferred")+"&_query_only=1")
		if err != nil {
			fail(err)
			return
		}
		defer func() { _ = read.Close() }()
		tick := time.NewTicker(lagEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			behind, age, err := sampleLag(ctx, logDB, read)
			if err != nil {
				if ctx.Err() == nil {
					fail(fmt.Errorf("sample the lag: %w", err))
				}
				return
			}
			figures.samples++
			figures.maxEvents = max(figures.maxEvents, behind)
			figures.maxAge = max(figures.maxAge, age)
		}
	})
	return func() lagFigures {
		cancel()
		wg.Wait()
		if failure != nil {
			b.Fatal(failure)
		}
		if figures.samples == 0 {
			b.Fatal("the lag was never sampled")
		}
		return figures
	}
}

// sampleLag reads the checkpoints first and the head after them, so that
// the lag is never under-counted: the events after the slowest
// checkpoint, and how long ago the first of them was recorded. Until the
// project function has created its tables, every event is behind.
func sampleLag(ctx context.Context, logDB, read *sql.DB) (behind uint64, age time.Duration, err error) {
	var slowest sql.NullInt64
	err = read.QueryRowContext(ctx, `SELECT MIN(position) FROM projection_checkpoints WHERE name IN ('balances', 'history')
		HAVING COUNT(*) = 2`).Scan(&slowest)
	if err != nil && !errors.Is(err, sql.ErrNoRows) && !strings.Contains(err.Error(), "no such table") {
		return 0, 0, err
	}
	var head int64
	if err := logDB.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM events`).Scan(&head); err != nil {
		return 0, 0, err
	}
	if head <= slowest.Int64 {
		return 0, 0, nil
	}
	var recordedAt int64
	if err := logDB.QueryRowContext(ctx, `SELECT recorded_at FROM events WHERE position = ?`, slowest.Int64+1).Scan(&recordedAt); err != nil {
		return 0, 0, err
	}
	return uint64(head - slowest.Int64), time.Since(time.UnixMicro(recordedAt)), nil
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
