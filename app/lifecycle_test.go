package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// command runs one command as a unit of work and returns its status and
// answer.
func command(a *app.App, name, input string) (int, handler.CommandResponse, string) {
	var status int
	var body []byte
	_ = a.Do(context.Background(), app.Request, func(ctx context.Context) error {
		status, body, _ = a.Execute.HandleDirect(ctx, handler.CommandRequest{Command: name, Input: []byte(input)})
		return nil
	})
	var resp handler.CommandResponse
	_ = json.Unmarshal(body, &resp)
	return status, resp, string(body)
}

// writerEnv is an execute role's environment over the S3 replica at path,
// with a short lease so that a test can outwait it.
func writerEnv(dir string, s3 *replicatest.S3, path string) map[string]string {
	return map[string]string{
		"EVENTCORE_DB": filepath.Join(dir, "events.db"), "EVENTCORE_READ_DB": filepath.Join(dir, "projections.db"),
		"EVENTCORE_REPLICA_URL": s3.URL(path), "EVENTCORE_REPLICA_TIMEOUT": "500ms", "EVENTCORE_REPLICA_LEASE_TTL": "2s",
	}
}

// Many units at once find that another writer moved the replica while
// this instance was idle past its lease: the reload happens while the
// others wait, and every command then answers 200 on the reloaded log, its
// positions following the other writer's.
func TestConcurrentUnitsAnswerOnTheReloadedLog(t *testing.T) {
	s3 := replicatest.StartS3(t)
	first := openRole(t, app.RoleExecute, writerEnv(t.TempDir(), s3, "reload/events"))
	defer func() { _ = first.Close() }()
	if status, _, body := command(first, "open-account", `{"account":"a","owner":"A"}`); status != 200 {
		t.Fatalf("open: %d %s", status, body)
	}
	time.Sleep(2100 * time.Millisecond) // the first instance's lease expires

	second := openRole(t, app.RoleExecute, writerEnv(t.TempDir(), s3, "reload/events"))
	for i := range 3 {
		if status, _, body := command(second, "deposit", fmt.Sprintf(`{"account":"a","amount":%d}`, i+1)); status != 200 {
			t.Fatalf("deposit on the second instance: %d %s", status, body)
		}
	}
	if err := second.Close(); err != nil { // releases the lease
		t.Fatal(err)
	}

	const callers = 16
	var wg sync.WaitGroup
	positions := make(chan int64, callers)
	for range callers {
		wg.Go(func() {
			status, resp, body := command(first, "deposit", `{"account":"a","amount":10}`)
			if status != 200 || len(resp.Events) != 1 {
				t.Errorf("deposit after the other writer: %d %s", status, body)
				return
			}
			positions <- int64(resp.Events[0].Position)
		})
	}
	wg.Wait()
	close(positions)
	seen := map[int64]bool{}
	for p := range positions {
		if p < 5 || p > 4+callers || seen[p] {
			t.Fatalf("position %d: want each of 5..%d once (after the other writer's 4)", p, 4+callers)
		}
		seen[p] = true
	}
	status, resp, body := command(first, "deposit", `{"account":"a","amount":1}`)
	if status != 200 || resp.Events[0].Position != 5+callers {
		t.Fatalf("next deposit: %d %s, want position %d", status, body, 5+callers)
	}
}

// Shutdown releases the writer lease: a successor writes at once instead
// of answering writer_unavailable until the lease expires.
func TestShutdownReleasesTheLease(t *testing.T) {
	s3 := replicatest.StartS3(t)
	env := writerEnv(t.TempDir(), s3, "handover/events")
	env["EVENTCORE_REPLICA_LEASE_TTL"] = "30s"
	first := openRole(t, app.RoleExecute, env)
	if status, _, body := command(first, "open-account", `{"account":"a","owner":"A"}`); status != 200 {
		t.Fatalf("open: %d %s", status, body)
	}
	// A generous deadline: this test is about the handover. Keeping a
	// short deadline while a sync hangs is replica's
	// TestCloseKeepsItsDeadlineAndReleasesTheLease; on a loaded machine a
	// healthy final sync can outlast ShutdownBudget.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown took %s (budget on Lambda: %s)", time.Since(began), app.ShutdownBudget)
	next := writerEnv(t.TempDir(), s3, "handover/events")
	next["EVENTCORE_REPLICA_LEASE_TTL"] = "30s"
	second := openRole(t, app.RoleExecute, next) // fails the test if the lease is still held
	defer func() { _ = second.Close() }()
	if status, resp, body := command(second, "deposit", `{"account":"a","amount":5}`); status != 200 || resp.Events[0].Position != 2 {
		t.Fatalf("successor's deposit: %d %s, want 200 at position 2", status, body)
	}
}

// A writer idle past its lease while another wrote, then reached by
// commands arriving one after another on a slow S3: the first retakes the
// lease and finds the replica moved, and no command, including those that
// arrive while that check runs, is acknowledged on the old log; every
// acknowledged command is in the replica.
func TestStaleWriterNeverAcknowledgesOnItsOldLog(t *testing.T) {
	s3 := replicatest.StartS3(t)
	env := func() map[string]string {
		e := writerEnv(t.TempDir(), s3, "fork/events")
		e["EVENTCORE_REPLICA_TIMEOUT"] = "1s"
		e["EVENTCORE_REPLICA_LEASE_TTL"] = "4s"
		return e
	}
	first := openRole(t, app.RoleExecute, env())
	defer func() { _ = first.Close() }()
	if status, _, body := command(first, "open-account", `{"account":"a","owner":"A"}`); status != 200 {
		t.Fatalf("open: %d %s", status, body)
	}
	time.Sleep(4100 * time.Millisecond) // the first instance's lease expires
	second := openRole(t, app.RoleExecute, env())
	for i := range 3 {
		if status, _, body := command(second, "deposit", fmt.Sprintf(`{"account":"a","amount":%d}`, i+1)); status != 200 {
			t.Fatalf("deposit on the second instance: %d %s", status, body)
		}
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	s3.SetDelay(60 * time.Millisecond)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got []string
	for i := range 20 {
		time.Sleep(15 * time.Millisecond)
		wg.Go(func() {
			status, resp, body := command(first, "deposit", `{"account":"a","amount":10}`)
			mu.Lock()
			defer mu.Unlock()
			if status == 200 {
				got = append(got, fmt.Sprintf("#%d 200 pos %d", i, resp.Events[0].Position))
				if resp.Events[0].Position < 5 {
					t.Errorf("caller %d: 200 at position %d, inside the other writer's history (1..4): acknowledged on a stale log", i, resp.Events[0].Position)
				}
			} else {
				got = append(got, fmt.Sprintf("#%d %d %s", i, status, body))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		for _, g := range got {
			t.Log(g)
		}
	}
	s3.SetDelay(0)
	if err := first.Close(); err != nil {
		t.Log("close first:", err)
	}
	third := openRole(t, app.RoleExecute, env())
	defer func() { _ = third.Close() }()
	acknowledged := 4 // the open and the other writer's three deposits
	for _, g := range got {
		if strings.Contains(g, " 200 ") {
			acknowledged++
		}
	}
	status, resp, body := command(third, "deposit", `{"account":"a","amount":1}`)
	if status != 200 || int(resp.Events[0].Position) != acknowledged+1 {
		t.Errorf("a fresh instance restored from the replica answered %d %s; want 200 at position %d (after the %d acknowledged)", status, body, acknowledged+1, acknowledged)
	}
}
