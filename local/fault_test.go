package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// TestInjectedIOErrors injects EIO into the runner's fsyncs, then into its
// writes, of the event log (strace, attached to the running process for a
// window and detached after it), through SQLite's own code path. Every
// command of the window answers 503 storage_unavailable and none is
// acknowledged; the store reopens the database (strace sees it open the
// log's files again: SQLite keeps the main file's descriptor while the
// process's readers have it open, and opens the WAL anew) instead of
// trying the failed transaction again; after the
// window commands are acknowledged again; a restart finds every
// acknowledged command, and PRAGMA integrity_check says ok.
func TestInjectedIOErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the runner and traces it")
	}
	if os.Geteuid() != 0 {
		t.Skip("attaching strace to the runner needs root")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace is not installed")
	}
	bin := buildRunner(t)
	for _, syscall := range []string{"fsync", "pwrite64"} {
		t.Run(syscall, func(t *testing.T) { testInjected(t, bin, syscall) })
	}
}

func testInjected(t *testing.T, bin, syscall string) {
	dir := t.TempDir()
	db := filepath.Join(dir, "events.db")
	env := []string{
		"EVENTCORE_DB=" + db, "EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
		"EVENTCORE_SYNC=full", "EVENTCORE_PROJECTION_INTERVAL=100ms",
	}
	p := launch(t, bin, env)
	do(t, "POST", p.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"attempts":1`)
	type result struct {
		status    int
		code      string
		positions string
	}
	results := map[string]result{}
	client := &http.Client{Timeout: 30 * time.Second}
	deposit := func(key string) result {
		req, _ := http.NewRequest(http.MethodPost, p.url+"/commands/deposit", strings.NewReader(`{"account":"alice","amount":1}`))
		req.Header.Set("Idempotency-Key", key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("deposit %s: %v", key, err)
		}
		defer func() { _ = resp.Body.Close() }()
		var body struct {
			Events []struct {
				Position uint64 `json:"position"`
			} `json:"events"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		r := result{status: resp.StatusCode, code: body.Error.Code}
		for _, e := range body.Events {
			r.positions += fmt.Sprint(e.Position, " ")
		}
		results[key] = r
		return r
	}
	for i := range 5 {
		if r := deposit(fmt.Sprintf("before-%d", i)); r.status != 200 {
			t.Fatalf("before the faults: %+v", r)
		}
	}

	// The window: strace attached with every fsync (or write) of the log's
	// files failing with EIO.
	trace := filepath.Join(t.TempDir(), "trace")
	stopTrace := attachStrace(t, p.cmd.Process.Pid, trace,
		"-P", db, "-P", db+"-wal", "-e", "trace=fsync,fdatasync,pwrite64,open,openat,close", "-e", "inject="+syscall+":error=EIO")
	const faulty = 6
	for i := range faulty {
		key := fmt.Sprintf("faulty-%d", i)
		if r := deposit(key); r.status != http.StatusServiceUnavailable || r.code != "storage_unavailable" {
			t.Fatalf("%s while every %s of the log fails: %+v; want 503 storage_unavailable", key, syscall, r)
		}
	}
	lines := stopTrace()
	injected, reopened := 0, false
	for _, l := range lines {
		if strings.Contains(l, "(INJECTED)") {
			injected++
		} else if injected > 0 && (strings.Contains(l, " open(") || strings.Contains(l, " openat(")) && strings.Contains(l, db) {
			reopened = true
		}
	}
	if injected < faulty {
		t.Fatalf("%d %s calls failed for %d commands:\n%s", injected, syscall, faulty, strings.Join(lines, "\n"))
	}
	if !reopened {
		t.Fatalf("the store did not open the database again after the failed %s:\n%s", syscall, strings.Join(lines, "\n"))
	}
	t.Logf("%s: %d calls failed with EIO, %d commands answered 503 storage_unavailable, the database was reopened", syscall, injected, faulty)

	// After the window: acknowledged again (a command may meet the reopen).
	for i := 0; i < 5; {
		key := fmt.Sprintf("after-%d", i)
		r := deposit(key)
		switch {
		case r.status == 200:
			i++
		case r.code == "storage_unavailable" && len(results) < 20:
		default:
			t.Fatalf("%s after the faults: %+v", key, r)
		}
	}

	// A clean stop, then the file itself: every acknowledged command,
	// integrity ok; and a restarted runner answers them all.
	stopCleanly(t, p)
	store, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := store.DB().QueryRowContext(context.Background(), "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q %v", check, err)
	}
	_ = store.Close()
	p = launch(t, bin, env)
	keys := feedKeys(t, p.url)
	kept := 0
	for key, r := range results {
		got := ""
		for _, pos := range keys[key] {
			got += fmt.Sprint(pos, " ")
		}
		switch {
		case r.status == 200 && got != r.positions:
			t.Fatalf("acknowledged %s at positions %q; after the restart the log has %q", key, r.positions, got)
		case r.status != 200 && got != "":
			kept++ // its outcome was unknown
		}
	}
	t.Logf("%s: %d of the commands answered 503 are in the log", syscall, kept)
	stopCleanly(t, p)
}

// attachStrace attaches strace to every thread of pid, with args, writing
// its trace to file; it returns once strace has attached. The function it
// returns detaches strace and returns the trace's lines.
func attachStrace(t *testing.T, pid int, file string, args ...string) func() []string {
	t.Helper()
	cmd := exec.Command("strace", append([]string{"-f", "-p", strconv.Itoa(pid), "-o", file}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	attached := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "attached") {
				once = true
				close(attached)
			}
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	detach := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(detach)
	select {
	case <-attached:
	case <-exited:
		t.Fatal("strace exited before it attached")
	case <-time.After(10 * time.Second):
		t.Fatal("strace did not attach")
	}
	return func() []string {
		detach()
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
}
