package app_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/internal/syncbuf"
	"github.com/eventcore-go/eventcore/metrics"
	"github.com/eventcore-go/eventcore/metrics/metricstest"
)

// TestPushWhileProjectionsAreLocked pushes while another connection holds
// the read-model database locked, as the project function does while it
// commits a batch with the rollback journal used on EFS: reading the
// projection status then waits for the lock (up to the collector's second).
// A push still ends at its own deadline, and a push with time to wait
// still sends every other series.
func TestPushWhileProjectionsAreLocked(t *testing.T) {
	if os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != "" {
		t.Skip("AWS_LAMBDA_FUNCTION_NAME is set: the push would not be under job=local")
	}
	gateway := metricstest.StartPushgateway(t)
	dir := t.TempDir()
	env := map[string]string{
		"EVENTCORE_DB":              filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB":         filepath.Join(dir, "projections.db"),
		"EVENTCORE_JOURNAL":         "truncate",
		"EVENTCORE_PUSHGATEWAY_URL": gateway,
		"EVENTCORE_PUSH_TIMEOUT":    "100ms",
	}
	cfg, err := config.Load(func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	a, err := app.Open(context.Background(), cfg, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if status, body, _ := a.Execute.HandleDirect(context.Background(), handler.CommandRequest{
		Command: "open-account", Input: []byte(`{"account":"alice","owner":"Alice"}`),
	}); status != 200 {
		t.Fatalf("open-account answered %d: %s", status, body)
	}
	// An instance reports projection status once it runs projections.
	if _, err := a.Project.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}

	lockDB, err := sql.Open("sqlite", cfg.ReadDB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lockDB.Close() })
	lock, err := lockDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	locked := true
	unlock := func() {
		if locked {
			locked = false
			_, _ = lock.ExecContext(context.Background(), "ROLLBACK")
			_ = lock.Close()
		}
	}
	t.Cleanup(unlock)

	t.Run("sends the other series", func(t *testing.T) {
		// Reading the status ends at the collector's one second, or once a
		// connection opened while the lock is held gives up (the busy
		// timeout, 10 s).
		patient, err := metrics.NewPusher(a.Metrics, gateway, "patient", "i", 15*time.Second, logger)
		if err != nil {
			t.Fatal(err)
		}
		if err := patient.Push(context.Background()); err != nil {
			t.Fatalf("push with time to wait: %v", err)
		}
		families, err := metricstest.Families(context.Background(), gateway)
		if err != nil {
			t.Fatal(err)
		}
		group := map[string]string{"job": "patient", "instance": "i"}
		if n, ok := metricstest.Value(families, "eventcore_commands_total",
			map[string]string{"job": "patient", "instance": "i", "command": "open-account", "outcome": "ok"}); !ok || n != 1 {
			t.Errorf("commands pushed beside an unreadable projection status: %v (found %v), want 1", n, ok)
		}
		if _, ok := metricstest.Value(families, "eventcore_projection_head_position", group); ok {
			t.Error("a projection head was pushed while the status could not be read")
		}
		if !strings.Contains(logs.String(), `"msg":"metrics partly gathered"`) {
			t.Errorf("the unreadable status was not logged:\n%s", logs)
		}
	})

	t.Run("ends at its deadline", func(t *testing.T) {
		start := time.Now()
		err := a.Pusher.Push(context.Background())
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("push with the projections locked: %v, want its deadline", err)
		}
		// Under the collector's 1 s wait, which this must be told apart from.
		if took > 900*time.Millisecond {
			t.Errorf("a push with a 100ms timeout took %v", took)
		}
	})

	unlock()
	time.Sleep(metrics.MinPushBackoff) // the failed push backs the next off
	if err := a.Pusher.Push(context.Background()); err != nil {
		t.Fatalf("push after the lock was released: %v", err)
	}
	families, err := metricstest.Families(context.Background(), gateway)
	if err != nil {
		t.Fatal(err)
	}
	groups := metricstest.Instances(families, "eventcore_projection_head_position", "local")
	if len(groups) != 1 {
		t.Fatalf("groups of job local %q, want one", groups)
	}
	if head, ok := metricstest.Value(families, "eventcore_projection_head_position", map[string]string{"job": "local"}); !ok || head != 1 {
		t.Errorf("projection head after the lock was released: %v (found %v), want 1", head, ok)
	}
}
