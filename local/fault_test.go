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
	"sync"
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
		t.Run(syscall, func(t *testing.T) { testInjected(t, bin, syscall, false) })
	}
	// Failed fsyncs under group commits: concurrent deposits, and only the
	// first fsync on each of the runtime's threads fails. Each batch that
	// met one answers 503, and none of it is acknowledged, also after the
	// reopen: trying the transaction again on the same connection (whose
	// next fsync would succeed), or one append at a time, would
	// acknowledge it.
	t.Run("fsync once in a group commit", func(t *testing.T) { testInjected(t, bin, "fsync", true) })
}

// testInjected runs a window of deposits with syscall failing with EIO on
// the log's files: every call, the deposits one after another; or (once)
// the first call only, the deposits concurrent.
func testInjected(t *testing.T, bin, syscall string, once bool) {
	dir := t.TempDir()
	db := filepath.Join(dir, "events.db")
	env := []string{
		"EVENTCORE_DB=" + db, "EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
		"EVENTCORE_SYNC=full", "EVENTCORE_PROJECTION_INTERVAL=100ms",
	}
	p := launch(t, bin, env)
	// The once window's concurrent deposits go to accounts of their own,
	// so that they may share commits; the more at once, the likelier a
	// failed commit holds several.
	const faulty = 16
	for i := -1; i < faulty; i++ {
		account := fmt.Sprintf("acct-%d", i)
		if i < 0 {
			account = "alice"
		}
		do(t, "POST", p.url+"/commands/open-account", `{"account":"`+account+`","owner":"A"}`).want(t, 200, `"attempts":1`)
	}
	type result struct {
		status    int
		code      string
		positions string
	}
	var resultsMu sync.Mutex
	results := map[string]result{}
	client := &http.Client{Timeout: 30 * time.Second}
	deposit := func(key, account string) result {
		req, _ := http.NewRequest(http.MethodPost, p.url+"/commands/deposit", strings.NewReader(`{"account":"`+account+`","amount":1}`))
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
		resultsMu.Lock()
		results[key] = r
		resultsMu.Unlock()
		return r
	}
	for i := range 5 {
		if r := deposit(fmt.Sprintf("before-%d", i), fmt.Sprintf("acct-%d", i)); r.status != 200 {
			t.Fatalf("before the faults: %+v", r)
		}
	}

	// The window: strace attached with every fsync (or write) of the log's
	// files failing with EIO.
	trace := filepath.Join(t.TempDir(), "trace")
	args := []string{"-P", db, "-P", db + "-wal", "-e", "trace=fsync,fdatasync,pwrite64,open,openat,close", "-e", "inject=" + syscall + ":error=EIO"}
	if once {
		// strace counts when= per thread: the first fsync of each of the
		// runtime's threads fails, later ones succeed.
		args[len(args)-1] += ":when=1"
	}
	stopTrace := attachStrace(t, p.cmd.Process.Pid, trace, args...)
	if once {
		var wg sync.WaitGroup
		for i := range faulty {
			wg.Go(func() { deposit(fmt.Sprintf("faulty-%d", i), fmt.Sprintf("acct-%d", i)) })
		}
		wg.Wait()
		// The reopen may follow the window's last answer: strace stays
		// attached until it has traced it (or 10 s; the check below fails).
		reopenedIn(trace, db, 10*time.Second)
	} else {
		for i := range faulty {
			key := fmt.Sprintf("faulty-%d", i)
			if r := deposit(key, "alice"); r.status != http.StatusServiceUnavailable || r.code != "storage_unavailable" {
				t.Fatalf("%s while every %s of the log fails: %+v; want 503 storage_unavailable", key, syscall, r)
			}
		}
	}
	lines := stopTrace()
	injected, reopened := traceFaults(lines, db)
	switch {
	case once:
		for i := range faulty {
			if r := results[fmt.Sprintf("faulty-%d", i)]; r.status != 200 && r.code != "storage_unavailable" {
				t.Fatalf("faulty-%d: %+v; want 200, or 503 storage_unavailable", i, r)
			}
		}
		// Every failed fsync failed a batch, which the store logs with its
		// commands, and every one of those answered 503. A batch tried again
		// (on the same connection, or one append at a time), whose next
		// fsync succeeds, is logged for no failed fsync or is acknowledged.
		batches, named := failedBatches(t, p.logs())
		if injected == 0 || batches != injected {
			t.Fatalf("%d failed batches logged for %d failed %s calls:\n%s\n%s", batches, injected, syscall, p.logs(), strings.Join(lines, "\n"))
		}
		for _, key := range named {
			if r := results[key]; r.status != http.StatusServiceUnavailable {
				t.Fatalf("%s was in a batch whose %s failed, and answered %+v; want 503", key, syscall, r)
			}
		}
		t.Logf("%d failed %s calls under %d concurrent commands: their batches held %d", injected, syscall, faulty, len(named))
	case injected < faulty:
		t.Fatalf("%d %s calls failed for %d commands:\n%s", injected, syscall, faulty, strings.Join(lines, "\n"))
	default:
		t.Logf("%s: %d calls failed with EIO, %d commands answered 503 storage_unavailable", syscall, injected, faulty)
	}
	if !reopened {
		t.Fatalf("the store did not open the database again after the failed %s:\n%s", syscall, strings.Join(lines, "\n"))
	}

	// After the window: acknowledged again (a command may meet the reopen).
	for i := 0; i < 5; {
		key := fmt.Sprintf("after-%d", i)
		r := deposit(key, "alice")
		switch {
		case r.status == 200:
			i++
		case r.code == "storage_unavailable" && len(results) < 5+faulty+15: // a few meet the reopen
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

// failedBatches reads the store's log lines for batches whose storage
// failed: how many, and the command ids (Idempotency-Keys) they held.
func failedBatches(t *testing.T, logs string) (batches int, commands []string) {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "event log storage failed") {
			continue
		}
		var entry struct {
			Commands []string `json:"commands"`
		}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		batches++
		commands = append(commands, entry.Commands...)
	}
	return batches, commands
}

// traceFaults counts the injected EIO failures in a trace's lines and
// reports whether db's files were opened after the first of them.
func traceFaults(lines []string, db string) (injected int, reopened bool) {
	for _, l := range lines {
		if strings.Contains(l, "EIO") && strings.Contains(l, "(INJECTED)") {
			injected++
		} else if injected > 0 && (strings.Contains(l, " open(") || strings.Contains(l, " openat(")) && strings.Contains(l, db) {
			reopened = true
		}
	}
	return injected, reopened
}

// reopenedIn waits until the trace strace is writing to file shows db
// opened after an injected failure, or for at most limit.
func reopenedIn(file, db string, limit time.Duration) {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if _, reopened := traceFaults(strings.Split(string(b), "\n"), db); reopened {
			return
		}
	}
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
