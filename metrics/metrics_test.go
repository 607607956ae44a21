package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/metrics"
	"github.com/eventcore-go/eventcore/metrics/metricstest"
)

func newStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func appendOne(t *testing.T, s eventlog.Store, stream string, expected eventlog.Version) error {
	t.Helper()
	id := eventlog.MustStreamID(stream)
	_, err := s.Append(context.Background(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: id, Version: expected}},
		Events:   []eventlog.Event{{Stream: id, Type: "Happened", Data: []byte(`{}`)}},
	})
	return err
}

func TestPushToRealGateway(t *testing.T) {
	gateway := metricstest.StartPushgateway(t)
	store := newStore(t)
	warm := cache.New(0, 0)
	m := metrics.New(metrics.Sources{Cache: warm, Databases: map[string]string{"events": store.Path()}})
	instrumented := metrics.InstrumentStore(store, m)
	if _, ok := instrumented.(eventlog.SnapshotStore); !ok {
		t.Fatal("the instrumented store lost the snapshot capability")
	}
	if err := appendOne(t, instrumented, "a", 0); err != nil {
		t.Fatal(err)
	}
	if err := appendOne(t, instrumented, "a", 0); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("stale append: %v", err)
	}
	for _, err := range instrumented.ReadStream(context.Background(), eventlog.MustStreamID("b"), 0) {
		t.Fatalf("stream b has no events, read gave %v", err)
	}
	m.ObserveCommand("deposit", metrics.OutcomeOK, 3*time.Millisecond, 1, 1)
	m.ObserveCommand("deposit", metrics.OutcomeOK, 5*time.Millisecond, 2, 1)
	m.ObserveCommand("withdraw", metrics.OutcomeRejected, time.Millisecond, 1, 0)
	m.ObserveRetry()
	warm.RecordHit()
	warm.RecordPartialHit(4)

	p1, err := metrics.NewPusher(m, gateway, "execute", "instance-1", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.Push(context.Background()); err != nil {
		t.Fatal(err)
	}
	other := metrics.New(metrics.Sources{})
	other.ObserveCommand("deposit", metrics.OutcomeOK, time.Millisecond, 1, 1)
	p2, err := metrics.NewPusher(other, gateway, "execute", "instance-2", time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Push(context.Background()); err != nil {
		t.Fatal(err)
	}

	families, err := metricstest.Families(context.Background(), gateway)
	if err != nil {
		t.Fatal(err)
	}
	one := map[string]string{"job": "execute", "instance": "instance-1"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range one {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"eventcore_commands_total", with(map[string]string{"command": "deposit", "outcome": "ok"}), 2},
		{"eventcore_commands_total", with(map[string]string{"command": "withdraw", "outcome": "rejected"}), 1},
		{"eventcore_command_duration_seconds", with(map[string]string{"command": "deposit"}), 2},
		{"eventcore_command_attempts", with(map[string]string{"command": "deposit"}), 2},
		{"eventcore_events_written_total", one, 2},
		{"eventcore_version_conflicts_total", one, 1},
		{"eventcore_command_retries_total", one, 1},
		{"eventcore_store_operation_duration_seconds", with(map[string]string{"operation": "append"}), 2},
		{"eventcore_store_operation_duration_seconds", with(map[string]string{"operation": "read_stream"}), 1},
		{"eventcore_cache_hits_total", one, 1},
		{"eventcore_cache_partial_hits_total", one, 1},
		{"eventcore_cache_caught_up_events_total", one, 4},
		{"eventcore_active_streams", one, 2},
		{"eventcore_commands_total", map[string]string{"job": "execute", "instance": "instance-2", "command": "deposit", "outcome": "ok"}, 1},
	} {
		got, ok := metricstest.Value(families, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if size, ok := metricstest.Value(families, "eventcore_database_size_bytes", with(map[string]string{"database": "events"})); !ok || size <= 0 {
		t.Errorf("database size = %v, %v", size, ok)
	}
	if got := metricstest.Instances(families, "eventcore_commands_total", "execute"); len(got) != 2 {
		t.Errorf("instances %v, want two groups", got)
	}

	// Delete removes exactly this instance's group.
	if err := p1.Delete(); err != nil {
		t.Fatal(err)
	}
	families, err = metricstest.Families(context.Background(), gateway)
	if err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Instances(families, "eventcore_commands_total", "execute"); len(got) != 1 || got[0] != "instance-2" {
		t.Errorf("after delete: instances %v, want [instance-2]", got)
	}
}

func TestPushToUnresponsiveGatewayEndsAtItsDeadline(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	p, err := metrics.NewPusher(m, metricstest.BlackHole(t), "execute", "i", 100*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Push(context.Background()) }()
	select {
	case err := <-done:
		var ne net.Error
		deadline := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
		if !deadline {
			t.Fatalf("push to a gateway that never answers: %v, want a deadline error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the push did not end at its deadline")
	}
}

func TestNewPusherRejectsBadConfiguration(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	for _, c := range []struct{ url, job, instance string }{
		{"", "j", "i"}, {"ftp://x", "j", "i"}, {"http://", "j", "i"}, {"http://127.0.0.1:1", "", "i"}, {"http://127.0.0.1:1", "j", ""},
	} {
		if _, err := metrics.NewPusher(m, c.url, c.job, c.instance, 0, nil); err == nil {
			t.Errorf("NewPusher(%q, %q, %q) accepted", c.url, c.job, c.instance)
		}
	}
}

// TestExpositionPassesPromtool checks the registry's text exposition with
// promtool, Prometheus' own linter.
func TestExpositionPassesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	store := newStore(t)
	m := metrics.New(metrics.Sources{Cache: cache.New(0, 0), Databases: map[string]string{"events": store.Path()}})
	m.ObserveCommand("deposit", metrics.OutcomeOK, time.Millisecond, 1, 1)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &text
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// BenchmarkPush measures what a push adds to an invocation: to a live
// gateway, and to one that accepts connections and never answers (bounded
// by the push timeout, 250ms by default; 50ms here).
func BenchmarkPush(b *testing.B) {
	m := metrics.New(metrics.Sources{})
	m.ObserveCommand("deposit", metrics.OutcomeOK, time.Millisecond, 1, 1)
	for _, c := range []struct {
		name string
		url  func(testing.TB) string
	}{{"live", metricstest.StartPushgateway}, {"unresponsive", metricstest.BlackHole}} {
		b.Run("gateway="+c.name, func(b *testing.B) {
			p, err := metrics.NewPusher(m, c.url(b), "bench", "i", 50*time.Millisecond, nil)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				_ = p.Push(context.Background())
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/push")
		})
	}
}
