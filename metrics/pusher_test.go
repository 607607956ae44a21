package metrics_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/syncbuf"

	"github.com/eventcore-go/eventcore/metrics"
	"github.com/eventcore-go/eventcore/metrics/metricstest"
)

// TestPushEndsBeforeTheCallersDeadline pushes to a gateway that never
// answers with a push timeout longer than what is left of the caller's
// context: the push ends before that deadline, leaving the caller time to
// answer, and the caller's cancellation alone does not stop it.
func TestPushEndsBeforeTheCallersDeadline(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	p, err := metrics.NewPusher(m, metricstest.BlackHole(t), "execute", "i", 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	err = p.Push(ctx)
	// The push keeps a margin of 100 ms; a push without one runs to the
	// deadline. Any time left tells them apart, also when the scheduler
	// wakes the push up to 100 ms late.
	if left := time.Until(deadline); left <= 0 {
		t.Errorf("the push ended %v after the caller's deadline, want it to end before", -left)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("push: %v, want a deadline error", err)
	}

	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	p, err = metrics.NewPusher(m, metricstest.StartPushgateway(t), "execute", "i", 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Push(cancelled); err != nil {
		t.Errorf("push with a cancelled context (a request that ended): %v", err)
	}
}

// switchable forwards to a real Pushgateway, or answers 503 while down,
// and counts the requests that reached it.
type switchable struct {
	down     atomic.Bool
	requests atomic.Int64
	url      string
}

func startSwitchable(t *testing.T) *switchable {
	t.Helper()
	target, err := url.Parse(metricstest.StartPushgateway(t))
	if err != nil {
		t.Fatal(err)
	}
	s := &switchable{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.down.Load() {
			http.Error(w, "down for a test", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// A failed push starts a backoff: the pushes during it are skipped at
// once (the gateway sees none of them), the failure is logged once and
// counted, and the first push after the backoff delivers the count.
func TestDeadGatewayIsBackedOff(t *testing.T) {
	gw := startSwitchable(t)
	gw.down.Store(true)
	logs := &syncbuf.Buffer{}
	m := metrics.New(metrics.Sources{})
	p, err := metrics.NewPusher(m, gw.url, "execute", "i", time.Second, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Push(ctx); err == nil {
		t.Fatal("a push to a gateway that answers 503 succeeded")
	}
	failedAt := time.Now()
	for range 20 {
		if err := p.Push(ctx); err != nil {
			t.Fatalf("a push during the backoff was tried: %v", err)
		}
	}
	if n := gw.requests.Load(); n != 1 {
		t.Fatalf("the gateway saw %d requests during the backoff, want 1 (the failed push)", n)
	}
	gw.down.Store(false)
	time.Sleep(time.Until(failedAt.Add(metrics.MinPushBackoff + 50*time.Millisecond)))
	if err := p.Push(ctx); err != nil {
		t.Fatalf("the first push after the backoff: %v", err)
	}
	ctx2, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	families, err := metricstest.Families(ctx2, strings.TrimSuffix(gw.url, "/"))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricstest.Value(families, "eventcore_metrics_push_failures_total", map[string]string{"job": "execute", "instance": "i"}); !ok || v != 1 {
		t.Fatalf("eventcore_metrics_push_failures_total at the gateway = %v (found %v), want 1", v, ok)
	}
	if n := strings.Count(logs.String(), "metrics push failed"); n != 1 {
		t.Fatalf("the failure episode was logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "metrics push recovered") {
		t.Fatalf("the recovery was not logged:\n%s", logs)
	}
}

// PushIfDue pushes at most once per interval.
func TestPushIfDueKeepsTheInterval(t *testing.T) {
	gw := startSwitchable(t)
	m := metrics.New(metrics.Sources{})
	p, err := metrics.NewPusher(m, gw.url, "execute", "i", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Long enough that ten calls fit in it however slow the first push.
	const interval = 2 * time.Second
	for range 10 {
		if err := p.PushIfDue(ctx, interval); err != nil {
			t.Fatal(err)
		}
	}
	if n := gw.requests.Load(); n != 1 {
		t.Fatalf("%d pushes within one interval, want 1", n)
	}
	time.Sleep(interval + 100*time.Millisecond)
	if err := p.PushIfDue(ctx, interval); err != nil {
		t.Fatal(err)
	}
	if n := gw.requests.Load(); n != 2 {
		t.Fatalf("%d pushes after the interval passed, want 2", n)
	}
}
