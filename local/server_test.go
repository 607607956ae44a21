package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/dashboard"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

func newTestServer(t testing.TB) *server {
	t.Helper()
	cfg, err := config.Load(testEnv(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	a, err := app.Open(context.Background(), cfg, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return newServer(a)
}

func serve(s *server, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// TestRequestTimeout: a read that waits for a position the log never
// reaches answers 503 projection_behind when the request's time is up.
func TestRequestTimeout(t *testing.T) {
	s := newTestServer(t)
	old := requestTimeout
	requestTimeout = 300 * time.Millisecond
	defer func() { requestTimeout = old }()
	rec := serve(s, httptest.NewRequest(http.MethodPost, "/commands/open-account", strings.NewReader(`{"account":"alice","owner":"A"}`)))
	if rec.Code != 200 {
		t.Fatal(rec.Body.String())
	}
	start := time.Now()
	rec = serve(s, httptest.NewRequest(http.MethodGet, "/accounts/alice?min_position=99", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"projection_behind"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("answered after %v", d)
	}
	rec = serve(s, httptest.NewRequest(http.MethodGet, "/accounts/alice?min_position=1", nil))
	if rec.Code != 200 || rec.Body.String() != `{"account":"alice","balance":0,"position":1,"as_of":1}` {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

// TestBrokenBody: a body that cannot be read is answered with a JSON
// error, like every other error.
func TestBrokenBody(t *testing.T) {
	s := newTestServer(t)
	req := httptest.NewRequest(http.MethodPost, "/commands/deposit", io.MultiReader(strings.NewReader(`{"acc`), errReader{}))
	rec := serve(s, req)
	if rec.Code != 400 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
	}
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != "invalid_request" {
		t.Fatalf("%s", rec.Body.String())
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, fmt.Errorf("connection reset") }

var serverStatuses = map[int]bool{200: true, 400: true, 404: true, 405: true, 409: true, 413: true, 422: true, 503: true}

// FuzzServeHTTP feeds raw HTTP requests through the local runner's
// server and the handlers.
func FuzzServeHTTP(f *testing.F) {
	s := newTestServer(f)
	for _, seed := range []struct{ method, target, headers, body string }{
		{"POST", "/commands/open-account", "", `{"account":"alice","owner":"A"}`},
		{"POST", "/commands/deposit", "Idempotency-Key: k\r\n", `{"account":"alice","amount":5}`},
		{"POST", "/commands/deposit", "Transfer-Encoding: chunked\r\n", "5\r\n{\"acc\r\nzz\r\n"},
		{"POST", "/commands/transfer", "X-Correlation-Id: c\r\n", `{"from":"alice","to":"bob","amount":1}`},
		{"GET", "/accounts/alice?min_position=1", "", ""},
		{"GET", "/accounts/alice/history?after=0&limit=5", "", ""},
		{"GET", "/streams/a%2Fb?after=1", "", ""},
		{"GET", "/events?type=AccountOpened&type=x&prefix=account-", "", ""},
		{"GET", "/events?after=%zz", "", ""},
		{"GET", "/projections", "", ""},
		{"GET", "/healthz", "", ""},
		{"GET", "/", "", ""},
		{"GET", "/dashboard/data.json", "", ""},
		{"PUT", "/commands/deposit", "", "{}"},
		{"GET", "http://example.com/accounts/alice", "", ""},
		{"OPTIONS", "*", "", ""},
		{"POST", "/commands/%zz", "", ""},
	} {
		f.Add(seed.method, seed.target, seed.headers, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte) {
		raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: localhost\r\n%s", method, target, headers)
		if !strings.Contains(strings.ToLower(headers), "transfer-encoding") {
			raw += fmt.Sprintf("Content-Length: %d\r\n", len(body))
		}
		raw += "\r\n" + string(body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http refuses it before any handler runs
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		rec := serve(s, req.WithContext(ctx))
		if !serverStatuses[rec.Code] {
			t.Fatalf("%q: status %d %s", raw, rec.Code, rec.Body.String())
		}
		if dashboard.Handles(req.URL.Path) {
			return // the dashboard's page and assets (dashboard's own tests)
		}
		if rec.Header().Get("Content-Type") != "application/json" || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%q: %d %q %q", raw, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
	})
}
