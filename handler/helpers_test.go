package handler_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/internal/syncbuf"
	"github.com/eventcore-go/eventcore/projection"
)

// handlers are the execute and project handlers of a registry over an
// event log and a read-model database opened in a temporary directory.
type handlers struct {
	Store   eventlog.Store
	ReadDB  *sql.DB
	Runner  *projection.Runner
	Execute *handler.Execute
	Project *handler.Project
}

// openHandlers opens the event log and the read-model database in a
// temporary directory, closed when the test ends, and builds reg's
// handlers and projection runner over them; logger nil is slog.Default().
func openHandlers(t testing.TB, reg *handler.Registry, logger *slog.Logger) *handlers {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	opts := sqlite.Options{Synchronous: sqlite.SyncNormal, Journal: sqlite.JournalWAL, Logger: logger}
	store, err := sqlite.Open(ctx, filepath.Join(dir, "events.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	db, err := sql.Open("sqlite", opts.ReadModelDSN(filepath.Join(dir, "projections.db")))
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	runner, err := projection.NewRunner(ctx, db, store, projection.Options{BatchSize: 500, Logger: logger}, reg.Projectors()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = runner.Close() })
	return &handlers{
		Store:  store,
		ReadDB: db,
		Runner: runner,
		Execute: handler.NewExecute(reg, store, handler.ExecuteOptions{
			Cache: cache.New(time.Minute, 1<<20), SnapshotThreshold: 100, Logger: logger,
		}),
		Project: handler.NewProject(reg, store, runner, logger),
	}
}

// env is a bank instance over SQLite files in a temporary directory.
type env struct {
	*handlers
	t   testing.TB
	log *syncbuf.Buffer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	logs := &syncbuf.Buffer{}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	return &env{handlers: openHandlers(t, reg, slog.New(slog.NewJSONHandler(logs, nil))), t: t, log: logs}
}

// response is a handler's answer to one request.
type response struct {
	StatusCode int
	Body       string
	// Headers holds each header under its canonical name, its values
	// joined with commas.
	Headers map[string]string
}

// serve sends one request to h through httptest, under ctx, and returns
// the answer. target is the request URI (path and query string).
func serve(ctx context.Context, h http.Handler, method, target string, headers map[string]string, body string) response {
	req := httptest.NewRequestWithContext(ctx, method, target, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Add(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	_ = res.Body.Close()
	resp := response{StatusCode: res.StatusCode, Body: rec.Body.String()}
	if len(res.Header) > 0 {
		resp.Headers = make(map[string]string, len(res.Header))
		for k, v := range res.Header {
			resp.Headers[k] = strings.Join(v, ",")
		}
	}
	return resp
}

// uri is the request URI of path with the query string query.
func uri(path, query string) string {
	if query == "" {
		return path
	}
	return path + "?" + query
}

// eventResponse is an HTTP API response as a response.
func eventResponse(r events.APIGatewayV2HTTPResponse) response {
	return response{StatusCode: r.StatusCode, Body: r.Body, Headers: r.Headers}
}

func httpRequest(method, rawPath, rawQuery string, headers map[string]string, body string) events.APIGatewayV2HTTPRequest {
	if headers == nil {
		headers = map[string]string{}
	}
	return events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       "$default",
		RawPath:        rawPath,
		RawQueryString: rawQuery,
		Headers:        headers,
		Body:           body,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:  "$default",
			RequestID: "req-test",
			HTTP:      events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: rawPath},
		},
	}
}

// command posts a command and returns the response.
func (e *env) command(name, body string, headers map[string]string) response {
	return serve(context.Background(), e.Execute, http.MethodPost, "/commands/"+name, headers, body)
}

// mustCommand posts a command that must succeed.
func (e *env) mustCommand(name, body string) commandResult {
	e.t.Helper()
	resp := e.command(name, body, nil)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("%s %s: %d %s", name, body, resp.StatusCode, resp.Body)
	}
	return decodeAs[commandResult](e.t, resp.Body)
}

// get answers a read request.
func (e *env) get(path, query string) response {
	return e.getCtx(context.Background(), path, query)
}

func (e *env) getCtx(ctx context.Context, path, query string) response {
	return serve(ctx, e.Project, http.MethodGet, uri(path, query), nil, "")
}

// mustGet reads a route that must answer 200 and decodes it.
func mustGet[T any](e *env, path, query string) T {
	e.t.Helper()
	resp := e.get(path, query)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET %s?%s: %d %s", path, query, resp.StatusCode, resp.Body)
	}
	return decodeAs[T](e.t, resp.Body)
}

func (e *env) head() eventlog.Position { return headOf(e.t, e.Store) }

func headOf(t testing.TB, s eventlog.Store) eventlog.Position {
	t.Helper()
	h, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (e *env) catchUp() {
	e.t.Helper()
	if _, err := e.Project.CatchUp(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// openBank opens alice and bob and deposits 100 into alice.
func (e *env) openBank() {
	e.t.Helper()
	e.mustCommand("open-account", `{"account":"alice","owner":"Alice"}`)
	e.mustCommand("open-account", `{"account":"bob","owner":"Bob"}`)
	e.mustCommand("deposit", `{"account":"alice","amount":100}`)
}

type commandResult struct {
	Attempts int                  `json:"attempts"`
	Events   []handler.EventIndex `json:"events"`
}

type errorResult struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type eventResult struct {
	Position   eventlog.Position `json:"position"`
	Stream     string            `json:"stream"`
	Version    eventlog.Version  `json:"version"`
	Type       string            `json:"type"`
	Data       json.RawMessage   `json:"data"`
	Metadata   json.RawMessage   `json:"metadata"`
	RecordedAt string            `json:"recorded_at"`
}

type feedResult struct {
	Events []eventResult      `json:"events"`
	Next   *eventlog.Position `json:"next"`
}

type streamResult struct {
	Stream  string            `json:"stream"`
	Version *eventlog.Version `json:"version"`
	Events  []eventResult     `json:"events"`
}

type balanceResult struct {
	Account  string            `json:"account"`
	Balance  int64             `json:"balance"`
	Position eventlog.Position `json:"position"`
	AsOf     eventlog.Position `json:"as_of"`
}

// decodeAs decodes a JSON body strictly into T.
func decodeAs[T any](t testing.TB, body string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, body, err)
	}
	return v
}

// errorCode returns the code of an error body, failing when the body is not
// exactly {"error":{"code","message"}}.
func errorCode(t *testing.T, body string) string {
	t.Helper()
	e := decodeAs[errorResult](t, body)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error body without code or message: %s", body)
	}
	return e.Error.Code
}

// wantError checks the status and code of an error answer.
func wantError(t *testing.T, resp response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, resp.Body)
	}
	if got := errorCode(t, resp.Body); got != code {
		t.Fatalf("code %q, want %q: %s", got, code, resp.Body)
	}
	if ct := resp.Headers["Content-Type"]; ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}
