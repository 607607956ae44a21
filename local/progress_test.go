package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer that the bars' goroutines and the test
// share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWith runs the local runner with opts until stopped; it returns the
// base URL and a stop that returns the run's error.
func startWith(t *testing.T, opts runOptions, getenv func(string) string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan error, 1), make(chan string, 1)
	go func() { done <- runWith(ctx, opts, getenv, func(url string) { ready <- url }) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Error("run did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case url := <-ready:
		return url, stop
	case err := <-done:
		cancel()
		t.Fatalf("run ended before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("run did not get ready")
	}
	return "", nil
}

// TestRestoreAndRebuildShowProgress: a runner whose event log is gone
// restores it from the replica and, with -rebuild all, replays every read
// model, drawing both on its terminal (forced here onto a buffer); the
// read models are right afterwards. A runner whose stderr is not a
// terminal draws nothing.
func TestRestoreAndRebuildShowProgress(t *testing.T) {
	dir := t.TempDir()
	env := testEnv(dir, "EVENTCORE_REPLICA_URL", "file://"+filepath.Join(t.TempDir(), "replica"), "EVENTCORE_PROJECTION_INTERVAL", "50ms")
	var quiet lockedBuffer
	url, stop := startWith(t, runOptions{addr: "127.0.0.1:0", progress: &quiet}, env)
	do(t, "POST", url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"position":1`)
	const deposits = 40
	for i := range deposits {
		do(t, "POST", url+"/commands/deposit", fmt.Sprintf(`{"account":"alice","amount":%d}`, i+1)).want(t, 200, `"MoneyDeposited"`)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if quiet.String() != "" {
		t.Fatalf("a runner without a terminal drew: %q", quiet.String())
	}

	data := filepath.Join(dir, "data")
	for _, p := range []string{"events.db", "events.db-wal", "events.db-shm", ".events.db-litestream"} {
		if err := os.RemoveAll(filepath.Join(data, p)); err != nil {
			t.Fatal(err)
		}
	}
	var out lockedBuffer
	url, _ = startWith(t, runOptions{addr: "127.0.0.1:0", progress: &out, forceProgress: true, rebuild: []string{"all"}}, env)
	drawn := out.String() // everything is drawn before the runner serves
	for _, want := range []string{"restore events.db", "rebuild balances", "rebuild history"} {
		line := lineWith(drawn, want)
		if line == "" || !strings.Contains(line, "100%") {
			t.Fatalf("no finished %q bar in %q", want, drawn)
		}
	}
	if !strings.Contains(lineWith(drawn, "rebuild balances"), fmt.Sprintf("(%d/%d", deposits+1, deposits+1)) {
		t.Fatalf("the rebuild did not count the log's %d positions: %q", deposits+1, drawn)
	}
	b := readBalance(t, url, "")
	if want := int64(deposits * (deposits + 1) / 2); b.Balance != want || b.Position != deposits+1 {
		t.Fatalf("balance after the rebuild %+v, want %d at %d", b, want, deposits+1)
	}
}

// lineWith returns the last rendering (a bar redraws itself after \r) on
// a line that mentions s, or "".
func lineWith(drawn, s string) string {
	for _, line := range strings.Split(drawn, "\n") {
		parts := strings.Split(line, "\r")
		for i := len(parts) - 1; i >= 0; i-- {
			if strings.Contains(parts[i], s) {
				return parts[i]
			}
		}
	}
	return ""
}

func TestRebuildOfAnUnknownProjectionFails(t *testing.T) {
	ctx := context.Background()
	err := runWith(ctx, runOptions{addr: "127.0.0.1:0", rebuild: []string{"nope"}}, testEnv(t.TempDir()), func(string) {
		t.Error("the runner served")
	})
	if err == nil || !strings.Contains(err.Error(), `-rebuild: no projection "nope" (the projections: balances, history)`) {
		t.Fatalf("err = %v", err)
	}
}
