package handler_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/projection"
)

// mount is the bank's handlers on a store opened in a temporary
// directory, mounted in a plain ServeMux as a user's server would, behind
// a middleware.
func mount(t *testing.T) (*httptest.Server, *projection.Runner) {
	t.Helper()
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	h := openHandlers(t, reg, nil)
	mux := http.NewServeMux()
	mux.Handle("/commands/", h.Execute)
	mux.Handle("/", h.Project)
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(auth)
	t.Cleanup(srv.Close)
	return srv, h.Runner
}

// reply is an answer of the test server.
type reply struct {
	StatusCode int
	Header     http.Header
}

func send(t *testing.T, srv *httptest.Server, method, target, body string) (reply, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{StatusCode: resp.StatusCode, Header: resp.Header}, string(b)
}

// TestServeHTTP drives the handlers as http.Handlers in a user's own
// server: commands, a read of one's own write with as_of, and the JSON
// 404 and 405 answers.
func TestServeHTTP(t *testing.T) {
	srv, _ := mount(t)
	resp, body := send(t, srv, "POST", "/commands/open-account", `{"account":"alice","owner":"A"}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Correlation-Id") == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = send(t, srv, "POST", "/commands/deposit", `{"account":"alice","amount":7}`)
	var res struct {
		Events []handler.EventIndex `json:"events"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil || resp.StatusCode != http.StatusOK || len(res.Events) != 1 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// No catch-up ran: the read catches the projection up itself.
	resp, body = send(t, srv, "GET", "/accounts/alice?min_position=2", "")
	if resp.StatusCode != http.StatusOK || body != `{"account":"alice","balance":7,"position":2,"as_of":2}` {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, c := range []struct {
		method, target, body string
		status               int
		code, allow          string
	}{
		{"GET", "/commands/deposit", "", 405, "method_not_allowed", "POST"},
		{"DELETE", "/accounts/alice", "", 405, "method_not_allowed", "GET"},
		{"HEAD", "/projections", "", 405, "", "GET"},
		{"GET", "/nothing", "", 404, "not_found", ""},
		{"POST", "/commands/nope", "{}", 404, "unknown_command", ""},
		{"POST", "/commands/deposit", strings.Repeat(" ", handler.MaxBodyBytes+1), 413, "too_large", ""},
		{"POST", "/commands/deposit", `{"account":"alice","amount":1.5}`, 400, "invalid_request", ""},
		{"GET", "/events?after=%zz", "", 400, "invalid_request", ""},
	} {
		resp, body := send(t, srv, c.method, c.target, c.body)
		if resp.StatusCode != c.status || !strings.Contains(body, c.code) || resp.Header.Get("Allow") != c.allow ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d Allow %q %s", c.method, c.target, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	}
}

// TestWaitForWakesOnCommit: a read waiting for a position wakes when
// another call commits the batch that reaches it, well before the poll
// interval would have it look again.
func TestWaitForWakesOnCommit(t *testing.T) {
	srv, runner := mount(t)
	if resp, body := send(t, srv, "POST", "/commands/open-account", `{"account":"bob","owner":"B"}`); resp.StatusCode != http.StatusOK {
		t.Fatal(body)
	}
	done := make(chan string, 1)
	go func() {
		_, body := send(t, srv, "GET", "/accounts/bob?min_position=2", "")
		done <- body
	}()
	time.Sleep(50 * time.Millisecond) // the read waits: position 2 is not in the log
	if resp, body := send(t, srv, "POST", "/commands/deposit", `{"account":"bob","amount":3}`); resp.StatusCode != http.StatusOK {
		t.Fatal(body)
	}
	if _, err := runner.CatchUp(context.Background(), "balances", 0); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-done:
		if body != `{"account":"bob","balance":3,"position":2,"as_of":2}` {
			t.Fatal(body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read did not wake")
	}
}
