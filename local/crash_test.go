package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// buildRunner builds the local runner into a temporary directory.
func buildRunner(t *testing.T) string { return buildRunnerWith(t, "") }

// buildRunnerWith builds the local runner with build tags.
func buildRunnerWith(t *testing.T, tags string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the runner: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "local")
	cmd := exec.Command(goTool, "build", "-tags", tags, "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a running local runner.
type process struct {
	cmd    *exec.Cmd
	url    string
	stderr *bytes.Buffer // written through errw
	errw   *lockedWriter
	exited chan struct{}
}

// logs returns what the runner has written to stderr so far (its log).
func (p *process) logs() string {
	p.errw.mu.Lock()
	defer p.errw.mu.Unlock()
	return p.stderr.String()
}

// launch starts the binary on a free port and waits for its URL.
func launch(t *testing.T, bin string, env []string) *process {
	t.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), env...)
	p := &process{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	p.errw = &lockedWriter{w: p.stderr}
	cmd.Stderr = p.errw
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "eventcore local runner on "); ok {
				// "URL (dashboard: URL/)"
				urls <- strings.Fields(rest)[0]
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.url = <-urls:
	case <-p.exited:
		t.Fatalf("the runner exited at start: %s", p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("the runner did not start: %s", p.stderr)
	}
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

type acked struct {
	key       string
	positions []eventlog.Position
}

type commandAnswer struct {
	Attempts int `json:"attempts"`
	Events   []struct {
		Stream   string            `json:"stream"`
		Position eventlog.Position `json:"position"`
		Type     string            `json:"type"`
	} `json:"events"`
}

// load sends commands from several goroutines until the runner stops
// answering, and returns the commands it acknowledged with 200.
func load(t *testing.T, url string, round, workers int) []acked {
	var mu sync.Mutex
	var out []acked
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for n := 0; ; n++ {
				key := fmt.Sprintf("r%d-w%d-%d", round, w, n)
				var body string
				if n%3 == 2 {
					body = fmt.Sprintf(`{"from":"acct-%d","to":"acct-%d","amount":1}`, w, (w+1)%workers)
				} else {
					body = fmt.Sprintf(`{"account":"acct-%d","amount":%d}`, w, 1+n%7)
				}
				path := "/commands/deposit"
				if n%3 == 2 {
					path = "/commands/transfer"
				}
				req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
				req.Header.Set("Idempotency-Key", key)
				resp, err := client.Do(req)
				if err != nil {
					return // the runner is gone
				}
				b, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil {
					return
				}
				if resp.StatusCode == http.StatusConflict {
					continue // retries ran out under contention: not acknowledged
				}
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s %s: %d %s", path, body, resp.StatusCode, b)
					return
				}
				var a commandAnswer
				if err := json.Unmarshal(b, &a); err != nil || a.Attempts < 1 || len(a.Events) == 0 {
					t.Errorf("%s: answer %s", key, b)
					return
				}
				ack := acked{key: key}
				for _, e := range a.Events {
					ack.positions = append(ack.positions, e.Position)
				}
				mu.Lock()
				out = append(out, ack)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// feedKeys reads the whole log through GET /events and returns the
// positions recorded under each idempotency key.
func feedKeys(t *testing.T, url string) map[string][]eventlog.Position {
	t.Helper()
	keys := map[string][]eventlog.Position{}
	var after eventlog.Position
	for {
		a := do(t, "GET", fmt.Sprintf("%s/events?after=%d&limit=1000", url, after), "")
		if a.status != 200 {
			t.Fatalf("feed: %d %s", a.status, a.body)
		}
		var page struct {
			Events []struct {
				Position eventlog.Position `json:"position"`
				Metadata struct {
					Key string `json:"idempotency_key"`
				} `json:"metadata"`
			} `json:"events"`
			Next eventlog.Position `json:"next"`
		}
		if err := json.Unmarshal([]byte(a.body), &page); err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			if e.Position != after+1 {
				t.Fatalf("the feed jumps from %d to %d", after, e.Position)
			}
			after = e.Position
			if e.Metadata.Key != "" {
				keys[e.Metadata.Key] = append(keys[e.Metadata.Key], e.Position)
			}
		}
		if len(page.Events) == 0 {
			return keys
		}
	}
}

// TestKillNineLosesNoAcknowledgedCommand kills the runner with SIGKILL at
// random moments while several clients send commands, restarts it on the
// same files, and checks that every command answered 200 is in the log.
func TestKillNineLosesNoAcknowledgedCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills processes")
	}
	if runtime.GOOS == "windows" {
		t.Skip("SIGKILL")
	}
	bin := buildRunner(t)
	dir := t.TempDir()
	env := []string{
		"EVENTCORE_DB=" + filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
		"EVENTCORE_PROJECTION_INTERVAL=100ms",
	}
	p, all := crashRounds(t, bin, env)
	// A retry of an acknowledged command answers its first events.
	for _, a := range all[:min(len(all), 5)] {
		resp := do(t, "POST", p.url+"/commands/deposit", `{"account":"acct-0","amount":1}`, "Idempotency-Key", a.key).want(t, 200, `"attempts":0`)
		if !strings.Contains(resp.body, fmt.Sprintf(`"position":%d,`, a.positions[0])) {
			t.Fatalf("retry of %s answered %s", a.key, resp.body)
		}
	}
	stopCleanly(t, p) // a clean stop after the crashes

	// And directly in the event log file.
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	for _, a := range all {
		records, found, err := store.LookupCommand(context.Background(), a.key)
		if err != nil || !found || len(records) != len(a.positions) {
			t.Fatalf("LookupCommand(%s): %d records, %v, %v", a.key, len(records), found, err)
		}
		for i, r := range records {
			if r.Position != a.positions[i] {
				t.Fatalf("%s: position %d, answered %d", a.key, r.Position, a.positions[i])
			}
		}
	}
}

// crashWorkers is how many clients crashRounds runs.
const crashWorkers = 6

// crashRounds starts the runner, funds crashWorkers accounts, and three
// times kills it with SIGKILL under load and starts it again, checking
// after each restart that every command acknowledged so far is in the
// log. It returns the running runner and every acknowledged command.
func crashRounds(t *testing.T, bin string, env []string) (*process, []acked) {
	t.Helper()
	p := launch(t, bin, env)
	seedAccounts(t, p.url, crashWorkers)
	var all []acked
	for round := range 3 {
		all = append(all, killDuringLoad(t, p, round, crashWorkers)...)
		p = launch(t, bin, env)
		requireAcknowledged(t, p.url, round, all)
	}
	return p, all
}

// seedAccounts opens accounts acct-0 ... acct-(workers-1) with money.
func seedAccounts(t *testing.T, url string, workers int) {
	t.Helper()
	for w := range workers {
		do(t, "POST", url+"/commands/open-account", fmt.Sprintf(`{"account":"acct-%d","owner":"Owner %d"}`, w, w)).want(t, 200, `"attempts":1`)
		do(t, "POST", url+"/commands/deposit", fmt.Sprintf(`{"account":"acct-%d","amount":1000000}`, w)).want(t, 200, `"attempts":1`)
	}
}

// killDuringLoad sends commands from workers clients, kills the runner
// with SIGKILL at a random moment, and returns the commands it answered
// 200; at least one must have been.
func killDuringLoad(t *testing.T, p *process, round, workers int) []acked {
	t.Helper()
	done := make(chan []acked, 1)
	go func() { done <- load(t, p.url, round, workers) }()
	time.Sleep(time.Duration(150+rand.IntN(600)) * time.Millisecond)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	got := <-done
	if len(got) == 0 {
		t.Fatalf("round %d: no command was acknowledged before the kill", round)
	}
	t.Logf("round %d: %d commands acknowledged before SIGKILL", round, len(got))
	return got
}

// requireAcknowledged checks through GET /events that every acknowledged
// command is in the log at the positions it answered, and that positions
// run without a gap.
func requireAcknowledged(t *testing.T, url string, round int, all []acked) {
	t.Helper()
	keys := feedKeys(t, url)
	for _, a := range all {
		pos, ok := keys[a.key]
		if !ok {
			t.Fatalf("round %d: acknowledged command %s is not in the log", round, a.key)
		}
		if fmt.Sprint(pos) != fmt.Sprint(a.positions) {
			t.Fatalf("command %s answered positions %v, the log has %v", a.key, a.positions, pos)
		}
	}
}

// stopCleanly stops the runner with SIGINT and requires exit code 0.
func stopCleanly(t *testing.T, p *process) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the runner did not stop on SIGINT")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGINT: %s", code, p.stderr)
	}
}
