package executor_test

import (
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/executor"
)

func delays(p executor.RetryPolicy, upTo int) ([]time.Duration, int) {
	var out []time.Duration
	for retry := 1; retry <= upTo; retry++ {
		d, ok := p.Delay(retry)
		if !ok {
			return out, retry
		}
		out = append(out, d)
	}
	return out, 0
}

func within(got, want time.Duration) bool {
	diff := got - want
	return diff >= -time.Microsecond && diff <= time.Microsecond
}

func TestExponentialBackoffJitter(t *testing.T) {
	for _, tt := range []struct {
		rand   float64
		factor float64
	}{
		{0, 0.8},
		{0.5, 1.0},
		{0.999, 1.1996},
	} {
		p := executor.ExponentialBackoff{
			MaxRetries: 4, Initial: 10 * time.Millisecond, Max: time.Second, Jitter: 0.2,
			Rand: func() float64 { return tt.rand },
		}
		got, stop := delays(p, 10)
		if stop != 5 || len(got) != 4 {
			t.Fatalf("rand %v: %v, stopped at retry %d; want 4 retries", tt.rand, got, stop)
		}
		for i, base := range []time.Duration{10, 20, 40, 80} {
			want := time.Duration(float64(base*time.Millisecond) * tt.factor)
			if !within(got[i], want) {
				t.Errorf("rand %v, retry %d: %v, want %v", tt.rand, i+1, got[i], want)
			}
		}
	}
}

func TestExponentialBackoffCap(t *testing.T) {
	p := executor.ExponentialBackoff{MaxRetries: 6, Initial: 10 * time.Millisecond, Max: 35 * time.Millisecond}
	got, stop := delays(p, 10)
	want := []time.Duration{10, 20, 35, 35, 35, 35}
	if stop != 7 || len(got) != len(want) {
		t.Fatalf("%v, stopped at %d", got, stop)
	}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Errorf("retry %d: %v, want %v", i+1, got[i], want[i]*time.Millisecond)
		}
	}

	// Jitter scales the capped delay.
	p.Jitter, p.Rand = 0.2, func() float64 { return 0 }
	if d, _ := p.Delay(6); d != 28*time.Millisecond {
		t.Errorf("capped delay with jitter %v, want 28ms", d)
	}
}

func TestExponentialBackoffWithoutMax(t *testing.T) {
	p := executor.ExponentialBackoff{MaxRetries: 4, Initial: 10 * time.Millisecond}
	got, _ := delays(p, 4)
	for i, base := range []time.Duration{10, 20, 40, 80} {
		if got[i] != base*time.Millisecond {
			t.Errorf("retry %d: %v, want %v", i+1, got[i], base*time.Millisecond)
		}
	}
	// Many retries without a cap never wrap around to a negative delay.
	p = executor.ExponentialBackoff{MaxRetries: 200, Initial: time.Millisecond, Jitter: 1, Rand: func() float64 { return 0.999 }}
	prev := time.Duration(0)
	for retry := 1; retry <= 200; retry++ {
		d, ok := p.Delay(retry)
		if !ok || d < prev {
			t.Fatalf("retry %d: %v %v after %v", retry, d, ok, prev)
		}
		prev = d
	}
}

func TestExponentialBackoffStops(t *testing.T) {
	p := executor.ExponentialBackoff{MaxRetries: 2, Initial: time.Millisecond, Max: time.Second}
	for _, retry := range []int{-1, 0, 3, 100} {
		if d, ok := p.Delay(retry); ok || d != 0 {
			t.Errorf("Delay(%d) = %v, %v; want 0, false", retry, d, ok)
		}
	}
	if _, ok := (executor.ExponentialBackoff{Initial: time.Millisecond}).Delay(1); ok {
		t.Error("MaxRetries 0 retried")
	}
}

func TestExponentialBackoffDefaultRand(t *testing.T) {
	p := executor.ExponentialBackoff{MaxRetries: 1, Initial: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	for range 1000 {
		d, ok := p.Delay(1)
		if !ok || d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("Delay(1) = %v, %v; want 50ms to 150ms", d, ok)
		}
	}
}

func TestFixedDelay(t *testing.T) {
	got, stop := delays(executor.FixedDelay{MaxRetries: 3, Wait: 15 * time.Millisecond}, 10)
	if stop != 4 || len(got) != 3 {
		t.Fatalf("%v, stopped at %d", got, stop)
	}
	for i, d := range got {
		if d != 15*time.Millisecond {
			t.Errorf("retry %d: %v", i+1, d)
		}
	}
	if _, ok := (executor.FixedDelay{MaxRetries: 3, Wait: time.Millisecond}).Delay(0); ok {
		t.Error("Delay(0) retried")
	}
	if _, ok := (executor.FixedDelay{}).Delay(1); ok {
		t.Error("MaxRetries 0 retried")
	}
}

func TestNoRetry(t *testing.T) {
	for _, retry := range []int{0, 1, 2} {
		if d, ok := (executor.NoRetry{}).Delay(retry); ok || d != 0 {
			t.Errorf("Delay(%d) = %v, %v", retry, d, ok)
		}
	}
}

func TestDefaultRetryPolicy(t *testing.T) {
	p, ok := executor.DefaultRetryPolicy.(executor.ExponentialBackoff)
	if !ok {
		t.Fatalf("DefaultRetryPolicy is a %T", executor.DefaultRetryPolicy)
	}
	if p.MaxRetries != 4 || p.Initial != 10*time.Millisecond || p.Max != time.Second || p.Jitter != 0.2 || p.Rand != nil {
		t.Errorf("DefaultRetryPolicy %+v", p)
	}
	for range 200 {
		got, stop := delays(executor.DefaultRetryPolicy, 10)
		if stop != 5 {
			t.Fatalf("stopped at retry %d, want 5", stop)
		}
		for i, base := range []time.Duration{10, 20, 40, 80} {
			base *= time.Millisecond
			if got[i] < base*8/10 || got[i] > base*12/10 {
				t.Errorf("retry %d: %v, want %v ±20%%", i+1, got[i], base)
			}
		}
	}
}
