package load

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

type countingProgress struct{ n atomic.Int64 }

func (p *countingProgress) Ended() { p.n.Add(1) }

// TestThrottledCountedApart: answers 429 are counted as throttled (and
// in the statuses), the others are not; Progress hears of every command;
// the summary keeps every latency, sorted.
func TestThrottledCountedApart(t *testing.T) {
	f := &fake{transfer: func(i int64, w http.ResponseWriter, _ *http.Request) {
		switch i % 4 {
		case 0:
			fail(w, http.StatusTooManyRequests, "throttled")
		case 1:
			fail(w, http.StatusConflict, "concurrency")
		default:
			w.WriteHeader(http.StatusOK)
		}
	}}
	var p countingProgress
	cfg := withCount(fakeConfig(f.start(t)), 40)
	cfg.Progress = &p
	s, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Throttled != 10 || s.Statuses[429] != 10 || s.Statuses[409] != 10 || s.ByCommand["transfer"].Throttled != 10 {
		t.Fatalf("throttled %d, statuses %v, by command %+v", s.Throttled, s.Statuses, s.ByCommand)
	}
	if p.n.Load() != 40 {
		t.Fatalf("progress heard of %d commands; want 40", p.n.Load())
	}
	if len(s.Latencies) != 40 {
		t.Fatalf("%d latencies", len(s.Latencies))
	}
	for i := 1; i < len(s.Latencies); i++ {
		if s.Latencies[i] < s.Latencies[i-1] {
			t.Fatal("latencies not sorted")
		}
	}
	var text strings.Builder
	if err := s.WriteText(&text); err != nil || !strings.Contains(text.String(), "\nthrottled: 10 answered 429 (25.0% of the answers)\n") {
		t.Fatalf("%v\n%s", err, text.String())
	}
	j, err := s.MarshalJSON()
	if err != nil || !strings.Contains(string(j), `"throttled":10`) || strings.Contains(string(j), "Latencies") {
		t.Fatalf("%v %s", err, j)
	}
}
