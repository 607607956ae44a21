package metrics

import (
	"slices"
	"sync"
	"time"
)

// DefaultWindow is how far back Metrics.RecentLatency looks, and
// DefaultWindowSamples the most command latencies it keeps.
const (
	DefaultWindow        = 10 * time.Second
	DefaultWindowSamples = 4096
)

// Window keeps the most recent latencies, at most a fixed number, with the
// time each was observed, so that exact quantiles of the last seconds can
// be read: the histograms' factor-2 buckets are too coarse for a p99 worth
// reading on a dashboard. Its methods are safe for concurrent use; Observe
// costs a lock and two stores.
type Window struct {
	span time.Duration

	mu    sync.Mutex
	at    []time.Time
	took  []time.Duration
	next  int // where the next sample goes
	count int // samples held, up to len(took)
}

// NewWindow returns a window over the last span keeping at most samples
// latencies (the oldest are overwritten first). A span or samples of 0 or
// less takes DefaultWindow or DefaultWindowSamples.
func NewWindow(span time.Duration, samples int) *Window {
	if span <= 0 {
		span = DefaultWindow
	}
	if samples <= 0 {
		samples = DefaultWindowSamples
	}
	return &Window{span: span, at: make([]time.Time, samples), took: make([]time.Duration, samples)}
}

// Observe records one latency observed at now.
func (w *Window) Observe(now time.Time, took time.Duration) {
	w.mu.Lock()
	w.at[w.next], w.took[w.next] = now, took
	w.next = (w.next + 1) % len(w.took)
	w.count = min(w.count+1, len(w.took))
	w.mu.Unlock()
}

// Quantiles are exact quantiles of the latencies in a window (nearest
// rank: the smallest latency with at least that share at or below it).
// All are zero when Count is.
type Quantiles struct {
	// Count is the number of latencies they are taken over; Span how far
	// back the window looked.
	Count         int
	Span          time.Duration
	P50, P95, P99 time.Duration
	Max           time.Duration
}

// Quantiles returns the quantiles of the latencies observed in the span
// before now.
func (w *Window) Quantiles(now time.Time) Quantiles {
	since := now.Add(-w.span)
	w.mu.Lock()
	recent := make([]time.Duration, 0, w.count)
	for i := range w.count {
		if !w.at[i].Before(since) {
			recent = append(recent, w.took[i])
		}
	}
	w.mu.Unlock()
	q := Quantiles{Count: len(recent), Span: w.span}
	if len(recent) == 0 {
		return q
	}
	slices.Sort(recent)
	q.P50, q.P95, q.P99 = rank(recent, 50), rank(recent, 95), rank(recent, 99)
	q.Max = recent[len(recent)-1]
	return q
}

// rank is the nearest-rank p-th percentile of sorted (non-empty).
func rank(sorted []time.Duration, p int) time.Duration {
	r := (p*len(sorted) + 99) / 100
	return sorted[max(1, min(r, len(sorted)))-1]
}
