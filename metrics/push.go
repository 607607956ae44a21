package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus/push"
)

// DefaultPushTimeout is the default deadline of one push
// (EVENTCORE_PUSH_TIMEOUT).
const DefaultPushTimeout = 250 * time.Millisecond

// Pusher sends the registry to a Pushgateway under the grouping key
// job=<job>, instance=<instance>. A push never fails its caller: errors are
// logged. It is safe for concurrent use.
type Pusher struct {
	pusher  *push.Pusher
	timeout time.Duration
	log     *slog.Logger
	url     string
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
	client := &http.Client{Timeout: timeout}
	p := push.New(gatewayURL, job).Gatherer(m.Registry).Grouping("instance", instance).Client(client)
	return &Pusher{pusher: p, timeout: timeout, log: logger, url: gatewayURL}, nil
}

// Push adds the current values to the gateway, replacing only the metric
// families pushed (POST), within the push timeout. It returns the error for
// tests and benchmarks; callers in handlers ignore it, since it is logged.
func (p *Pusher) Push(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	if err := p.pusher.AddContext(ctx); err != nil {
		p.log.Warn("metrics push failed", "gateway", p.url, "error", err.Error())
		return err
	}
	return nil
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
