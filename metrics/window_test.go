package metrics

import (
	"sync"
	"testing"
	"time"
)

func TestWindowQuantilesAreExact(t *testing.T) {
	w := NewWindow(10*time.Second, 1000)
	now := time.Unix(1000, 0)
	if q := w.Quantiles(now); q.Count != 0 || q.P99 != 0 {
		t.Fatalf("empty window: %+v", q)
	}
	// 1 ms .. 100 ms: exact ranks, where a factor-2 bucket would say 64 or 128.
	for i := 1; i <= 100; i++ {
		w.Observe(now.Add(-time.Duration(i)*time.Millisecond), time.Duration(i)*time.Millisecond)
	}
	q := w.Quantiles(now)
	if q.Count != 100 || q.P50 != 50*time.Millisecond || q.P95 != 95*time.Millisecond ||
		q.P99 != 99*time.Millisecond || q.Max != 100*time.Millisecond {
		t.Fatalf("quantiles %+v", q)
	}
	// Eleven seconds later every sample has left the span.
	if q := w.Quantiles(now.Add(11 * time.Second)); q.Count != 0 {
		t.Fatalf("old samples counted: %+v", q)
	}
}

func TestWindowKeepsTheLatestSamples(t *testing.T) {
	w := NewWindow(time.Minute, 10)
	now := time.Unix(1000, 0)
	for i := 1; i <= 25; i++ { // 16..25 remain
		w.Observe(now, time.Duration(i)*time.Second)
	}
	q := w.Quantiles(now)
	if q.Count != 10 || q.P50 != 20*time.Second || q.Max != 25*time.Second {
		t.Fatalf("quantiles %+v", q)
	}
}

func TestWindowConcurrent(t *testing.T) {
	w := NewWindow(0, 0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				w.Observe(time.Now(), time.Millisecond)
				_ = w.Quantiles(time.Now())
			}
		})
	}
	wg.Wait()
	if q := w.Quantiles(time.Now()); q.Count != DefaultWindowSamples || q.P99 != time.Millisecond {
		t.Fatalf("quantiles %+v", q)
	}
}

func TestMetricsRecentLatency(t *testing.T) {
	m := New(Sources{})
	m.ObserveCommand("deposit", OutcomeOK, 3*time.Millisecond, 1, 1)
	m.ObserveCommand("deposit", OutcomeOK, 7*time.Millisecond, 1, 1)
	if q := m.RecentLatency(time.Now()); q.Count != 2 || q.P50 != 3*time.Millisecond || q.P99 != 7*time.Millisecond {
		t.Fatalf("recent %+v", q)
	}
}
