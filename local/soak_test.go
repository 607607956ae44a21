package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	loadtest "github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

// soakCacheBytes is the runner's cache cap during the soak, and
// soakOverhead what its resident memory may use beyond it (the Go runtime,
// SQLite's page caches, buffers of the connections in flight).
const (
	soakCacheBytes = 16 << 20
	soakOverhead   = 160 << 20
)

// soakSample is what the runner process used at one moment.
type soakSample struct {
	at         time.Duration
	rss        int64
	fds        int
	goroutines int
}

// TestSoak runs mixed load through a local runner process for
// EVENTCORE_SOAK_DURATION (make soak: 10 minutes; make test: 60 seconds),
// in three equal parts after a short warm-up, sampling the process every
// second. Its resident
// memory stays within the cache cap plus a bounded overhead; once the load
// ends its goroutines and open file descriptors return to their baseline;
// the last third's p99 stays within 1.5x the first third's (a third over it
// is measured once more before it counts).
func TestSoak(t *testing.T) {
	duration, err := time.ParseDuration(os.Getenv("EVENTCORE_SOAK_DURATION"))
	if err != nil || duration <= 0 {
		t.Skip("set EVENTCORE_SOAK_DURATION (make soak) to run the soak")
	}
	dir := t.TempDir()
	p := launch(t, buildRunner(t), []string{
		"EVENTCORE_DB=" + filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
		"EVENTCORE_CACHE_MAX_BYTES=" + strconv.Itoa(soakCacheBytes),
	})
	pid := p.cmd.Process.Pid
	client := loadtest.NewClient(16)

	// A short warm-up first, so that the baseline counts the connections
	// the runner's pools keep open once they have been used.
	warm := loadtest.Default()
	warm.URL, warm.Client, warm.Clients, warm.Duration, warm.Prefix = p.url, client, 16, 2*time.Second, "warmup"
	if _, err := loadtest.Run(context.Background(), warm); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	time.Sleep(2 * time.Second) // the connections close, a projection round ends
	baseline := sample(t, pid, p.url, 0)
	began := time.Now()
	samples := []soakSample{baseline}
	stop := make(chan struct{})
	sampled := make(chan []soakSample)
	go func() {
		var got []soakSample
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				sampled <- got
				return
			case <-tick.C:
				got = append(got, sample(t, pid, p.url, time.Since(began)))
			}
		}
	}()

	segment := func(n int) time.Duration {
		cfg := loadtest.Default()
		cfg.URL, cfg.Client, cfg.Clients, cfg.Duration = p.url, client, 16, duration/3
		cfg.Prefix, cfg.Accounts = fmt.Sprintf("soak%d", n), 200
		s, err := loadtest.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s.TransportErrors != 0 || s.Statuses[500] != 0 || s.Statuses[503] != 0 {
			t.Fatalf("segment %d: statuses %v codes %v transport %d", n+1, s.Statuses, s.Codes, s.TransportErrors)
		}
		t.Logf("segment %d: %d commands, %.0f/s, p50 %v p99 %v", n+1, s.Requests, s.PerSecond(), s.Latency.P50, s.Latency.P99)
		return s.Latency.P99
	}
	var p99 [3]time.Duration
	for third := range 3 {
		p99[third] = segment(third)
	}
	// A p99 over 1.5x the first third's is measured once more before it
	// counts: on a shared machine one third can meet a burst of other
	// work, while a runner that slows down as it runs stays slow.
	if p99[2] > p99[0]*3/2 {
		again := segment(3)
		t.Logf("the last third's p99 %v is over 1.5x the first's %v; one more third: %v", p99[2], p99[0], again)
		p99[2] = min(p99[2], again)
	}
	client.CloseIdleConnections()
	// Idle again: goroutines and descriptors come back to the baseline.
	var after soakSample
	deadline := time.Now().Add(15 * time.Second)
	for {
		after = sample(t, pid, p.url, time.Since(began))
		if after.goroutines <= baseline.goroutines+2 && after.fds <= baseline.fds+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	samples = append(append(samples, <-sampled...), after)

	var peak int64
	for _, s := range samples {
		peak = max(peak, s.rss)
	}
	report(t, samples)
	if peak > soakCacheBytes+soakOverhead {
		t.Errorf("resident memory peaked at %d MiB, over the cache cap plus %d MiB", peak>>20, soakOverhead>>20)
	}
	if after.goroutines > baseline.goroutines+2 {
		t.Errorf("goroutines: %d after the load, %d before", after.goroutines, baseline.goroutines)
	}
	if after.fds > baseline.fds+2 {
		t.Errorf("open file descriptors: %d after the load, %d before", after.fds, baseline.fds)
	}
	if p99[2] > p99[0]*3/2 {
		t.Errorf("p99 grew from %v in the first third to %v in the last", p99[0], p99[2])
	}
}

// sample reads the runner's resident memory and open descriptors from
// /proc and its goroutines from its /metrics.
func sample(t *testing.T, pid int, url string, at time.Duration) soakSample {
	t.Helper()
	s := soakSample{at: at}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			s.rss = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.fds = len(fds)
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if rest, ok := strings.CutPrefix(lines.Text(), "go_goroutines "); ok {
			s.goroutines, _ = strconv.Atoi(strings.TrimSpace(rest))
		}
	}
	return s
}

// report logs the curves, about ten points of each.
func report(t *testing.T, samples []soakSample) {
	step := max(1, len(samples)/10)
	var b strings.Builder
	b.WriteString("seconds  RSS MiB  goroutines  fds\n")
	for i, s := range samples {
		if i%step == 0 || i == len(samples)-1 {
			fmt.Fprintf(&b, "%7.0f  %7.1f  %10d  %3d\n", s.at.Seconds(), float64(s.rss)/(1<<20), s.goroutines, s.fds)
		}
	}
	t.Log("\n" + b.String())
}
