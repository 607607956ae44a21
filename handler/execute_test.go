package handler_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/internal/syncbuf"
)

func TestCommandSuccessShape(t *testing.T) {
	e := newEnv(t)
	resp := e.command("open-account", `{"account":"alice","owner":"Alice"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	if resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("Content-Type %q", resp.Headers["Content-Type"])
	}
	want := `{"attempts":1,"events":[{"stream":"account-alice","version":1,"position":1,"type":"AccountOpened"}]}`
	if resp.Body != want {
		t.Fatalf("body\n%s\nwant\n%s", resp.Body, want)
	}

	e.mustCommand("open-account", `{"account":"fees","owner":"Fees"}`)
	e.mustCommand("open-account", `{"account":"bob","owner":"Bob","fee_account":"fees"}`)
	e.mustCommand("deposit", `{"account":"bob","amount":1000}`)
	res := e.mustCommand("transfer", `{"from":"bob","to":"alice","amount":200}`)
	got := make([]string, len(res.Events))
	for i, ev := range res.Events {
		got[i] = fmt.Sprintf("%s/%d/%d/%s", ev.Stream, ev.Version, ev.Position, ev.Type)
	}
	wantEvents := []string{
		"account-bob/3/5/TransferDebited",
		"account-alice/2/6/TransferCredited",
		"account-bob/4/7/FeeCharged",
		"account-fees/2/8/FeeCollected",
	}
	if strings.Join(got, " ") != strings.Join(wantEvents, " ") || res.Attempts != 1 {
		t.Fatalf("transfer answered attempts %d events %v, want 1 %v", res.Attempts, got, wantEvents)
	}
	if h := e.head(); h != 8 {
		t.Fatalf("head %d, want 8", h)
	}
	// The transfer is fully applied: bob paid 200 and a fee of 2.
	e.catchUp()
	if b := mustGet[balanceResult](e, "/accounts/bob", ""); b.Balance != 798 {
		t.Fatalf("bob has %d, want 798", b.Balance)
	}
}

// seedBalance records one raw MoneyDeposited of amount into the open account
// id, so that balances near bank.MaxBalance are reachable without a thousand
// commands.
func seedBalance(t *testing.T, s eventlog.Store, id string, amount int64) {
	t.Helper()
	ctx := context.Background()
	stream := bank.StreamOf(id)
	v, err := s.StreamVersions(ctx, []eventlog.StreamID{stream})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(bank.MoneyDeposited{Account: id, Amount: amount})
	_, err = s.Append(ctx, eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: stream, Version: v[0]}},
		Events:   []eventlog.Event{{Stream: stream, Type: bank.TypeMoneyDeposited, Data: data}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCommandErrors(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	e.mustCommand("open-account", `{"account":"rich","owner":"Rich"}`)
	seedBalance(t, e.Store, "rich", bank.MaxBalance-10)

	big := `{"account":"alice","amount":1,"pad":"` + strings.Repeat("x", handler.MaxBodyBytes) + `"}`
	long := strings.Repeat("a", 65)
	cases := []struct {
		name    string
		command string
		body    string
		headers map[string]string
		status  int
		code    string
	}{
		{"malformed JSON", "deposit", `{"account":"alice",`, nil, 400, "invalid_request"},
		{"not JSON", "deposit", `deposit 5`, nil, 400, "invalid_request"},
		{"empty body", "deposit", ``, nil, 400, "invalid_request"},
		{"JSON array", "deposit", `[{"account":"alice","amount":5}]`, nil, 400, "invalid_request"},
		{"JSON null", "deposit", `null`, nil, 400, "invalid_request"},
		{"JSON string", "deposit", `"x"`, nil, 400, "invalid_request"},
		{"two objects", "deposit", `{"account":"alice","amount":5}{"account":"alice","amount":5}`, nil, 400, "invalid_request"},
		{"trailing garbage", "deposit", `{"account":"alice","amount":5} x`, nil, 400, "invalid_request"},
		{"form feed before", "deposit", "\f{\"account\":\"alice\",\"amount\":5}", nil, 400, "invalid_request"},
		{"no-break space after", "deposit", "{\"account\":\"alice\",\"amount\":5}\u00a0", nil, 400, "invalid_request"},
		{"missing amount", "deposit", `{"account":"alice"}`, nil, 400, "invalid_request"},
		{"missing account", "withdraw", `{"amount":5}`, nil, 400, "invalid_request"},
		{"missing owner", "open-account", `{"account":"carol"}`, nil, 400, "invalid_request"},
		{"missing to", "transfer", `{"from":"alice","amount":5}`, nil, 400, "invalid_request"},
		{"empty object", "transfer", `{}`, nil, 400, "invalid_request"},
		{"null account", "deposit", `{"account":null,"amount":5}`, nil, 400, "invalid_request"},
		{"unknown field", "deposit", `{"account":"alice","amount":5,"memo":"x"}`, nil, 400, "invalid_request"},
		{"field of another case", "deposit", `{"Account":"alice","amount":5}`, nil, 400, "invalid_request"},
		{"upper-case field", "deposit", `{"account":"alice","AMOUNT":5}`, nil, 400, "invalid_request"},
		{"duplicate field", "deposit", `{"account":"alice","amount":5,"amount":500}`, nil, 400, "invalid_request"},
		{"transfer id is not input", "transfer", `{"from":"alice","to":"bob","amount":5,"ID":"x"}`, nil, 400, "invalid_request"},
		{"invalid id", "deposit", `{"account":"al ice","amount":5}`, nil, 400, "invalid_request"},
		{"empty id", "deposit", `{"account":"","amount":5}`, nil, 400, "invalid_request"},
		{"id too long", "open-account", `{"account":"` + long + `","owner":"X"}`, nil, 400, "invalid_request"},
		{"non-ASCII id", "deposit", `{"account":"älice","amount":5}`, nil, 400, "invalid_request"},
		{"id with slash", "deposit", `{"account":"a/b","amount":5}`, nil, 400, "invalid_request"},
		{"invalid fee account", "open-account", `{"account":"carol","owner":"C","fee_account":"x y"}`, nil, 400, "invalid_request"},
		{"owner with control", "open-account", `{"account":"carol","owner":"C\u0007"}`, nil, 400, "invalid_request"},
		{"owner too long", "open-account", `{"account":"carol","owner":"` + strings.Repeat("é", 201) + `"}`, nil, 400, "invalid_request"},
		{"amount fraction", "deposit", `{"account":"alice","amount":1.5}`, nil, 400, "invalid_request"},
		{"amount exponent", "deposit", `{"account":"alice","amount":1e3}`, nil, 400, "invalid_request"},
		{"amount decimal point", "deposit", `{"account":"alice","amount":100.0}`, nil, 400, "invalid_request"},
		{"amount string", "deposit", `{"account":"alice","amount":"10"}`, nil, 400, "invalid_request"},
		{"amount zero", "deposit", `{"account":"alice","amount":0}`, nil, 400, "invalid_request"},
		{"amount negative", "withdraw", `{"account":"alice","amount":-5}`, nil, 400, "invalid_request"},
		{"amount over limit", "deposit", `{"account":"alice","amount":1000000000001}`, nil, 400, "invalid_request"},
		{"amount overflow", "deposit", `{"account":"alice","amount":9223372036854775808}`, nil, 400, "invalid_request"},
		{"amount bool", "deposit", `{"account":"alice","amount":true}`, nil, 400, "invalid_request"},
		{"transfer amount fraction", "transfer", `{"from":"alice","to":"bob","amount":0.5}`, nil, 400, "invalid_request"},
		{"body not UTF-8", "deposit", "{\"account\":\"al\xffice\",\"amount\":5}", nil, 400, "invalid_request"},
		{"owner not UTF-8", "open-account", "{\"account\":\"carol\",\"owner\":\"C\xc3\"}", nil, 400, "invalid_request"},
		{"key too long", "deposit", `{"account":"alice","amount":5}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 129)}, 400, "invalid_request"},
		{"key with control", "deposit", `{"account":"alice","amount":5}`, map[string]string{"idempotency-key": "k\x01"}, 400, "invalid_request"},
		{"key not ASCII", "deposit", `{"account":"alice","amount":5}`, map[string]string{"Idempotency-Key": "clé"}, 400, "invalid_request"},
		{"correlation too long", "deposit", `{"account":"alice","amount":5}`, map[string]string{"X-Correlation-Id": strings.Repeat("c", 257)}, 400, "invalid_request"},
		{"causation with newline", "deposit", `{"account":"alice","amount":5}`, map[string]string{"X-Causation-Id": "a\nb"}, 400, "invalid_request"},
		{"unknown command", "close-account", `{"account":"alice"}`, nil, 404, "unknown_command"},
		{"upper-case command", "Deposit", `{"account":"alice","amount":5}`, nil, 404, "unknown_command"},
		{"too large", "deposit", big, nil, 413, "too_large"},
		{"account exists", "open-account", `{"account":"alice","owner":"Again"}`, nil, 422, "account_exists"},
		{"account not found", "deposit", `{"account":"carol","amount":5}`, nil, 422, "account_not_found"},
		{"fee account not found", "open-account", `{"account":"carol","owner":"C","fee_account":"nobody"}`, nil, 422, "account_not_found"},
		{"fee account is itself", "open-account", `{"account":"carol","owner":"C","fee_account":"carol"}`, nil, 422, "same_account"},
		{"transfer to unknown", "transfer", `{"from":"alice","to":"carol","amount":5}`, nil, 422, "account_not_found"},
		{"insufficient funds", "withdraw", `{"account":"alice","amount":101}`, nil, 422, "insufficient_funds"},
		{"transfer insufficient", "transfer", `{"from":"bob","to":"alice","amount":1}`, nil, 422, "insufficient_funds"},
		{"same account", "transfer", `{"from":"alice","to":"alice","amount":5}`, nil, 422, "same_account"},
		{"balance limit", "deposit", `{"account":"rich","amount":11}`, nil, 422, "balance_limit"},
		{"transfer balance limit", "transfer", `{"from":"alice","to":"rich","amount":11}`, nil, 422, "balance_limit"},
	}
	before := e.head()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.command(c.command, c.body, c.headers)
			wantError(t, resp, c.status, c.code)
			if h := e.head(); h != before {
				t.Fatalf("head moved from %d to %d on an error", before, h)
			}
		})
	}
	// The limits themselves are accepted.
	e.mustCommand("deposit", `{"account":"rich","amount":10}`)
	e.mustCommand("deposit", `{"account":"alice","amount":1000000000000}`)
}

func TestRouteErrors(t *testing.T) {
	e := newEnv(t)
	x := e.Execute
	ctx := context.Background()
	for _, path := range []string{"/", "/nope", "/commands", "/commands/", "/commands/deposit/", "/commands/deposit/extra", "/command/deposit", "/accounts/alice"} {
		resp := serve(ctx, x, http.MethodPost, path, nil, `{"account":"alice","amount":5}`)
		wantError(t, resp, 404, "not_found")
	}
	// An event's path that does not unescape is a path no route has.
	wantError(t, eventResponse(x.HandleHTTP(ctx, httpRequest(http.MethodPost, "/commands/%zz", "", nil, `{"account":"alice","amount":5}`))), 404, "not_found")
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead} {
		resp := serve(ctx, x, method, "/commands/deposit", nil, `{"account":"alice","amount":5}`)
		wantError(t, resp, 405, "method_not_allowed")
		if resp.Headers["Allow"] != http.MethodPost {
			t.Fatalf("%s: Allow %q", method, resp.Headers["Allow"])
		}
	}
	// An event's method is compared without regard to case, as API Gateway may pass it.
	resp := x.HandleHTTP(ctx, httpRequest("post", "/commands/open-account", "", nil, `{"account":"alice","owner":"A"}`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lower-case post: %d %s", resp.StatusCode, resp.Body)
	}
	if h := e.head(); h != 1 {
		t.Fatalf("head %d, want 1", h)
	}
}

// TestCheckOrder sends requests with two faults at once: the earlier check
// (size, route, command name, JSON, fields) decides the answer.
func TestCheckOrder(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	x := e.Execute
	ctx := context.Background()
	huge := strings.Repeat(" ", handler.MaxBodyBytes) + `{"account":"alice","amount":5}`
	badB64 := "!!!not base64!!!"
	cases := []struct {
		name           string
		method, path   string
		body           string
		base64         bool
		status         int
		code           string
		messageHas     string
		messageHasNot  string
		allowHeaderSet bool
		headers        map[string]string
	}{
		{name: "oversized to unknown path", method: "POST", path: "/nope", body: huge, status: 413, code: "too_large"},
		{name: "oversized with wrong method", method: "GET", path: "/commands/deposit", body: huge, status: 413, code: "too_large"},
		{name: "oversized to unknown command", method: "POST", path: "/commands/nope", body: huge, status: 413, code: "too_large"},
		{name: "oversized bad JSON", method: "POST", path: "/commands/deposit", body: strings.Repeat("{", handler.MaxBodyBytes+1), status: 413, code: "too_large"},
		{name: "oversized base64", method: "POST", path: "/nope", body: base64.StdEncoding.EncodeToString([]byte(huge)), base64: true, status: 413, code: "too_large"},
		{name: "unknown path with bad JSON", method: "POST", path: "/nope", body: `{"account":`, status: 404, code: "not_found"},
		{name: "unknown path with invalid base64", method: "POST", path: "/nope", body: badB64, base64: true, status: 404, code: "not_found"},
		{name: "wrong method with bad JSON", method: "PUT", path: "/commands/deposit", body: `{"account":`, status: 405, code: "method_not_allowed", allowHeaderSet: true},
		{name: "wrong method with unknown command", method: "GET", path: "/commands/nope", body: ``, status: 405, code: "method_not_allowed", allowHeaderSet: true},
		{name: "unknown command with bad JSON", method: "POST", path: "/commands/nope", body: `{"account":`, status: 404, code: "unknown_command"},
		{name: "unknown command with invalid UTF-8", method: "POST", path: "/commands/nope", body: "\xff\xfe", status: 404, code: "unknown_command"},
		{name: "unknown command with invalid base64", method: "POST", path: "/commands/nope", body: badB64, base64: true, status: 404, code: "unknown_command"},
		{name: "unknown command with bad key", method: "POST", path: "/commands/nope", body: `{}`, headers: map[string]string{"Idempotency-Key": "\x00"}, status: 404, code: "unknown_command"},
		{name: "bad JSON with bad key", method: "POST", path: "/commands/deposit", body: `{`, headers: map[string]string{"Idempotency-Key": "\x00"}, status: 400, code: "invalid_request"},
		{name: "bad JSON with invalid fields", method: "POST", path: "/commands/deposit", body: `{"account":"bad id!","amount":1.5`, status: 400, code: "invalid_request", messageHas: "body", messageHasNot: "invalid account"},
		{name: "bad JSON with unknown business state", method: "POST", path: "/commands/deposit", body: `{"account":"carol","amount":5`, status: 400, code: "invalid_request"},
		{name: "wrong type with invalid id", method: "POST", path: "/commands/deposit", body: `{"account":"bad id!","amount":"5"}`, status: 400, code: "invalid_request", messageHas: "amount", messageHasNot: "invalid account"},
		{name: "unknown field with invalid id", method: "POST", path: "/commands/deposit", body: `{"account":"bad id!","amount":5,"memo":1}`, status: 400, code: "invalid_request", messageHas: "memo"},
		{name: "invalid field with business error", method: "POST", path: "/commands/deposit", body: `{"account":"carol","amount":0}`, status: 400, code: "invalid_request", messageHas: "amount"},
	}
	before := e.head()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var resp response
			if c.base64 {
				// A body that arrives base64-encoded is an HTTP API event's.
				req := httpRequest(c.method, c.path, "", c.headers, c.body)
				req.IsBase64Encoded = true
				resp = eventResponse(x.HandleHTTP(ctx, req))
			} else {
				resp = serve(ctx, x, c.method, c.path, c.headers, c.body)
			}
			wantError(t, resp, c.status, c.code)
			msg := decodeAs[errorResult](t, resp.Body).Error.Message
			if c.messageHas != "" && !strings.Contains(msg, c.messageHas) {
				t.Fatalf("message %q does not mention %q", msg, c.messageHas)
			}
			if c.messageHasNot != "" && strings.Contains(msg, c.messageHasNot) {
				t.Fatalf("message %q mentions %q", msg, c.messageHasNot)
			}
			if c.allowHeaderSet && resp.Headers["Allow"] != "POST" {
				t.Fatalf("Allow %q", resp.Headers["Allow"])
			}
		})
	}
	if h := e.head(); h != before {
		t.Fatalf("head moved from %d to %d", before, h)
	}
}

func TestBase64Body(t *testing.T) {
	e := newEnv(t)
	x := e.Execute
	ctx := context.Background()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	req := httpRequest("POST", "/commands/open-account", "", nil, b64(`{"account":"alice","owner":"Zoë"}`))
	req.IsBase64Encoded = true
	if resp := x.HandleHTTP(ctx, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{b64("{\"account\":\"alice\",\"amount\":5,\"x\":\"\xff\"}"), 400, "invalid_request"},
		{b64(`{"account":"alice","amount":1.5}`), 400, "invalid_request"},
		{"not base64!", 400, "invalid_request"},
		{b64(`{"account":"alice","amount":5,"pad":"` + strings.Repeat("x", handler.MaxBodyBytes) + `"}`), 413, "too_large"},
	} {
		req := httpRequest("POST", "/commands/deposit", "", nil, c.body)
		req.IsBase64Encoded = true
		wantError(t, eventResponse(x.HandleHTTP(ctx, req)), c.status, c.code)
	}
	req = httpRequest("POST", "/commands/deposit", "", nil, b64(`{"account":"alice","amount":5}`))
	req.IsBase64Encoded = true
	if resp := x.HandleHTTP(ctx, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	// A body of exactly the limit is accepted.
	exact := `{"account":"alice","amount":5}`
	exact += strings.Repeat(" ", handler.MaxBodyBytes-len(exact))
	req = httpRequest("POST", "/commands/deposit", "", nil, b64(exact))
	req.IsBase64Encoded = true
	if resp := x.HandleHTTP(ctx, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("body of the limit: %d %s", resp.StatusCode, resp.Body)
	}
	if h := e.head(); h != 3 {
		t.Fatalf("head %d, want 3", h)
	}
}

func readStream(t *testing.T, s eventlog.Store, stream string) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	for r, err := range s.ReadStream(context.Background(), eventlog.MustStreamID(stream), 0) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	key := strings.Repeat("K", handler.MaxIdempotencyKeyLength-5) + " ~!x;"
	headers := map[string]string{"Idempotency-Key": key}
	first := e.command("transfer", `{"from":"alice","to":"bob","amount":25}`, headers)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", first.StatusCode, first.Body)
	}
	head := e.head()
	firstRes := decodeAs[commandResult](t, first.Body)
	if firstRes.Attempts != 1 || len(firstRes.Events) != 2 {
		t.Fatalf("first: %s", first.Body)
	}
	// A repeat, even with another body or through another header spelling,
	// answers the first events and appends nothing.
	for _, again := range []struct {
		body    string
		headers map[string]string
	}{
		{`{"from":"alice","to":"bob","amount":25}`, headers},
		{`{"from":"alice","to":"bob","amount":50}`, map[string]string{"idempotency-key": key}},
		{`{"from":"alice","to":"bob","amount":25}`, map[string]string{"IDEMPOTENCY-KEY": key, "X-Correlation-Id": "other"}},
	} {
		resp := e.command("transfer", again.body, again.headers)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("repeat: %d %s", resp.StatusCode, resp.Body)
		}
		res := decodeAs[commandResult](t, resp.Body)
		if res.Attempts != 0 || fmt.Sprint(res.Events) != fmt.Sprint(firstRes.Events) {
			t.Fatalf("repeat answered %s, first %s", resp.Body, first.Body)
		}
		if h := e.head(); h != head {
			t.Fatalf("repeat moved the head from %d to %d", head, h)
		}
	}
	for _, r := range readStream(t, e.Store, "account-bob") {
		if r.Type == bank.TypeTransferCredited && r.Metadata.CommandID != key {
			t.Fatalf("idempotency key in metadata %q", r.Metadata.CommandID)
		}
	}
	e.catchUp()
	if b := mustGet[balanceResult](e, "/accounts/alice", ""); b.Balance != 75 {
		t.Fatalf("alice has %d after one transfer of 25, want 75", b.Balance)
	}
	// A key on a failed command records nothing: the same key may then
	// succeed.
	failKey := map[string]string{"Idempotency-Key": "w-1"}
	wantError(t, e.command("withdraw", `{"account":"bob","amount":1000}`, failKey), 422, "insufficient_funds")
	if resp := e.command("withdraw", `{"account":"bob","amount":5}`, failKey); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	// The same key used by another command answers that command's events.
	resp := e.command("deposit", `{"account":"alice","amount":1}`, failKey)
	if res := decodeAs[commandResult](t, resp.Body); resp.StatusCode != http.StatusOK || res.Attempts != 0 || res.Events[0].Type != bank.TypeMoneyWithdrawn {
		t.Fatalf("reused key: %d %s", resp.StatusCode, resp.Body)
	}
}

func TestCorrelationAndCausation(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	resp := e.command("transfer", `{"from":"alice","to":"bob","amount":10}`, map[string]string{
		"x-correlation-id": "corr-1", "X-Causation-Id": "cause-1", "Idempotency-Key": "t-1",
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, resp.Body)
	}
	if got := resp.Headers["X-Correlation-Id"]; got != "corr-1" {
		t.Fatalf("X-Correlation-Id %q", got)
	}
	res := decodeAs[commandResult](t, resp.Body)
	for _, stream := range []string{"account-alice", "account-bob"} {
		records := readStream(t, e.Store, stream)
		last := records[len(records)-1]
		md := last.Metadata
		if md.CorrelationID != "corr-1" || md.CausationID != "cause-1" || md.CommandID != "t-1" || md.Command != "transfer" || md.EventID == (uuid.UUID{}) {
			t.Fatalf("%s metadata %+v", stream, md)
		}
		if last.Position != res.Events[0].Position && last.Position != res.Events[1].Position {
			t.Fatalf("%s last event at %d is not the transfer's", stream, last.Position)
		}
	}

	// Without one, a correlation id is generated, answered and recorded.
	resp = e.command("deposit", `{"account":"bob","amount":3}`, nil)
	gen := resp.Headers["X-Correlation-Id"]
	if resp.StatusCode != http.StatusOK || gen == "" {
		t.Fatalf("%d %q %s", resp.StatusCode, gen, resp.Body)
	}
	if _, err := uuid.Parse(gen); err != nil {
		t.Fatalf("generated correlation id %q: %v", gen, err)
	}
	records := readStream(t, e.Store, "account-bob")
	md := records[len(records)-1].Metadata
	if md.CorrelationID != gen || md.CausationID != "" || md.CommandID != "" || md.Command != "deposit" {
		t.Fatalf("metadata %+v, generated %q", md, gen)
	}
	// Each request gets its own.
	other := e.command("deposit", `{"account":"bob","amount":3}`, nil).Headers["X-Correlation-Id"]
	if other == "" || other == gen {
		t.Fatalf("second generated correlation id %q, first %q", other, gen)
	}
	// A business error still answers the correlation id.
	resp = e.command("withdraw", `{"account":"bob","amount":1000000}`, map[string]string{"X-Correlation-Id": "corr-2"})
	wantError(t, resp, 422, "insufficient_funds")
	if resp.Headers["X-Correlation-Id"] != "corr-2" {
		t.Fatalf("X-Correlation-Id %q on a 422", resp.Headers["X-Correlation-Id"])
	}
	// An invalid one is refused and never echoed into a response header.
	for _, bad := range []string{"a\r\nSet-Cookie: x=1", strings.Repeat("c", 300)} {
		resp = e.command("deposit", `{"account":"bob","amount":3}`, map[string]string{"X-Correlation-Id": bad})
		wantError(t, resp, 400, "invalid_request")
		if v, ok := resp.Headers["X-Correlation-Id"]; ok {
			t.Fatalf("invalid correlation id echoed as %q", v)
		}
		resp = e.command("deposit", `{"account":"bob","amount":3}`, map[string]string{"X-Correlation-Id": bad, "Idempotency-Key": "\x7f"})
		wantError(t, resp, 400, "invalid_request")
		if v, ok := resp.Headers["X-Correlation-Id"]; ok {
			t.Fatalf("invalid correlation id echoed as %q", v)
		}
	}
}

func TestAfterCommand(t *testing.T) {
	e := newEnv(t)
	var got []eventlog.Position
	e.Execute.AfterCommand = func(p eventlog.Position) { got = append(got, p) }
	e.openBank()
	e.command("withdraw", `{"account":"bob","amount":1}`, nil) // a 422: not reported
	e.mustCommand("transfer", `{"from":"alice","to":"bob","amount":1}`)
	if fmt.Sprint(got) != "[1 2 3 5]" {
		t.Fatalf("AfterCommand saw %v", got)
	}
}

// invoke calls Execute.Invoke with a direct invocation and returns the
// body it answers.
func invoke(t *testing.T, x *handler.Execute, payload string) string {
	t.Helper()
	out, err := x.Invoke(context.Background(), json.RawMessage(payload))
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := out.(json.RawMessage)
	if !ok {
		t.Fatalf("direct invocation answered %T", out)
	}
	if !json.Valid(raw) {
		t.Fatalf("direct invocation answered invalid JSON %q", raw)
	}
	return string(raw)
}

// TestInvokeMatchesHTTP runs the same sequence through the HTTP route on
// one instance and through direct invocation on another: every answer is
// the same body.
func TestInvokeMatchesHTTP(t *testing.T) {
	viaHTTP, direct := newEnv(t), newEnv(t)
	big := `{"account":"alice","amount":5,"pad":"` + strings.Repeat("x", handler.MaxBodyBytes) + `"}`
	steps := []struct {
		command, input, key string
		status              int
	}{
		{"open-account", `{"account":"alice","owner":"Alice"}`, "", 200},
		{"open-account", `{"account":"fees","owner":"Fees"}`, "", 200},
		{"open-account", ` { "account" : "bob", "owner":"Bob", "fee_account":"fees" } `, "", 200},
		{"deposit", `{"account":"bob","amount":1000}`, "d-1", 200},
		{"deposit", `{"account":"bob","amount":1000}`, "d-1", 200},
		{"transfer", `{"from":"bob","to":"alice","amount":300}`, "t-1", 200},
		{"transfer", `{"from":"bob","to":"alice","amount":300}`, "t-1", 200},
		{"transfer", `{"from":"bob","to":"alice","amount":1e2}`, "", 400},
		{"transfer", `{"from":"bob","to":"alice","amount":"100"}`, "", 400},
		{"transfer", `{"from":"bob","to":"alice","amount":100,"note":1}`, "", 400},
		{"transfer", `{"from":"bob","to":"bob","amount":100}`, "", 422},
		{"transfer", `{"from":"bob","to":"carol","amount":100}`, "", 422},
		{"transfer", `{"from":"alice","to":"bob","amount":100000}`, "", 422},
		{"open-account", `{"account":"alice","owner":"Alice"}`, "", 422},
		{"deposit", `null`, "", 400},
		{"deposit", `[]`, "", 400},
		{"deposit", `"x"`, "", 400},
		{"deposit", ``, "", 400},
		{"deposit", `{"account":"bob","amount":5}`, strings.Repeat("k", 129), 400},
		{"deposit", big, "", 413},
		{"close-account", `{"account":"bob"}`, "", 404},
	}
	for i, s := range steps {
		var headers map[string]string
		if s.key != "" {
			headers = map[string]string{"Idempotency-Key": s.key}
		}
		resp := viaHTTP.command(s.command, s.input, headers)
		if resp.StatusCode != s.status {
			t.Fatalf("step %d %s: HTTP %d, want %d: %s", i, s.command, resp.StatusCode, s.status, resp.Body)
		}
		// Both instances ran the same commands, so even the positions agree.
		body := invoke(t, direct.Execute, rawEnvelope(s.command, s.input, s.key))
		if body != resp.Body {
			t.Fatalf("step %d %s:\nHTTP   %s\ndirect %s", i, s.command, resp.Body, body)
		}
	}
	if a, b := viaHTTP.head(), direct.head(); a != b || a != 8 {
		t.Fatalf("heads %d (HTTP) and %d (direct), want 8", a, b)
	}
	// The input is taken as written, whitespace and all: both logs hold the
	// same events.
	for _, stream := range []string{"account-alice", "account-bob", "account-fees"} {
		a, b := readStream(t, viaHTTP.Store, stream), readStream(t, direct.Store, stream)
		if len(a) != len(b) {
			t.Fatalf("%s: %d and %d events", stream, len(a), len(b))
		}
		for i := range a {
			if a[i].Type != b[i].Type || a[i].Position != b[i].Position || a[i].Metadata.CommandID != b[i].Metadata.CommandID {
				t.Fatalf("%s event %d differs: %+v %+v", stream, i, a[i], b[i])
			}
		}
	}
}

// rawEnvelope writes the direct invocation payload by hand, so the input's
// bytes are exactly the HTTP body's.
func rawEnvelope(command, input, key string) string {
	var b strings.Builder
	name, _ := json.Marshal(command)
	b.WriteString(`{"command":` + string(name))
	if input != "" {
		b.WriteString(`,"input":` + input)
	}
	if key != "" {
		k, _ := json.Marshal(key)
		b.WriteString(`,"idempotency_key":` + string(k))
	}
	b.WriteString(`}`)
	return b.String()
}

func TestInvokeDirect(t *testing.T) {
	e := newEnv(t)
	x := e.Execute
	body := invoke(t, x, `{"command":"open-account","input":{"account":"alice","owner":"A"},"correlation_id":"c-1","causation_id":"k-1"}`)
	if body != `{"attempts":1,"events":[{"stream":"account-alice","version":1,"position":1,"type":"AccountOpened"}]}` {
		t.Fatal(body)
	}
	md := readStream(t, e.Store, "account-alice")[0].Metadata
	if md.CorrelationID != "c-1" || md.CausationID != "k-1" || md.Command != "open-account" {
		t.Fatalf("metadata %+v", md)
	}
	// A correlation id is generated when absent.
	invoke(t, x, `{"command":"deposit","input":{"account":"alice","amount":5}}`)
	if md := readStream(t, e.Store, "account-alice")[1].Metadata; md.CorrelationID == "" {
		t.Fatalf("no correlation id generated: %+v", md)
	}
	for _, c := range []struct{ payload, code string }{
		{`{"command":"deposit","input":{"account":"alice","amount":5},"extra":1}`, "invalid_request"},
		{`{"command":"deposit","Input":{"account":"alice","amount":5}}`, "invalid_request"},
		{`{"command":5}`, "invalid_request"},
		{`[]`, "invalid_request"},
		{`"deposit"`, "invalid_request"},
		{`null`, "invalid_request"},
		{`{"command":"deposit","input":{"account":"alice","amount":5}} {}`, "invalid_request"},
		{`{"command":"deposit","input":{"account":"alice","amount":5},"idempotency_key":"\u0001"}`, "invalid_request"},
		{`{"command":"deposit","input":{"account":"alice","amount":5},"correlation_id":"\u00e9"}`, "invalid_request"},
		{`{"command":"deposit","input":{"account":"carol","amount":5}}`, "account_not_found"},
		{`{"command":"nope","input":{}}`, "unknown_command"},
		{`{"input":{}}`, "unknown_command"},
	} {
		got := invoke(t, x, c.payload)
		if code := errorCode(t, got); code != c.code {
			t.Fatalf("%s: %s, want %s", c.payload, got, c.code)
		}
	}
	if h := e.head(); h != 2 {
		t.Fatalf("head %d, want 2", h)
	}
	// The status the HTTP route would answer comes with the body.
	status, out, correlation := x.HandleDirect(context.Background(), handler.CommandRequest{Command: "withdraw", Input: json.RawMessage(`{"account":"alice","amount":50}`)})
	if status != 422 || errorCode(t, string(out)) != "insufficient_funds" || correlation == "" {
		t.Fatalf("HandleDirect: %d %s %q", status, out, correlation)
	}
}

func TestInvokeHTTPEvent(t *testing.T) {
	e := newEnv(t)
	req := httpRequest("POST", "/commands/open-account", "", map[string]string{"x-correlation-id": "c-9"}, `{"account":"alice","owner":"A"}`)
	payload, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.Execute.Invoke(context.Background(), payload)
	if err != nil {
		t.Fatal(err)
	}
	resp, ok := out.(events.APIGatewayV2HTTPResponse)
	if !ok {
		t.Fatalf("HTTP event answered %T", out)
	}
	if resp.StatusCode != http.StatusOK || resp.Headers["X-Correlation-Id"] != "c-9" || resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("%+v", resp)
	}
	// A real API Gateway event as the service sends it.
	real := `{"version":"2.0","routeKey":"POST /commands/{name}","rawPath":"/commands/deposit","rawQueryString":"",
	  "headers":{"content-type":"application/json","idempotency-key":"d-1"},
	  "requestContext":{"http":{"method":"POST","path":"/commands/deposit"},"requestId":"abc","routeKey":"POST /commands/{name}","stage":"$default"},
	  "pathParameters":{"name":"deposit"},"body":"eyJhY2NvdW50IjoiYWxpY2UiLCJhbW91bnQiOjV9","isBase64Encoded":true}`
	out, err = e.Execute.Invoke(context.Background(), json.RawMessage(real))
	if err != nil {
		t.Fatal(err)
	}
	resp = out.(events.APIGatewayV2HTTPResponse)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Body, `"type":"MoneyDeposited"`) {
		t.Fatalf("%+v", resp)
	}
	// An HTTP event that cannot be decoded is a 400 HTTP answer.
	out, _ = e.Execute.Invoke(context.Background(), json.RawMessage(`{"routeKey":"x","requestContext":{"http":5}}`))
	resp, ok = out.(events.APIGatewayV2HTTPResponse)
	if !ok || resp.StatusCode != http.StatusBadRequest || errorCode(t, resp.Body) != "invalid_request" {
		t.Fatalf("%T %+v", out, out)
	}
}

// conflictStore refuses every append with a version conflict.
type conflictStore struct {
	eventlog.Store
	appends int
}

func (s *conflictStore) Append(_ context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	s.appends++
	return eventlog.AppendResult{}, &eventlog.ConflictError{Conflicts: []eventlog.StreamConflict{{Stream: req.Expected[0].Stream, Expected: req.Expected[0].Version, Actual: req.Expected[0].Version + 1}}}
}

func TestConcurrencyExhausted(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	store := &conflictStore{Store: e.Store}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	x := handler.NewExecute(reg, store, handler.ExecuteOptions{Retry: executor.FixedDelay{MaxRetries: 2}})
	resp := serve(context.Background(), x, http.MethodPost, "/commands/deposit", nil, `{"account":"alice","amount":5}`)
	wantError(t, resp, 409, "concurrency")
	if store.appends != 3 {
		t.Fatalf("%d appends, want 3 (one try and two retries)", store.appends)
	}
	if h := e.head(); h != 3 {
		t.Fatalf("head %d, want 3", h)
	}
	if body := invoke(t, x, `{"command":"deposit","input":{"account":"alice","amount":5}}`); body != resp.Body {
		t.Fatalf("direct %s, HTTP %s", body, resp.Body)
	}
}

func TestInternalErrorIsLoggedNotShown(t *testing.T) {
	e := newEnv(t)
	e.openBank()
	var logs bytes.Buffer
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	x := handler.NewExecute(reg, e.Store, handler.ExecuteOptions{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err := e.Store.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := handler.WithRequestID(context.Background(), "req-local-1")
	resp := serve(ctx, x, http.MethodPost, "/commands/deposit", nil, `{"account":"alice","amount":5}`)
	wantError(t, resp, 500, "internal")
	if resp.Body != `{"error":{"code":"internal","message":"internal error"}}` {
		t.Fatalf("500 body %s", resp.Body)
	}
	lctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "aws-req-2"})
	if body := invoke(t, x, `{"command":"deposit","input":{"account":"alice","amount":5}}`); errorCode(t, body) != "internal" {
		t.Fatal(body)
	}
	out, _ := x.Invoke(lctx, json.RawMessage(`{"command":"withdraw","input":{"account":"alice","amount":5}}`))
	if errorCode(t, string(out.(json.RawMessage))) != "internal" {
		t.Fatal(string(out.(json.RawMessage)))
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d log lines, want 3:\n%s", len(lines), logs.String())
	}
	var entries []map[string]any
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["level"] != "ERROR" || m["error"] == "" || m["command"] == "" {
			t.Fatalf("log line %s", line)
		}
		entries = append(entries, m)
	}
	if entries[0]["request_id"] != "req-local-1" || entries[0]["command"] != "deposit" || !strings.Contains(fmt.Sprint(entries[0]["error"]), "closed") {
		t.Fatalf("first log line %v", entries[0])
	}
	if entries[2]["request_id"] != "aws-req-2" || entries[2]["command"] != "withdraw" {
		t.Fatalf("third log line %v", entries[2])
	}
}

func TestRegistryPanics(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Fatalf("%s did not panic", name)
			}
		}()
		f()
	}
	reg := handler.NewRegistry()
	run := func(context.Context, eventlog.Store, []byte, executor.Options) (executor.Result, error) {
		return executor.Result{}, errors.New("x")
	}
	reg.Runner("ok", run)
	mustPanic("duplicate", func() { reg.Runner("ok", run) })
	mustPanic("bad name", func() { reg.Runner("Bad", run) })
	mustPanic("bad route", func() { reg.Query("accounts", "", nil) })
	if names := reg.CommandNames(); len(names) != 1 || names[0] != "ok" {
		t.Fatal(names)
	}
	bankReg := handler.NewRegistry()
	bankapi.Register(bankReg)
	if got := fmt.Sprint(handler.ReadRoutes(bankReg)); got != "[/projections /projections/{name}/dead-letters /streams/{stream} /events /accounts/{id} /accounts/{id}/history]" {
		t.Fatal(got)
	}
	if n := len(bankReg.Projectors()); n != 2 {
		t.Fatal(n)
	}
}

// A runner's error that is not an *Error and that the mapper does not know
// is a 500 (eventlog.ErrInvalid too); an *Error keeps its status.
func TestRunnerErrors(t *testing.T) {
	e := newEnv(t)
	reg := handler.NewRegistry()
	reg.Runner("teapot", func(context.Context, eventlog.Store, []byte, executor.Options) (executor.Result, error) {
		return executor.Result{}, fmt.Errorf("wrapped: %w", handler.Errorf(418, "teapot", "short and stout"))
	})
	reg.Runner("boom", func(context.Context, eventlog.Store, []byte, executor.Options) (executor.Result, error) {
		return executor.Result{}, errors.New("secret detail")
	})
	reg.Runner("invalid", func(context.Context, eventlog.Store, []byte, executor.Options) (executor.Result, error) {
		return executor.Result{}, &eventlog.InvalidError{What: "event 0", Reason: "bad"}
	})
	var logs syncbuf.Buffer
	x := handler.NewExecute(reg, e.Store, handler.ExecuteOptions{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	post := func(name string) response {
		return serve(context.Background(), x, http.MethodPost, "/commands/"+name, nil, `{}`)
	}
	wantError(t, post("teapot"), 418, "teapot")
	resp := post("boom")
	wantError(t, resp, 500, "internal")
	if strings.Contains(resp.Body, "secret") || !strings.Contains(logs.String(), "secret detail") {
		t.Fatalf("body %s, logs %s", resp.Body, logs.String())
	}
	// The input was checked when it was decoded: an invalid event from the
	// store's own validation is a server bug, not the caller's fault.
	resp = post("invalid")
	wantError(t, resp, 500, "internal")
	if strings.Contains(resp.Body, "event 0") {
		t.Fatalf("internals leaked: %s", resp.Body)
	}
}
