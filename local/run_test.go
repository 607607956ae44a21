package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/handler"
)

// testEnv is an environment with both databases in dir.
func testEnv(dir string, extra ...string) func(string) string {
	vars := map[string]string{
		"EVENTCORE_DB":      filepath.Join(dir, "data", "events.db"),
		"EVENTCORE_READ_DB": filepath.Join(dir, "data", "projections.db"),
		"EVENTCORE_SYNC":    "normal",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		vars[extra[i]] = extra[i+1]
	}
	return func(name string) string { return vars[name] }
}

// started is a run in a goroutine.
type started struct {
	url    string
	cancel context.CancelFunc
	done   chan error
}

// start runs the local runner on a free port until the test ends.
func start(t testing.TB, getenv func(string) string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() { s.done <- run(ctx, "127.0.0.1:0", getenv, func(url string) { ready <- url }) }()
	select {
	case s.url = <-ready:
	case err := <-s.done:
		cancel()
		t.Fatalf("run ended before it was ready: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("run did not get ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("run did not stop")
		}
	})
	return s
}

// stop cancels the run and returns its error.
func (s *started) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop")
		return nil
	}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, body string, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (a answer) want(t *testing.T, status int, contains string) answer {
	t.Helper()
	if a.status != status || !strings.Contains(a.body, contains) {
		t.Fatalf("answered %d %s; want %d with %s", a.status, a.body, status, contains)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return a
}

type balance struct {
	Account  string `json:"account"`
	Balance  int64  `json:"balance"`
	Position uint64 `json:"position"`
}

// eventually polls f until it holds or the time is up.
func eventually(t *testing.T, within time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWalkThrough(t *testing.T) {
	// A timer that never fires: the projections must catch up because a
	// command woke them.
	walkThrough(t, testEnv(t.TempDir(), "EVENTCORE_PROJECTION_INTERVAL", "1h"))
}

// walkThrough runs every route of the runner started with getenv, on an
// empty log.
func walkThrough(t *testing.T, getenv func(string) string) {
	s := start(t, getenv)
	u := s.url

	do(t, "GET", u+"/healthz", "").want(t, 200, `{"status":"ok"}`)
	do(t, "POST", u+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).
		want(t, 200, `{"attempts":1,"events":[{"stream":"account-alice","version":1,"position":1,"type":"AccountOpened"}]}`)
	do(t, "POST", u+"/commands/open-account", `{"account":"bob","owner":"Bob"}`).want(t, 200, `"position":2`)
	do(t, "POST", u+"/commands/deposit", `{"account":"alice","amount":100}`).want(t, 200, `"type":"MoneyDeposited"`)
	tr := do(t, "POST", u+"/commands/transfer", `{"from":"alice","to":"bob","amount":25}`,
		"Idempotency-Key", "t-1", "X-Correlation-Id", "corr-7", "X-Causation-Id", "cause-7").want(t, 200, `"attempts":1`)
	if tr.header.Get("X-Correlation-Id") != "corr-7" {
		t.Fatalf("X-Correlation-Id %q", tr.header.Get("X-Correlation-Id"))
	}
	// A retry of the transfer changes nothing.
	if again := do(t, "POST", u+"/commands/transfer", `{"from":"alice","to":"bob","amount":25}`, "Idempotency-Key", "t-1").want(t, 200, `"attempts":0`); strings.Replace(again.body, `"attempts":0`, `"attempts":1`, 1) != tr.body {
		t.Fatalf("repeat %s, first %s", again.body, tr.body)
	}

	// The projections catch up on their own.
	eventually(t, 15*time.Second, "balances caught up", func() bool {
		a := do(t, "GET", u+"/accounts/alice", "")
		var b balance
		return a.status == 200 && json.Unmarshal([]byte(a.body), &b) == nil && b.Balance == 75 && b.Position == 4
	})
	eventually(t, 15*time.Second, "projections caught up", func() bool {
		return do(t, "GET", u+"/projections", "").body == `{"projections":[{"name":"balances","checkpoint":5,"head":5,"lag":0,"dead_letters":0},{"name":"history","checkpoint":5,"head":5,"lag":0,"dead_letters":0}]}`
	})
	do(t, "GET", u+"/accounts/bob", "").want(t, 200, `{"account":"bob","balance":25,"position":5,"as_of":5}`)
	do(t, "GET", u+"/accounts/bob/history", "").want(t, 200, `"counterparty":"alice"`)

	// Read your writes.
	do(t, "POST", u+"/commands/deposit", `{"account":"bob","amount":5}`).want(t, 200, `"position":6`)
	do(t, "GET", u+"/accounts/bob?min_position=6", "").want(t, 200, `{"account":"bob","balance":30,"position":6,"as_of":6}`)

	// The event log routes.
	do(t, "GET", u+"/streams/account-alice?after=2", "").want(t, 200, `"version":3`)
	do(t, "GET", u+"/streams/account-nobody", "").want(t, 200, `{"stream":"account-nobody","version":0,"events":[]}`)
	do(t, "GET", u+"/events?type=TransferDebited&type=TransferCredited", "").want(t, 200, `"next":5`)
	feed := do(t, "GET", u+"/events?after=3&limit=1", "").want(t, 200, `"next":4`)
	for _, k := range []string{`"idempotency_key":"t-1"`, `"correlation_id":"corr-7"`, `"causation_id":"cause-7"`, `"command":"transfer"`} {
		if !strings.Contains(feed.body, k) {
			t.Fatalf("feed %s without %s", feed.body, k)
		}
	}
	// Errors come through unchanged.
	do(t, "POST", u+"/commands/withdraw", `{"account":"bob","amount":1000}`).want(t, 422, `"insufficient_funds"`)
	do(t, "POST", u+"/commands/deposit", `{"account":"bob","amount":1.5}`).want(t, 400, `"invalid_request"`)
	do(t, "POST", u+"/commands/nope", `{`).want(t, 404, `"unknown_command"`)
	do(t, "POST", u+"/nope", `{}`).want(t, 404, `"not_found"`)
	// The dashboard serves GET /; other methods there get the API's JSON 404.
	if a := do(t, "POST", u+"/", `{"account":"alice","amount":5}`).want(t, 404, `"not_found"`); a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST / answered %q", a.header.Get("Content-Type"))
	}
	do(t, "DELETE", u+"/dashboard/data.json", "").want(t, 404, `"not_found"`)
	do(t, "GET", u+"/accounts/carol", "").want(t, 404, `"account_not_found"`)
	if a := do(t, "GET", u+"/commands/deposit", "").want(t, 405, `"method_not_allowed"`); a.header.Get("Allow") != "POST" {
		t.Fatalf("Allow %q", a.header.Get("Allow"))
	}
	if a := do(t, "DELETE", u+"/accounts/bob", "").want(t, 405, `"method_not_allowed"`); a.header.Get("Allow") != "GET" {
		t.Fatalf("Allow %q", a.header.Get("Allow"))
	}
	big := `{"account":"bob","amount":5,"pad":"` + strings.Repeat("x", handler.MaxBodyBytes) + `"}`
	do(t, "POST", u+"/commands/deposit", big).want(t, 413, `"too_large"`)
	do(t, "GET", u+"/events?limit=5000", "").want(t, 400, `"invalid_request"`)
	do(t, "GET", u+"/events?after=%zz", "").want(t, 400, `"invalid_request"`)
	do(t, "GET", u+"/accounts/bob?min_position=x", "").want(t, 400, `"invalid_request"`)

	do(t, "GET", u+"/accounts/bob", "").want(t, 200, `"balance":30`)
	if err := s.stop(t); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if resp, err := http.Get(u + "/healthz"); err == nil {
		_ = resp.Body.Close()
		t.Fatal("still serving after the context ended")
	}
}

// TestTimerCatchesUp appends to the log behind the runner's back (another
// writer of the same file): the interval timer catches the projections up.
func TestTimerCatchesUp(t *testing.T) {
	dir := t.TempDir()
	getenv := testEnv(dir, "EVENTCORE_PROJECTION_INTERVAL", "50ms")
	s := start(t, getenv)
	store, err := sqlite.Open(context.Background(), getenv("EVENTCORE_DB"), sqlite.Options{Synchronous: sqlite.SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	alice := eventlog.MustStreamID("account-alice")
	_, err = store.Append(context.Background(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: alice}},
		Events: []eventlog.Event{
			{Stream: alice, Type: "AccountOpened", Data: json.RawMessage(`{"account":"alice","owner":"A"}`)},
			{Stream: alice, Type: "MoneyDeposited", Data: json.RawMessage(`{"account":"alice","amount":42}`)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	slash := eventlog.MustStreamID("orders/1")
	if _, err := store.Append(context.Background(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: slash}},
		Events:   []eventlog.Event{{Stream: slash, Type: "OrderPlaced", Data: json.RawMessage(`{}`)}},
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "timer catch-up", func() bool {
		return do(t, "GET", s.url+"/accounts/alice", "").body == `{"account":"alice","balance":42,"position":2,"as_of":3}`
	})
	do(t, "GET", s.url+"/streams/orders%2F1", "").want(t, 200, `{"stream":"orders/1","version":1,"events":[{"position":3,"stream":"orders/1"`)
	do(t, "GET", s.url+"/streams/orders/1", "").want(t, 404, `"not_found"`)
}

// TestShutdownWithRequestInFlight cancels the context while a command's
// body is still arriving: the command completes and is answered, then run
// returns nil.
func TestShutdownWithRequestInFlight(t *testing.T) {
	dir := t.TempDir()
	getenv := testEnv(dir)
	s := start(t, getenv)
	do(t, "POST", s.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"position":1`)

	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, s.url+"/commands/deposit", pr)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		status int
		body   string
		err    error
	}
	answered := make(chan result, 1)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			answered <- result{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		answered <- result{status: resp.StatusCode, body: string(b), err: err}
	}()
	if _, err := io.WriteString(pw, `{"account":"alice",`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the server is reading the body
	s.cancel()
	// The listener closes: new connections are refused while the request
	// is still open.
	eventually(t, 5*time.Second, "listener closed", func() bool {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
		resp, err := c.Get(s.url + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
		}
		return err != nil
	})
	select {
	case err := <-s.done:
		t.Fatalf("run returned %v with a request in flight", err)
	default:
	}
	if _, err := io.WriteString(pw, `"amount":7}`); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	select {
	case r := <-answered:
		if r.err != nil || r.status != 200 || !strings.Contains(r.body, `"position":2`) {
			t.Fatalf("in-flight request: %d %s %v", r.status, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight request was not answered")
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
		s.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	// The databases are closed and the deposit is in the log.
	store, err := sqlite.Open(context.Background(), getenv("EVENTCORE_DB"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	if h, err := store.Head(context.Background()); err != nil || h != 2 {
		t.Fatalf("head %d %v", h, err)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	ready := func(string) { t.Error("ready called") }
	err := run(context.Background(), "127.0.0.1:0", testEnv(dir, "EVENTCORE_SYNC", "sometimes"), ready)
	if err == nil || !strings.HasPrefix(err.Error(), "EVENTCORE_SYNC: ") {
		t.Fatalf("bad config: %v", err)
	}
	err = run(context.Background(), "127.0.0.1:notaport", testEnv(dir), ready)
	if err == nil || !strings.HasPrefix(err.Error(), "-addr: ") {
		t.Fatalf("bad address: %v", err)
	}
	// A port in use.
	s := start(t, testEnv(t.TempDir()))
	addr := strings.TrimPrefix(s.url, "http://")
	err = run(context.Background(), addr, testEnv(t.TempDir()), ready)
	if err == nil || !strings.HasPrefix(err.Error(), "-addr: ") {
		t.Fatalf("port in use: %v", err)
	}
	// A database directory that cannot be created.
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), "127.0.0.1:0", testEnv(dir, "EVENTCORE_DB", filepath.Join(blocker, "events.db")), ready)
	if err == nil || !strings.HasPrefix(err.Error(), "EVENTCORE_DB: ") {
		t.Fatalf("bad path: %v", err)
	}
	err = run(context.Background(), "127.0.0.1:0", testEnv(dir, "EVENTCORE_READ_DB", filepath.Join(blocker, "p.db")), ready)
	if err == nil || !strings.HasPrefix(err.Error(), "EVENTCORE_READ_DB: ") {
		t.Fatalf("bad read path: %v", err)
	}
}
