package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// TestKillNineWithReplica loses the whole instance: it kills the runner
// with SIGKILL during a burst of commands, deletes every local file, and
// starts a new runner from the replica alone. Every command answered 200
// must be there at the position it was answered, positions must continue
// without a gap, and the restored file must pass PRAGMA integrity_check.
func TestKillNineWithReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	if runtime.GOOS == "windows" {
		t.Skip("SIGKILL")
	}
	bin := buildRunner(t)
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			var url string
			var extra []string
			switch kind {
			case "file":
				url = "file://" + filepath.Join(t.TempDir(), "replica")
			case "s3":
				s3 := replicatest.StartS3(t)
				url = s3.URL("crash/events")
				extra = replicatest.EnvList()
				// The killed runner's S3 lease is not released; keep its TTL
				// short so the successor can take it over after it expires.
				extra = append(extra, "EVENTCORE_REPLICA_LEASE_TTL=3s", "EVENTCORE_REPLICA_TIMEOUT=1s")
			}
			dir := t.TempDir()
			env := append([]string{
				"EVENTCORE_DB=" + filepath.Join(dir, "events.db"),
				"EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
				"EVENTCORE_PROJECTION_INTERVAL=100ms",
				"EVENTCORE_REPLICA_URL=" + url,
			}, extra...)
			const workers = 4
			p := launch(t, bin, env)
			seedAccounts(t, p.url, workers)
			var all []acked
			for round := range 2 {
				all = append(all, killDuringLoad(t, p, round, workers)...)
				// The instance is gone with its disk.
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if kind == "s3" {
					time.Sleep(3 * time.Second) // the dead runner's lease expires
				}
				p = launch(t, bin, env)
				requireAcknowledged(t, p.url, round, all)
			}
			stopCleanly(t, p)
			store, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db"), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = store.Close() }()
			var ok string
			if err := store.DB().QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
				t.Fatalf("integrity_check after restore: %q %v", ok, err)
			}
		})
	}
}

// TestSecondRunnerOnTheSameReplicaIsRefused starts two runner processes
// on one replica: the second fails at start with one line naming the
// variable, and the first keeps serving.
func TestSecondRunnerOnTheSameReplicaIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs processes")
	}
	bin := buildRunner(t)
	url := "file://" + filepath.Join(t.TempDir(), "replica")
	envFor := func(dir string) []string {
		return []string{
			"EVENTCORE_DB=" + filepath.Join(dir, "events.db"),
			"EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
			"EVENTCORE_REPLICA_URL=" + url,
		}
	}
	first := launch(t, bin, envFor(t.TempDir()))
	do(t, "POST", first.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"attempts":1`)

	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), envFor(t.TempDir())...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a second runner on the same replica started: %s", out)
	}
	var last string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		last = line
	}
	if !strings.HasPrefix(last, "local: EVENTCORE_REPLICA_URL: ") || !strings.Contains(last, "another process holds") {
		t.Fatalf("second runner's last line %q, want one naming EVENTCORE_REPLICA_URL and the held lock", last)
	}
	do(t, "POST", first.url+"/commands/deposit", `{"account":"alice","amount":5}`).want(t, 200, `"attempts":1`)
}

// TestFrozenRunnerReloads freezes a runner (SIGSTOP) past its S3 lease,
// lets another writer append to the replica meanwhile, then thaws it: the
// runner must take the lease back, reload the log with the other writer's
// events, and continue after them, never writing its older file over
// them.
func TestFrozenRunnerReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and freezes processes")
	}
	if runtime.GOOS == "windows" {
		t.Skip("SIGSTOP")
	}
	bin := buildRunner(t)
	s3 := replicatest.StartS3(t)
	url := s3.URL("frozen/events")
	common := map[string]string{
		"EVENTCORE_REPLICA_URL":         url,
		"EVENTCORE_REPLICA_LEASE_TTL":   "3s",
		"EVENTCORE_REPLICA_TIMEOUT":     "1s",
		"EVENTCORE_PROJECTION_INTERVAL": "100ms",
	}
	dir := t.TempDir()
	env := []string{"EVENTCORE_DB=" + filepath.Join(dir, "events.db"), "EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db")}
	for k, v := range common {
		env = append(env, k+"="+v)
	}
	env = append(env, replicatest.EnvList()...)
	p := launch(t, bin, env)
	do(t, "POST", p.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"position":1`)
	do(t, "POST", p.url+"/commands/deposit", `{"account":"alice","amount":10}`).want(t, 200, `"position":2`)

	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3500 * time.Millisecond) // its lease expires
	other := t.TempDir()
	otherEnv := map[string]string{"EVENTCORE_DB": filepath.Join(other, "events.db"), "EVENTCORE_READ_DB": filepath.Join(other, "p.db")}
	for k, v := range common {
		otherEnv[k] = v
	}
	cfg, err := config.Load(func(k string) string { return otherEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	b, err := app.Open(context.Background(), cfg, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("the other writer could not take the expired lease: %v", err)
	}
	if status, body, _ := b.Execute.HandleDirect(context.Background(), handler.CommandRequest{Command: "deposit", Input: []byte(`{"account":"alice","amount":5}`)}); status != 200 || !strings.Contains(string(body), `"position":3`) {
		t.Fatalf("the other writer's deposit: %d %s", status, body)
	}
	if err := b.Close(); err != nil { // syncs and releases the lease
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The thawed runner reloads on its next timer tick; a command that
	// arrives before that is refused (503), never written over the newer
	// history.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := do(t, "POST", p.url+"/commands/deposit", `{"account":"alice","amount":1}`, "Idempotency-Key", "after-thaw")
		if a.status == 200 {
			if !strings.Contains(a.body, `"position":4`) {
				t.Fatalf("after the reload the deposit answered %s, want position 4", a.body)
			}
			break
		}
		if a.status != 503 || time.Now().After(deadline) {
			t.Fatalf("thawed runner answered %d %s", a.status, a.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	do(t, "GET", p.url+"/accounts/alice?min_position=4", "").want(t, 200, `"balance":16`)
}
