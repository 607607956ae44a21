// Package benchload runs a benchmark's operations from concurrent callers
// and reports their rate and latency quantiles, the same way for every
// benchmark that compares a store with its raw baseline.
package benchload

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Run runs n operations spread over callers goroutines and returns the
// latency of each. Caller c draws from a generator seeded with (c, seed).
// A caller whose operation fails stops; the errors are returned joined.
func Run(n, callers int, seed uint64, op func(rng *rand.Rand) error) ([]time.Duration, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), seed))
			for next.Add(1) <= int64(n) {
				start := time.Now()
				if err := op(rng); err != nil {
					errs[c] = err
					return
				}
				lat[c] = append(lat[c], time.Since(start))
			}
		})
	}
	wg.Wait()
	return slices.Concat(lat...), errors.Join(errs...)
}

// Bench runs b.N operations with Run between b's timer marks and reports
// them (see Report); a failed operation fails b.
func Bench(b *testing.B, callers int, unit string, op func(rng *rand.Rand) error) {
	b.Helper()
	b.ResetTimer()
	start := time.Now()
	lat, err := Run(b.N, callers, 42, op)
	elapsed := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	Report(b, unit, lat, elapsed)
}

// Report reports len(lat)/elapsed as unit (such as "commands/s"), the p50
// and p99 of lat in milliseconds, and no ns/op. It sorts lat and fails b
// when lat is empty.
func Report(b *testing.B, unit string, lat []time.Duration, elapsed time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		b.Fatal("no operation ran")
	}
	slices.Sort(lat)
	ms := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), unit)
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
