package handler_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/handler"
)

type fuzzTarget struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
	Note    string `json:"note,omitempty"`
	Skip    string `json:"-"`
}

func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"account":"alice","amount":5}`,
		` {"account":"alice","amount":5,"note":"n"} `,
		`{}`, `{"account":"alice","amount":1.5}`, `{"amount":1e3}`, `{"amount":100.0}`, `{"amount":"10"}`,
		`{"Account":"a"}`, `{"account":"a","account":"b"}`, `{"Skip":"x"}`, `{"-":"x"}`, `{"hidden":"x"}`,
		`{"account":"a"} {}`, `{"account":"a"}x`, `[]`, `null`, `"x"`, ``, `{`, `{"account":"\ud800"}`,
		"{\"account\":\"\xff\"}", `{"amount":-9223372036854775808}`, `{"amount":9223372036854775808}`,
		`{"note":{"a":[1,2,{"b":null}]}}`, `{"account":"a","amount":5,}`, "\ufeff{}", `{"amount":-0}`,
		"\f{}", "{}\v", "\u00a0{}", "{}\u3000", " \t\r\n{}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v fuzzTarget
		err := handler.DecodeStrict(body, &v)
		if err != nil {
			var he *handler.Error
			if !asError(err, &he) || he.Status != http.StatusBadRequest || he.Code != "invalid_request" {
				t.Fatalf("error %v is not a 400 invalid_request", err)
			}
			return
		}
		// Accepted: exactly one JSON object whose keys are the fields'
		// names, each once, with an integer literal for the amount.
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil || m == nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", body, err)
		}
		if _, err := dec.Token(); err == nil {
			t.Fatalf("accepted %q with data after the object", body)
		}
		keys := 0
		for k, val := range m {
			keys++
			switch k {
			case "account":
				if s, ok := val.(string); !ok || s != v.Account {
					t.Fatalf("account %#v decoded as %q", val, v.Account)
				}
			case "note":
				if s, ok := val.(string); !ok || s != v.Note {
					t.Fatalf("note %#v decoded as %q", val, v.Note)
				}
			case "amount":
				n, ok := val.(json.Number)
				if !ok {
					t.Fatalf("amount %#v accepted", val)
				}
				i, err := strconv.ParseInt(string(n), 10, 64)
				if err != nil || i != v.Amount {
					t.Fatalf("amount %q accepted as %d", n, v.Amount)
				}
			default:
				t.Fatalf("accepted unknown field %q in %q", k, body)
			}
		}
		if c := countKeys(body); c != keys {
			t.Fatalf("accepted %q with a repeated key", body)
		}
	})
}

// countKeys counts the top-level keys of a JSON object, repeats included.
func countKeys(body []byte) int {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return -1
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil {
			return -1
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return -1
		}
		n++
	}
	return n
}

func asError(err error, target **handler.Error) bool {
	he, ok := err.(*handler.Error)
	if ok {
		*target = he
	}
	return ok
}

// wellFormed reports whether body is an input the named bank command
// accepts: strict JSON of its fields, passing its input rules.
func wellFormed(name string, body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	check := func(c bank.Command, err error) bool { return err == nil && c.Validate() == nil }
	switch name {
	case bank.CommandOpenAccount:
		var c bank.OpenAccount
		return check(&c, handler.DecodeStrict(body, &c))
	case bank.CommandDeposit:
		var c bank.Deposit
		return check(&c, handler.DecodeStrict(body, &c))
	case bank.CommandWithdraw:
		var c bank.Withdraw
		return check(&c, handler.DecodeStrict(body, &c))
	case bank.CommandTransfer:
		var c bank.Transfer
		return check(&c, handler.DecodeStrict(body, &c))
	}
	return false
}

// commandPath returns the {name} of a path that fits /commands/{name}.
func commandPath(path string) (string, bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) != 2 {
		return "", false
	}
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return "", false
		}
		parts[i] = u
	}
	if parts[0] != "commands" || parts[1] == "" {
		return "", false
	}
	return parts[1], true
}

var (
	executeStatuses = map[int]bool{200: true, 400: true, 404: true, 405: true, 409: true, 413: true, 422: true}
	projectStatuses = map[int]bool{200: true, 400: true, 404: true, 405: true, 503: true}
)

// checkJSONAnswer checks that an answer is a JSON object: an error body
// for any status but 200.
func checkJSONAnswer(t *testing.T, status int, body string) {
	t.Helper()
	if !json.Valid([]byte(body)) || !strings.HasPrefix(body, "{") {
		t.Fatalf("status %d with a body that is not a JSON object: %q", status, body)
	}
	if status != 200 {
		var e errorResult
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("status %d with body %q", status, body)
		}
	}
}

func FuzzExecuteHTTP(f *testing.F) {
	e := newEnv(f)
	e.mustCommand("open-account", `{"account":"alice","owner":"Alice"}`)
	e.mustCommand("open-account", `{"account":"bob","owner":"Bob"}`)
	e.mustCommand("deposit", `{"account":"alice","amount":1000}`)
	seeds := []struct {
		method, path, body string
		b64                bool
		key, corr          string
	}{
		{"POST", "/commands/deposit", `{"account":"alice","amount":5}`, false, "", ""},
		{"POST", "/commands/transfer", `{"from":"alice","to":"bob","amount":5}`, false, "k-1", "c-1"},
		{"POST", "/commands/transfer", `{"from":"alice","to":"bob","amount":5}`, false, "k-1", ""},
		{"POST", "/commands/withdraw", `{"account":"bob","amount":5000}`, false, "", ""},
		{"POST", "/commands/open-account", `{"account":"carol","owner":"C","fee_account":"alice"}`, false, "", ""},
		{"POST", "/commands/open-account", `{"account":"alice","owner":"A"}`, false, "", ""},
		{"POST", "/commands/deposit", `{"account":"alice","amount":1.5}`, false, "", ""},
		{"POST", "/commands/deposit", `{"Account":"alice","amount":5}`, false, "", ""},
		{"POST", "/commands/deposit", "eyJhY2NvdW50IjoiYWxpY2UiLCJhbW91bnQiOjV9", true, "", ""},
		{"POST", "/commands/deposit", "%%%", true, "", ""},
		{"POST", "/commands/nope", `{`, false, "", ""},
		{"GET", "/commands/deposit", ``, false, "", ""},
		{"POST", "/nope", `{}`, false, "", ""},
		{"POST", "/commands/de%70osit", `{"account":"alice","amount":5}`, false, "", ""},
		{"POST", "/commands/%zz", `{}`, false, "", ""},
		{"POST", "/commands/deposit", "{\"account\":\"\xff\",\"amount\":5}", false, "", ""},
		{"POST", "/commands/deposit", `{"account":"alice","amount":5}`, false, "\x00", "\r\n"},
		{"POST", "/commands/deposit", `{"account":"alice","amount":5}`, false, strings.Repeat("k", 129), ""},
		{"post", "/commands/deposit", `{"account":"alice","amount":5}`, false, "", ""},
		{"", "", "", false, "", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, []byte(s.body), s.b64, s.key, s.corr)
	}
	f.Fuzz(func(t *testing.T, method, path string, body []byte, b64 bool, key, corr string) {
		req := httpRequest(method, path, "", map[string]string{"Idempotency-Key": key, "X-Correlation-Id": corr}, string(body))
		if b64 {
			req.Body = base64.StdEncoding.EncodeToString(body)
			if len(body) > 0 && body[0] == '%' {
				req.Body = string(body) // not base64 at all
			}
		}
		req.IsBase64Encoded = b64
		before := headOf(t, e.Store)
		resp := e.Execute.HandleHTTP(context.Background(), req)
		if !executeStatuses[resp.StatusCode] {
			t.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
		}
		checkJSONAnswer(t, resp.StatusCode, resp.Body)
		if resp.StatusCode != http.StatusOK && headOf(t, e.Store) != before {
			t.Fatalf("status %d wrote events", resp.StatusCode)
		}
		code := ""
		if resp.StatusCode != http.StatusOK {
			code = decodeAs[errorResult](t, resp.Body).Error.Code
		}
		payload, size := body, len(body)
		if b64 && req.Body != base64.StdEncoding.EncodeToString(body) {
			// Not base64: the size is the most it could decode to.
			payload, size = nil, base64.StdEncoding.DecodedLen(len(req.Body))
		}
		name, routed := commandPath(path)
		switch {
		case size > handler.MaxBodyBytes:
			if code != "too_large" {
				t.Fatalf("%d bytes answered %s", size, resp.Body)
			}
		case !routed:
			if code != "not_found" {
				t.Fatalf("path %q answered %s", path, resp.Body)
			}
		case !strings.EqualFold(method, http.MethodPost):
			if code != "method_not_allowed" || resp.Headers["Allow"] != "POST" {
				t.Fatalf("method %q answered %s", method, resp.Body)
			}
		case !commandNames[name]:
			if code != "unknown_command" {
				t.Fatalf("command %q answered %s", name, resp.Body)
			}
		case resp.StatusCode == http.StatusOK:
			if payload == nil || !wellFormed(name, payload) {
				t.Fatalf("ill-formed %s %q answered 200", name, payload)
			}
			if len(key) > handler.MaxIdempotencyKeyLength || !printable(key) || len(corr) > 256 || !printable(corr) {
				t.Fatalf("bad headers %q %q answered 200", key, corr)
			}
		}
		if resp.StatusCode == http.StatusOK && corr != "" && resp.Headers["X-Correlation-Id"] != corr {
			t.Fatalf("X-Correlation-Id %q, sent %q", resp.Headers["X-Correlation-Id"], corr)
		}
		if v, ok := resp.Headers["X-Correlation-Id"]; ok && (!printable(v) || len(v) > 256) {
			t.Fatalf("X-Correlation-Id answered %q", v)
		}
	})
}

var commandNames = map[string]bool{"open-account": true, "deposit": true, "withdraw": true, "transfer": true}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func FuzzProjectHTTP(f *testing.F) {
	e := newEnv(f)
	e.openBank()
	e.mustCommand("transfer", `{"from":"alice","to":"bob","amount":5}`)
	e.catchUp()
	appendRaw(f, e.Store, "a/b", "Note", `{}`)
	for _, s := range [][3]string{
		{"GET", "/accounts/alice", ""},
		{"GET", "/accounts/alice", "min_position=5"},
		{"GET", "/accounts/alice", "min_position=99"},
		{"GET", "/accounts/alice/history", "after=1&limit=2"},
		{"GET", "/accounts/bad%20id", ""},
		{"GET", "/accounts/carol", ""},
		{"GET", "/projections", ""},
		{"GET", "/streams/account-alice", "after=1&limit=1"},
		{"GET", "/streams/a%2Fb", ""},
		{"GET", "/streams/%zz", ""},
		{"GET", "/events", "after=1&limit=2&type=AccountOpened&type=MoneyDeposited&prefix=account-"},
		{"GET", "/events", "limit=1001"},
		{"GET", "/events", "after=%zz"},
		{"GET", "/events", "prefix=%FF"},
		{"GET", "/events", "type=%00"},
		{"POST", "/events", ""},
		{"GET", "/nope", ""},
		{"", "", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, method, path, query string) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		resp := e.Project.HandleHTTP(ctx, httpRequest(method, path, query, nil, ""))
		if !projectStatuses[resp.StatusCode] {
			t.Fatalf("%s %q ? %q: status %d: %s", method, path, query, resp.StatusCode, resp.Body)
		}
		checkJSONAnswer(t, resp.StatusCode, resp.Body)
		if resp.StatusCode == http.StatusOK {
			if !strings.EqualFold(method, http.MethodGet) {
				t.Fatalf("method %q answered 200", method)
			}
			if _, err := url.ParseQuery(query); err != nil {
				t.Fatalf("malformed query %q answered 200", query)
			}
		}
		if resp.StatusCode == http.StatusMethodNotAllowed && resp.Headers["Allow"] != "GET" {
			t.Fatalf("405 with Allow %q", resp.Headers["Allow"])
		}
	})
}

func FuzzExecuteInvoke(f *testing.F) {
	e := newEnv(f)
	e.openBank()
	for _, s := range []string{
		`{"command":"transfer","input":{"from":"alice","to":"bob","amount":5},"idempotency_key":"t-1"}`,
		`{"command":"deposit","input":{"account":"alice","amount":5},"correlation_id":"c","causation_id":"k"}`,
		`{"command":"deposit","input":{"account":"alice","amount":"5"}}`,
		`{"command":"deposit","input":null}`,
		`{"command":"nope"}`,
		`{"command":"deposit","input":{},"extra":true}`,
		`{"routeKey":"$default","rawPath":"/commands/deposit","requestContext":{"http":{"method":"POST"}},"body":"{\"account\":\"alice\",\"amount\":5}"}`,
		`{"routeKey":"$default","rawPath":"/commands/deposit","requestContext":{"http":{"method":"POST"}},"body":"e30=","isBase64Encoded":true}`,
		`{"requestContext":null}`,
		`{"routeKey":5}`,
		`{"source":"aws.events","detail-type":"Scheduled Event"}`,
		`[]`, `null`, `"x"`, `{`, ``, `1`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		before := headOf(t, e.Store)
		out, err := e.Execute.Invoke(context.Background(), json.RawMessage(payload))
		if err != nil {
			t.Fatalf("Invoke returned an error: %v", err)
		}
		var status int
		var body string
		switch v := out.(type) {
		case json.RawMessage:
			body = string(v)
			if strings.HasPrefix(body, `{"attempts":`) {
				status = 200
			} else {
				status = 400 // any error body; its code is checked below
			}
		case events.APIGatewayV2HTTPResponse:
			status, body = v.StatusCode, v.Body
			if !executeStatuses[status] {
				t.Fatalf("status %d: %s", status, body)
			}
		default:
			t.Fatalf("Invoke answered %T", out)
		}
		checkJSONAnswer(t, status, body)
		if status != 200 && headOf(t, e.Store) != before {
			t.Fatalf("an error wrote events: %s", body)
		}
		if status == 200 && !json.Valid(payload) {
			t.Fatalf("invalid JSON %q answered 200", payload)
		}
		if _, direct := out.(json.RawMessage); direct && status == 200 {
			var req handler.CommandRequest
			if err := handler.DecodeStrict(payload, &req); err != nil || !wellFormed(req.Command, req.Input) {
				t.Fatalf("ill-formed direct invocation %q answered 200", payload)
			}
		}
	})
}
