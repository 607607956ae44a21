package benchload

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

func TestRunCountsEveryOperation(t *testing.T) {
	var ran atomic.Int64
	lat, err := Run(1000, 8, 1, func(*rand.Rand) error { ran.Add(1); return nil })
	if err != nil || len(lat) != 1000 || ran.Load() != 1000 {
		t.Fatalf("%d latencies, %d ran, %v", len(lat), ran.Load(), err)
	}
}

func TestRunStopsAFailingCaller(t *testing.T) {
	boom := errors.New("boom")
	lat, err := Run(100, 1, 1, func(*rand.Rand) error { return boom })
	if !errors.Is(err, boom) || len(lat) != 0 {
		t.Fatalf("%d latencies, %v", len(lat), err)
	}
}
