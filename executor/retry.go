package executor

import (
	"math"
	"math/rand/v2"
	"time"
)

// RetryPolicy decides whether a conflicting attempt is retried and after
// what delay. retry counts from 1 (the first retry, after the first
// attempt); returning false stops. Implementations must be safe for
// concurrent use.
type RetryPolicy interface {
	Delay(retry int) (time.Duration, bool)
}

// Defaults of the exponential policy.
const (
	DefaultMaxRetries   = 4
	DefaultInitialDelay = 10 * time.Millisecond
	DefaultMaxDelay     = time.Second
	DefaultJitter       = 0.2
)

// DefaultRetryPolicy is the policy used when Options.Retry is nil: 4
// retries, exponential backoff from 10 ms doubling to at most 1 s, with
// ±20% jitter.
var DefaultRetryPolicy RetryPolicy = ExponentialBackoff{
	MaxRetries: DefaultMaxRetries, Initial: DefaultInitialDelay, Max: DefaultMaxDelay, Jitter: DefaultJitter,
}

// ExponentialBackoff waits Initial before the first retry and doubles the
// wait for each one after, capped at Max, each wait scaled by a random
// factor in [1-Jitter, 1+Jitter].
type ExponentialBackoff struct {
	MaxRetries int
	Initial    time.Duration
	Max        time.Duration
	Jitter     float64 // 0 to 1
	// Rand returns a number in [0, 1); nil uses math/rand/v2. Tests set it.
	Rand func() float64
}

// Delay implements RetryPolicy.
func (p ExponentialBackoff) Delay(retry int) (time.Duration, bool) {
	if retry < 1 || retry > p.MaxRetries {
		return 0, false
	}
	d := p.Initial
	for i := 1; i < retry && (p.Max <= 0 || d < p.Max) && d < math.MaxInt64/4; i++ {
		d *= 2
	}
	if p.Max > 0 && d > p.Max {
		d = p.Max
	}
	if p.Jitter > 0 {
		r := rand.Float64
		if p.Rand != nil {
			r = p.Rand
		}
		d = time.Duration(float64(d) * (1 - p.Jitter + 2*p.Jitter*r()))
	}
	return d, true
}

// FixedDelay waits the same Delay before each of MaxRetries retries.
type FixedDelay struct {
	MaxRetries int
	Wait       time.Duration
}

// Delay implements RetryPolicy.
func (p FixedDelay) Delay(retry int) (time.Duration, bool) {
	if retry < 1 || retry > p.MaxRetries {
		return 0, false
	}
	return p.Wait, true
}

// NoRetry never retries.
type NoRetry struct{}

// Delay implements RetryPolicy.
func (NoRetry) Delay(int) (time.Duration, bool) { return 0, false }
