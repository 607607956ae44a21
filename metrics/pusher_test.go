package metrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
	if left := time.Until(deadline); left < 50*time.Millisecond {
		t.Errorf("the push ended %v before the caller's deadline, want its margin", left)
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
