package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/eventcore-go/eventcore/metrics/metricstest"
)

// commands runs two opens, two deposits and a refused withdrawal: 4 events,
// head 4.
func commands(t *testing.T, url string) {
	t.Helper()
	do(t, "POST", url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"position":1`)
	do(t, "POST", url+"/commands/open-account", `{"account":"bob","owner":"Bob"}`).want(t, 200, `"position":2`)
	do(t, "POST", url+"/commands/deposit", `{"account":"alice","amount":100}`).want(t, 200, `"position":3`)
	do(t, "POST", url+"/commands/deposit", `{"account":"bob","amount":7}`).want(t, 200, `"position":4`)
	do(t, "POST", url+"/commands/withdraw", `{"account":"bob","amount":1000}`).want(t, 422, `"insufficient_funds"`)
}

func parseExposition(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, text)
	}
	return families
}

// TestMetricsEndpoint scrapes GET /metrics after a few commands, checks
// values there and lints the exposition with promtool.
func TestMetricsEndpoint(t *testing.T) {
	s := start(t, testEnv(t.TempDir(), "EVENTCORE_PROJECTION_INTERVAL", "1h"))
	commands(t, s.url)

	var text string
	var families map[string]*dto.MetricFamily
	// The projections catch up after the commands, woken by them; a round
	// counts the events it applied once it committed them.
	eventually(t, 5*time.Second, "projection checkpoints and applied events in /metrics", func() bool {
		a := do(t, "GET", s.url+"/metrics", "")
		if a.status != 200 || !strings.HasPrefix(a.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics answered %d %q", a.status, a.header.Get("Content-Type"))
		}
		text, families = a.body, parseExposition(t, a.body)
		for _, p := range []string{"balances", "history"} {
			for _, name := range []string{"eventcore_projection_checkpoint_position", "eventcore_projection_events_applied_total"} {
				if v, ok := metricstest.Value(families, name, map[string]string{"projection": p}); !ok || v != 4 {
					return false
				}
			}
		}
		return true
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"eventcore_commands_total", map[string]string{"command": "deposit", "outcome": "ok"}, 2},
		{"eventcore_commands_total", map[string]string{"command": "open-account", "outcome": "ok"}, 2},
		{"eventcore_commands_total", map[string]string{"command": "withdraw", "outcome": "rejected"}, 1},
		{"eventcore_events_written_total", nil, 4},
		{"eventcore_command_duration_seconds", map[string]string{"command": "deposit"}, 2},
		{"eventcore_store_operation_duration_seconds", map[string]string{"operation": "append"}, 4},
		{"eventcore_projection_head_position", nil, 4},
		{"eventcore_projection_lag_events", map[string]string{"projection": "balances"}, 0},
		{"eventcore_active_streams", nil, 2},
	} {
		if got, ok := metricstest.Value(families, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, db := range []string{"events", "projections"} {
		if size, ok := metricstest.Value(families, "eventcore_database_size_bytes", map[string]string{"database": db}); !ok || size <= 0 {
			t.Errorf("size of the %s database %v (found %v)", db, size, ok)
		}
	}
	if _, ok := metricstest.Value(families, "eventcore_cache_misses_total", nil); !ok {
		t.Error("eventcore_cache_misses_total is missing")
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed (apt-get install prometheus)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestRunnerPushesAndDeletesItsGroup runs the runner with a real
// Pushgateway: its series appear there under job="local" after the
// projection rounds, and its group is gone once it stopped.
func TestRunnerPushesAndDeletesItsGroup(t *testing.T) {
	if os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != "" {
		t.Skip("AWS_LAMBDA_FUNCTION_NAME is set: the runner would push under it, not job=local")
	}
	gateway := metricstest.StartPushgateway(t)
	s := start(t, testEnv(t.TempDir(), "EVENTCORE_PUSHGATEWAY_URL", gateway, "EVENTCORE_PROJECTION_INTERVAL", "100ms", "EVENTCORE_PUSH_INTERVAL", "100ms"))
	commands(t, s.url)

	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	group := map[string]string{"job": "local", "instance": fmt.Sprintf("%s-%d", host, os.Getpid())}
	with := func(kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range group {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	gathered := func() map[string]*dto.MetricFamily {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		families, err := metricstest.Families(ctx, gateway)
		if err != nil {
			t.Fatal(err)
		}
		return families
	}
	// A round (woken by the commands or on the 100ms timer) pushes once
	// the projections caught up.
	var families map[string]*dto.MetricFamily
	eventually(t, 5*time.Second, "the runner's caught-up series in the gateway", func() bool {
		families = gathered()
		v, ok := metricstest.Value(families, "eventcore_projection_checkpoint_position", with("projection", "history"))
		return ok && v == 4
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"eventcore_commands_total", with("command", "deposit", "outcome", "ok"), 2},
		{"eventcore_commands_total", with("command", "withdraw", "outcome", "rejected"), 1},
		{"eventcore_events_written_total", group, 4},
		{"eventcore_store_operation_duration_seconds", with("operation", "append"), 4},
		{"eventcore_projection_head_position", group, 4},
	} {
		if got, ok := metricstest.Value(families, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if got := metricstest.Instances(families, "eventcore_commands_total", "local"); len(got) != 1 || got[0] != group["instance"] {
		t.Errorf("local groups %q, want [%s]", got, group["instance"])
	}

	if err := s.stop(t); err != nil {
		t.Fatalf("run returned %v", err)
	}
	families = gathered()
	for name, f := range families {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "job" && lp.GetValue() == "local" {
					t.Fatalf("after the runner stopped the gateway still holds %s%v", name, m.GetLabel())
				}
			}
		}
	}
}
