package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
)

// DefaultPushTimeout is the default deadline of one push
// (EVENTCORE_PUSH_TIMEOUT).
const DefaultPushTimeout = 250 * time.Millisecond

// deadlineMargin is left free before the caller's deadline (on Lambda the
// invocation's), for the answer to get out once the push ended.
const deadlineMargin = 100 * time.Millisecond

// Backoff bounds after a failed push: the next attempt waits the push
// interval (at least MinPushBackoff), doubling with each failure in a row
// up to MaxPushBackoff.
const (
	MinPushBackoff = time.Second
	MaxPushBackoff = time.Minute
)

// Pusher sends the registry to a Pushgateway under the grouping key
// job=<job>, instance=<instance>. A push never fails its caller: errors are
// logged, once per episode of failures (from the first failure to the next
// success), and counted in eventcore_metrics_push_failures_total. After a
// failure, pushes are skipped (returning at once) until a backoff has
// passed, so that a dead gateway costs one push timeout now and then, not
// one per call. At most one push runs at a time; a call made while one
// runs is skipped. It is safe for concurrent use.
type Pusher struct {
	pusher  *push.Pusher
	timeout time.Duration
	log     *slog.Logger
	url     string
	m       *Metrics

	mu       sync.Mutex
	running  bool          // a push is in progress
	last     time.Time     // when the last push started
	retryAt  time.Time     // no push before this, after a failure
	backoff  time.Duration // the current backoff; 0 after a success
	failures int           // failures in a row
}

// NewPusher returns a pusher to the gateway at gatewayURL. job is the
// function's name and instance the Lambda instance (its log stream name),
// so that every instance has a group of its own. Errors: a URL that is not
// an absolute http(s) URL, an empty job or instance.
func NewPusher(m *Metrics, gatewayURL, job, instance string, timeout time.Duration, logger *slog.Logger) (*Pusher, error) {
	u, err := url.Parse(gatewayURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", gatewayURL)
	}
	if job == "" || instance == "" {
		return nil, fmt.Errorf("a push needs a job and an instance name")
	}
	if timeout <= 0 {
		timeout = DefaultPushTimeout
	}
	if logger == nil {
		logger = slog.Default()
	}
	p := &Pusher{timeout: timeout, log: logger, url: gatewayURL, m: m}
	// A source that cannot be read (the projection status) leaves out its
	// own series, not the whole push.
	gather := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		families, err := m.Gatherer().Gather()
		if err != nil && len(families) > 0 {
			p.log.Warn("metrics partly gathered", "error", err.Error())
			err = nil
		}
		return families, err
	})
	client := &http.Client{Timeout: timeout}
	p.pusher = push.New(gatewayURL, job).Gatherer(gather).Grouping("instance", instance).Client(client)
	return p, nil
}

// Push adds the current values to the gateway, replacing only the metric
// families pushed (POST), within the push timeout and ending a margin
// before ctx's deadline, if any (ctx's cancellation does not stop it). It
// returns at once, with nil, when a push is already running or a backoff
// after failures holds pushes back. It returns the push's error for tests
// and benchmarks; callers in handlers ignore it, since it is logged.
func (p *Pusher) Push(ctx context.Context) error {
	return p.PushIfDue(ctx, 0)
}

// PushIfDue is Push when interval has passed since the last push started
// (a negative or zero interval: always), and otherwise returns nil at once.
// interval also sets the first backoff after a failure.
func (p *Pusher) PushIfDue(ctx context.Context, interval time.Duration) error {
	now := time.Now()
	p.mu.Lock()
	if p.running || now.Before(p.retryAt) || (interval > 0 && !p.last.IsZero() && now.Sub(p.last) < interval) {
		p.mu.Unlock()
		return nil
	}
	p.running, p.last = true, now
	p.mu.Unlock()

	err := p.push(ctx)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = false
	if err == nil {
		if p.failures > 0 {
			p.log.Info("metrics push recovered", "gateway", p.url, "failures", p.failures)
		}
		p.failures, p.backoff, p.retryAt = 0, 0, time.Time{}
		return nil
	}
	p.m.pushFailures.Inc()
	p.failures++
	p.backoff = min(max(2*p.backoff, interval, MinPushBackoff), MaxPushBackoff)
	p.retryAt = time.Now().Add(p.backoff)
	if p.failures == 1 {
		p.log.Warn("metrics push failed; backing off until it succeeds", "gateway", p.url, "error", err.Error(), "backoff", p.backoff.String())
	}
	return err
}

// push makes one push.
func (p *Pusher) push(ctx context.Context) error {
	limit := p.timeout
	if deadline, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(deadline)-deadlineMargin)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	defer cancel()
	// Gathering reads the databases and does not see ctx: the push returns
	// at its deadline all the same, and the cancelled ctx keeps a gathering
	// that ends later from sending anything.
	done := make(chan error, 1)
	go func() { done <- p.pusher.AddContext(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done: // finished at the deadline
			return err
		default:
			return ctx.Err()
		}
	}
}

// Delete removes this instance's group from the gateway, so that a dead
// instance does not linger there; called at shutdown.
func (p *Pusher) Delete() error {
	if err := p.pusher.Delete(); err != nil {
		p.log.Warn("metrics delete failed", "gateway", p.url, "error", err.Error())
		return err
	}
	return nil
}
