package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/handler"
)

// keysOf returns the sorted keys of a JSON object.
func keysOf(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %s", raw)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestAccountRoutes(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.mustCommand("transfer", `{"from":"alice","to":"bob","amount":25}`)
	e.catchUp()

	resp := e.get("/accounts/alice", "")
	if resp.StatusCode != http.StatusOK || resp.Body != `{"account":"alice","balance":75,"position":4,"as_of":5}` {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	if b := mustGet[balanceResult](e, "/accounts/bob", ""); b.Balance != 25 || b.Position != 5 {
		t.Fatalf("bob %+v", b)
	}
	wantError(t, e.get("/accounts/carol", ""), 404, "account_not_found")
	wantError(t, e.get("/accounts/carol/history", ""), 404, "account_not_found")
	for _, bad := range []string{"/accounts/al%20ice", "/accounts/" + strings.Repeat("a", 65), "/accounts/a%2Fb", "/accounts/%C3%A4", "/accounts/al%20ice/history"} {
		wantError(t, e.get(bad, ""), 400, "invalid_request")
	}

	type movement struct {
		Position     eventlog.Position `json:"position"`
		Type         string            `json:"type"`
		Amount       int64             `json:"amount"`
		Balance      int64             `json:"balance"`
		Counterparty *string           `json:"counterparty"`
		RecordedAt   string            `json:"recorded_at"`
	}
	type historyResult struct {
		Account string            `json:"account"`
		History []movement        `json:"history"`
		AsOf    eventlog.Position `json:"as_of"`
	}
	h := mustGet[historyResult](e, "/accounts/alice/history", "")
	if h.Account != "alice" || len(h.History) != 3 {
		t.Fatalf("history %+v", h)
	}
	last := h.History[2]
	if last.Type != bank.TypeTransferDebited || last.Amount != 25 || last.Balance != 75 || last.Counterparty == nil || *last.Counterparty != "bob" || last.Position != 4 {
		t.Fatalf("last movement %+v", last)
	}
	if h.History[0].Counterparty != nil {
		t.Fatalf("an opening has no counterparty: %+v", h.History[0])
	}
	for _, m := range h.History {
		if _, err := time.Parse(time.RFC3339Nano, m.RecordedAt); err != nil || !strings.HasSuffix(m.RecordedAt, "Z") {
			t.Fatalf("recorded_at %q", m.RecordedAt)
		}
	}
	page := mustGet[historyResult](e, "/accounts/alice/history", "after=1&limit=1")
	if len(page.History) != 1 || page.History[0].Position != 3 {
		t.Fatalf("page %+v", page)
	}
	for _, q := range []string{"after=-1", "after=x", "limit=0", "limit=1001", "limit=x", "limit=1&limit=2", "after=1&after=2"} {
		wantError(t, e.get("/accounts/alice/history", q), 400, "invalid_request")
	}
}

func TestProjectRouteErrors(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/", "/nope", "/accounts", "/accounts/", "/accounts/alice/", "/accounts/alice/history/x", "/streams", "/streams/", "/events/", "/projections/x"} {
		wantError(t, e.get(path, ""), 404, "not_found")
	}
	// An event's path that does not unescape is a path no route has.
	wantError(t, eventResponse(e.Project.HandleHTTP(context.Background(), httpRequest(http.MethodGet, "/accounts/%zz", "", nil, ""))), 404, "not_found")
	for _, path := range []string{"/accounts/alice", "/accounts/alice/history", "/projections", "/events", "/streams/s"} {
		resp := serve(context.Background(), e.Project, http.MethodPost, path, nil, "{}")
		wantError(t, resp, 405, "method_not_allowed")
		if resp.Headers["Allow"] != http.MethodGet {
			t.Fatalf("%s: Allow %q", path, resp.Headers["Allow"])
		}
	}
}

func TestProjectionsRoute(t *testing.T) {
	e := newEnv(t)
	resp := e.get("/projections", "")
	want := `{"projections":[{"name":"balances","checkpoint":0,"head":0,"lag":0,"dead_letters":0},{"name":"history","checkpoint":0,"head":0,"lag":0,"dead_letters":0}]}`
	if resp.StatusCode != http.StatusOK || resp.Body != want {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	e.openBank()
	resp = e.get("/projections", "")
	if !strings.Contains(resp.Body, `{"name":"balances","checkpoint":0,"head":3,"lag":3,"dead_letters":0}`) {
		t.Fatal(resp.Body)
	}
	e.catchUp()
	resp = e.get("/projections", "")
	want = `{"projections":[{"name":"balances","checkpoint":3,"head":3,"lag":0,"dead_letters":0},{"name":"history","checkpoint":3,"head":3,"lag":0,"dead_letters":0}]}`
	if resp.Body != want {
		t.Fatal(resp.Body)
	}
}

// appendRaw records events of type typ with the given data into stream.
func appendRaw(t testing.TB, s eventlog.Store, stream, typ string, data ...string) {
	t.Helper()
	id := eventlog.MustStreamID(stream)
	v, err := s.StreamVersions(context.Background(), []eventlog.StreamID{id})
	if err != nil {
		t.Fatal(err)
	}
	req := eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: id, Version: v[0]}}}
	for _, d := range data {
		req.Events = append(req.Events, eventlog.Event{Stream: id, Type: typ, Data: json.RawMessage(d)})
	}
	if _, err := s.Append(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// checkEvent checks the shape of an event of the read API.
func checkEvent(t *testing.T, ev eventResult) {
	t.Helper()
	if ev.Position == 0 || ev.Version == 0 || ev.Stream == "" || ev.Type == "" {
		t.Fatalf("event %+v", ev)
	}
	if len(ev.Data) == 0 || ev.Data[0] != '{' {
		t.Fatalf("data is not an object: %s", ev.Data)
	}
	keys := keysOf(t, ev.Metadata)
	if !slices.Contains(keys, "event_id") {
		t.Fatalf("metadata without event_id: %s", ev.Metadata)
	}
	for _, k := range keys {
		if !slices.Contains([]string{"event_id", "command", "correlation_id", "causation_id", "idempotency_key"}, k) {
			t.Fatalf("metadata key %q: %s", k, ev.Metadata)
		}
	}
	at, err := time.Parse(time.RFC3339Nano, ev.RecordedAt)
	if err != nil || at.Location() != time.UTC || !strings.HasSuffix(ev.RecordedAt, "Z") {
		t.Fatalf("recorded_at %q is not RFC 3339 UTC", ev.RecordedAt)
	}
	if time.Since(at) > time.Hour || time.Until(at) > time.Minute {
		t.Fatalf("recorded_at %v is not now", at)
	}
}

func TestStreamRoute(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.mustCommand("withdraw", `{"account":"alice","amount":10}`)
	appendRaw(t, e.Store, "orders/2024/1", "OrderPlaced", `{"n":1}`, `{"n":2}`)

	resp := e.get("/streams/account-alice", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	if got := keysOf(t, []byte(resp.Body)); fmt.Sprint(got) != "[events stream version]" {
		t.Fatalf("keys %v", got)
	}
	s := decodeAs[streamResult](t, resp.Body)
	if s.Stream != "account-alice" || s.Version == nil || *s.Version != 3 || len(s.Events) != 3 {
		t.Fatalf("%s", resp.Body)
	}
	for i, ev := range s.Events {
		checkEvent(t, ev)
		if ev.Version != eventlog.Version(i+1) || ev.Stream != "account-alice" {
			t.Fatalf("event %d: %+v", i, ev)
		}
		if got := keysOf(t, mustMarshal(t, ev)); fmt.Sprint(got) != "[data metadata position recorded_at stream type version]" {
			t.Fatal(got)
		}
	}
	if s.Events[0].Type != bank.TypeAccountOpened || string(s.Events[0].Data) != `{"account":"alice","owner":"Alice"}` {
		t.Fatalf("first event %+v", s.Events[0])
	}
	var md map[string]string
	if err := json.Unmarshal(s.Events[0].Metadata, &md); err != nil || md["command"] != "open-account" || md["correlation_id"] == "" {
		t.Fatalf("metadata %s", s.Events[0].Metadata)
	}
	// after and limit page through the stream; version stays the current one.
	page := mustGet[streamResult](e, "/streams/account-alice", "after=1&limit=1")
	if *page.Version != 3 || len(page.Events) != 1 || page.Events[0].Version != 2 {
		t.Fatalf("page %+v", page)
	}
	page = mustGet[streamResult](e, "/streams/account-alice", "after=3")
	if *page.Version != 3 || page.Events == nil || len(page.Events) != 0 {
		t.Fatalf("after the end %+v", page)
	}
	// A stream with no events.
	resp = e.get("/streams/account-nobody", "")
	if resp.StatusCode != http.StatusOK || resp.Body != `{"stream":"account-nobody","version":0,"events":[]}` {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	// A stream id with "/" is path-escaped.
	esc := "/streams/" + url.PathEscape("orders/2024/1")
	s = mustGet[streamResult](e, esc, "limit=1")
	if s.Stream != "orders/2024/1" || *s.Version != 2 || len(s.Events) != 1 || string(s.Events[0].Data) != `{"n":1}` {
		t.Fatalf("%+v", s)
	}
	wantError(t, e.get("/streams/orders/2024/1", ""), 404, "not_found")
	// Other escapes work too.
	appendRaw(t, e.Store, "a b#c%d&e+f", "Odd", `{}`)
	if s := mustGet[streamResult](e, "/streams/"+url.PathEscape("a b#c%d&e+f"), ""); s.Stream != "a b#c%d&e+f" || *s.Version != 1 {
		t.Fatalf("%+v", s)
	}
	for _, q := range []string{"after=-1", "after=1.5", "limit=0", "limit=1001", "limit=", "after=1&after=2"} {
		wantError(t, e.get("/streams/account-alice", q), 400, "invalid_request")
	}
	for _, p := range []string{"/streams/a%2Ab", "/streams/a%5B", "/streams/%07", "/streams/" + strings.Repeat("s", 256)} {
		wantError(t, e.get(p, ""), 400, "invalid_request")
	}
	if s := mustGet[streamResult](e, "/streams/account-alice", "limit=1000"); len(s.Events) != 3 {
		t.Fatal(len(s.Events))
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEventsRoute(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	resp := e.command("transfer", `{"from":"alice","to":"bob","amount":10}`, map[string]string{
		"Idempotency-Key": "t-1", "X-Correlation-Id": "c-1", "X-Causation-Id": "k-1",
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatal(resp.Body)
	}
	// 150 more events, in one raw append.
	var many []string
	for i := range 150 {
		many = append(many, fmt.Sprintf(`{"i":%d}`, i))
	}
	appendRaw(t, e.Store, "noise-1", "Noise", many...)

	resp = e.get("/events", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	if got := keysOf(t, []byte(resp.Body)); fmt.Sprint(got) != "[events next]" {
		t.Fatal(got)
	}
	f := decodeAs[feedResult](t, resp.Body)
	if len(f.Events) != handler.DefaultReadLimit || f.Next == nil || *f.Next != 100 {
		t.Fatalf("default page: %d events, next %v", len(f.Events), f.Next)
	}
	for i, ev := range f.Events {
		checkEvent(t, ev)
		if ev.Position != eventlog.Position(i+1) {
			t.Fatalf("event %d at position %d", i, ev.Position)
		}
	}
	var md map[string]string
	if err := json.Unmarshal(f.Events[3].Metadata, &md); err != nil {
		t.Fatal(err)
	}
	if md["command"] != "transfer" || md["correlation_id"] != "c-1" || md["causation_id"] != "k-1" || md["idempotency_key"] != "t-1" || md["event_id"] == "" {
		t.Fatalf("transfer metadata %s", f.Events[3].Metadata)
	}
	md = nil
	if err := json.Unmarshal(f.Events[0].Metadata, &md); err != nil {
		t.Fatal(err)
	}
	if _, ok := md["idempotency_key"]; ok {
		t.Fatalf("idempotency_key without a key: %s", f.Events[0].Metadata)
	}

	f = mustGet[feedResult](e, "/events", "after=100&limit=1000")
	if len(f.Events) != 55 || *f.Next != 155 || f.Events[0].Position != 101 {
		t.Fatalf("second page: %d events, next %d", len(f.Events), *f.Next)
	}
	// Past the end: no events, next stays where it was.
	resp = e.get("/events", "after=155")
	if resp.Body != `{"events":[],"next":155}` {
		t.Fatal(resp.Body)
	}
	if resp := e.get("/events", "after=100000"); resp.Body != `{"events":[],"next":100000}` {
		t.Fatal(resp.Body)
	}
	// type repeats; prefix selects streams.
	f = mustGet[feedResult](e, "/events", "type=TransferDebited&type=TransferCredited&type=Nothing")
	if len(f.Events) != 2 || f.Events[0].Type != "TransferDebited" || f.Events[1].Type != "TransferCredited" || *f.Next != 5 {
		t.Fatalf("types: %+v", f)
	}
	f = mustGet[feedResult](e, "/events", "prefix=account-&limit=1000")
	if len(f.Events) != 5 || *f.Next != 5 {
		t.Fatalf("prefix: %d events, next %d", len(f.Events), *f.Next)
	}
	f = mustGet[feedResult](e, "/events", "prefix=account-b&type=AccountOpened")
	if len(f.Events) != 1 || f.Events[0].Stream != "account-bob" {
		t.Fatalf("prefix and type: %+v", f)
	}
	f = mustGet[feedResult](e, "/events", "prefix=noise&after=10&limit=3")
	if len(f.Events) != 3 || f.Events[0].Position != 11 || *f.Next != 13 {
		t.Fatalf("noise page: %+v", f)
	}
	if f := mustGet[feedResult](e, "/events", "limit=1"); len(f.Events) != 1 || *f.Next != 1 {
		t.Fatalf("limit 1: %+v", f)
	}
	for _, q := range []string{
		"limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "limit=10&limit=20", "limit=1e2",
		"after=-1", "after=x", "after=1&after=2", "after=99999999999999999999",
		"type=", "type=" + strings.Repeat("T", 256), "prefix=a*", "prefix=%07",
	} {
		wantError(t, e.get("/events", q), 400, "invalid_request")
	}
	// A query string that cannot be parsed is refused, not ignored.
	for _, q := range []string{"limit=5000&x=%zz", "after=%zz", "limit=2;after=1"} {
		wantError(t, e.get("/events", q), 400, "invalid_request")
	}
}

func TestEventsManyTypes(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	var q strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&q, "type=T%d&", i)
	}
	q.WriteString("type=AccountOpened")
	if f := mustGet[feedResult](e, "/events", q.String()); len(f.Events) != 2 {
		t.Fatalf("%d events", len(f.Events))
	}
	// More parameters than the query parser takes are refused.
	wantError(t, e.get("/events", strings.Repeat("type=T&", 20000)+"type=AccountOpened"), 400, "invalid_request")
}

// Query parameters given only as API Gateway's map (repeated ones joined
// by commas) are read too.
func TestQueryStringParameters(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	req := httpRequest(http.MethodGet, "/events", "", nil, "")
	req.QueryStringParameters = map[string]string{"type": "AccountOpened,MoneyDeposited", "limit": "2"}
	resp := e.Project.HandleHTTP(context.Background(), req)
	f := decodeAs[feedResult](t, resp.Body)
	if resp.StatusCode != http.StatusOK || len(f.Events) != 2 || *f.Next != 2 {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
}

func TestReadYourWrites(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	res := e.mustCommand("transfer", `{"from":"alice","to":"bob","amount":30}`)
	p := res.Events[len(res.Events)-1].Position
	// Without min_position the projection has not run.
	wantError(t, e.get("/accounts/alice", ""), 404, "account_not_found")
	b := mustGet[balanceResult](e, "/accounts/bob", fmt.Sprintf("min_position=%d", p))
	if b.Balance != 30 || b.Position != p {
		t.Fatalf("bob %+v", b)
	}
	type historyResult struct {
		Account string            `json:"account"`
		History []json.RawMessage `json:"history"`
		AsOf    eventlog.Position `json:"as_of"`
	}
	e.mustCommand("deposit", `{"account":"alice","amount":1}`)
	if h := mustGet[historyResult](e, "/accounts/alice/history", "min_position=6"); len(h.History) != 4 || h.AsOf < 6 {
		t.Fatalf("history %+v", h)
	}
	if b := mustGet[balanceResult](e, "/accounts/alice", "min_position=0"); b.Balance != 70 {
		t.Fatalf("min_position=0 %+v", b)
	}
	for _, q := range []string{"min_position=x", "min_position=-1", "min_position="} {
		wantError(t, e.get("/accounts/alice", q), 400, "invalid_request")
	}

	// A position beyond the head cannot be reached in time.
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(5+i*7)*time.Millisecond)
		start := time.Now()
		resp := e.getCtx(ctx, "/accounts/alice", "min_position=1000")
		cancel()
		wantError(t, resp, 503, "projection_behind")
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("answered after %v", d)
		}
	}
	// A read with an already expired context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wantError(t, e.getCtx(ctx, "/accounts/alice", "min_position=1000"), 503, "projection_behind")

	// A position reached while the request waits is answered.
	done := make(chan response)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.getCtx(ctx, "/accounts/alice", "min_position=7")
	}()
	time.Sleep(50 * time.Millisecond)
	e.mustCommand("deposit", `{"account":"alice","amount":2}`)
	resp := <-done
	if b := decodeAs[balanceResult](t, resp.Body); resp.StatusCode != http.StatusOK || b.Balance != 73 || b.Position != 7 {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
}

func TestScheduledEvent(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.mustCommand("transfer", `{"from":"alice","to":"bob","amount":5}`)
	scheduled := `{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event","source":"aws.events",
		"account":"123456789012","time":"2026-01-01T00:00:00Z","region":"eu-west-1",
		"resources":["arn:aws:events:eu-west-1:123456789012:rule/project"],"detail":{}}`
	out, err := e.Project.Invoke(context.Background(), json.RawMessage(scheduled))
	if err != nil {
		t.Fatal(err)
	}
	body := mustMarshal(t, out)
	type report struct {
		Name       string `json:"name"`
		Applied    int    `json:"applied"`
		Skipped    int    `json:"skipped"`
		Checkpoint uint64 `json:"checkpoint"`
		Head       uint64 `json:"head"`
	}
	var got struct {
		Projections []report `json:"projections"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	want := []report{{Name: "balances", Applied: 5, Checkpoint: 5, Head: 5}, {Name: "history", Applied: 5, Checkpoint: 5, Head: 5}}
	if !reflect.DeepEqual(got.Projections, want) {
		t.Fatalf("report %s", body)
	}
	for _, k := range []string{"name", "applied", "checkpoint", "head"} {
		if !strings.Contains(string(body), `"`+k+`":`) {
			t.Fatalf("report without %q: %s", k, body)
		}
	}
	// The read model is up to date without min_position.
	if b := mustGet[balanceResult](e, "/accounts/bob", ""); b.Balance != 5 {
		t.Fatalf("bob %+v", b)
	}
	// A second run has nothing to do.
	out, err = e.Project.Invoke(context.Background(), json.RawMessage(scheduled))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(mustMarshal(t, out)); s != `{"projections":[{"name":"balances","applied":0,"skipped":0,"checkpoint":5,"head":5},{"name":"history","applied":0,"skipped":0,"checkpoint":5,"head":5}]}` {
		t.Fatal(s)
	}
	// A deadline closer than the margin leaves the work for the next run.
	e.mustCommand("deposit", `{"account":"bob","amount":1}`)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = e.Project.Invoke(ctx, json.RawMessage(scheduled))
	if err == nil {
		t.Fatal("a catch-up without time succeeded")
	}
}

func TestProjectInvokeHTTPEvent(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.catchUp()
	payload := mustMarshal(t, httpRequest(http.MethodGet, "/accounts/alice", "min_position=3", nil, ""))
	out, err := e.Project.Invoke(context.Background(), payload)
	if err != nil {
		t.Fatal(err)
	}
	resp, ok := out.(events.APIGatewayV2HTTPResponse)
	if !ok {
		t.Fatalf("%T", out)
	}
	if resp.StatusCode != http.StatusOK || resp.Body != `{"account":"alice","balance":100,"position":3,"as_of":3}` || resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("%+v", resp)
	}
	out, _ = e.Project.Invoke(context.Background(), json.RawMessage(`{"routeKey":"GET /x","rawPath":5}`))
	resp, ok = out.(events.APIGatewayV2HTTPResponse)
	if !ok || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("%T %+v", out, out)
	}
}

func TestProjectInternalError(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.catchUp()
	if err := e.Store.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := handler.WithRequestID(context.Background(), "read-1")
	resp := e.getCtx(ctx, "/events", "")
	wantError(t, resp, 500, "internal")
	if strings.Contains(resp.Body, "closed") {
		t.Fatal(resp.Body)
	}
	logs := e.log.String()
	if !strings.Contains(logs, `"request_id":"read-1"`) || !strings.Contains(logs, "closed") {
		t.Fatalf("logs: %s", logs)
	}
}
