package functions_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/internal/syncbuf"
)

// The emulator and the bootstraps, built by `make build-host rie`.
const (
	rieBinary = "../bin/aws-lambda-rie"
	distHost  = "../dist/host"
)

// requireBinaries returns the absolute paths of the emulator and of the
// bootstraps' directory. Without them the test skips, except under CI=true
// where it fails.
func requireBinaries(t testing.TB) (rie, dist string) {
	t.Helper()
	if msg := missingBinaries(); msg != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	rie, err := filepath.Abs(rieBinary)
	if err != nil {
		t.Fatal(err)
	}
	dist, err = filepath.Abs(distHost)
	if err != nil {
		t.Fatal(err)
	}
	return rie, dist
}

// missingBinaries names the binaries `make build-host rie` has not built,
// or is empty.
func missingBinaries() string {
	var missing []string
	for _, p := range []string{rieBinary, filepath.Join(distHost, "execute", "bootstrap"), filepath.Join(distHost, "project", "bootstrap")} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("missing %s: run `make build-host rie` first (make test does)", strings.Join(missing, ", "))
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// function is one bootstrap running under its own emulator.
type function struct {
	name string
	url  string
	out  *syncbuf.Buffer
	// stop sends SIGTERM to the emulator's process group, waits for it to
	// exit (SIGKILL after 5 s) and returns whether it exited by itself. It
	// runs once; the test's cleanup calls it too.
	stop func() bool
}

var client = &http.Client{Timeout: 20 * time.Second}

// startFunction runs dist/host/<fn>/bootstrap under the emulator, on free
// ports for both the invoke API and the runtime API, with env as the whole
// environment besides PATH and HOME (the emulator passes its environment on
// to the function). The emulator's process group is killed when the test
// ends. A port taken by another process between the choice and the bind
// is retried with new ports.
func startFunction(t testing.TB, fn, label string, env map[string]string) *function {
	t.Helper()
	return startInstance(t, fn, label, 0, env)
}

// startManaged is startFunction in the emulator's managed-instances mode
// (Lambda Managed Instances): one execution environment runs concurrency
// invocations at once, and the emulator answers 400 Runtime.Unavailable
// (function.send resends) while all of them are busy. The emulator
// runs the runtime as uid 993, so the directories of env's files must be
// open to that user (see sharedDir). In this mode the emulator takes the
// bootstrap only from /var/task (or /var/runtime, /opt) and needs
// /var/task as its working directory: each instance runs in a private
// mount namespace with a copy of the bootstrap bind-mounted there, which
// needs root; without root the test skips. The namespace is also a PID
// namespace whose first process is the emulator, so no runtime outlives
// it.
func startManaged(t testing.TB, fn, label string, concurrency int, env map[string]string) *function {
	t.Helper()
	requireManaged(t)
	return startInstance(t, fn, label, concurrency, env)
}

// requireManaged skips the test unless managed-instances mode can run
// here (root and unshare, besides the binaries).
func requireManaged(t testing.TB) {
	t.Helper()
	requireBinaries(t)
	if os.Geteuid() != 0 {
		t.Skip("the emulator's managed-instances mode needs root (a private mount namespace with the bootstrap on /var/task); CI runs as root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("the emulator's managed-instances mode needs unshare (util-linux) for a private mount namespace")
	}
}

// sharedDir is a new empty directory that the runtime's user (uid 993 in
// managed-instances mode) may write, removed when the test ends;
// t.TempDir is open to its owner only.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "eventcore-managed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// managedScript runs in the private namespaces: it mounts the directory
// $1 (holding the bootstrap) on /var/task and execs the emulator (the rest
// of the arguments) there, so that it is the namespace's first process and
// receives the signals sent to the process group.
const managedScript = `mkdir -p /var/task && mount --bind "$1" /var/task && cd /var/task && shift && exec "$@"`

// startInstance starts fn with concurrency invocations at once (0: the
// emulator's default mode, one at a time).
func startInstance(t testing.TB, fn, label string, concurrency int, env map[string]string) *function {
	t.Helper()
	for attempt := 1; ; attempt++ {
		f, err := launch(t, fn, label, concurrency, env)
		if err == nil {
			return f
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

func launch(t testing.TB, fn, label string, concurrency int, env map[string]string) (*function, error) {
	t.Helper()
	rie, dist := requireBinaries(t)
	invokeAddr, runtimeAddr := freeAddr(t), freeAddr(t)
	for runtimeAddr == invokeAddr {
		runtimeAddr = freeAddr(t)
	}
	args := []string{"--runtime-interface-emulator-address", invokeAddr, "--runtime-api-address", runtimeAddr}
	bootstrap := filepath.Join(dist, fn, "bootstrap")
	cmd := exec.Command(rie, append(args, bootstrap)...)
	if concurrency > 0 {
		// A copy: a rebuild of dist/ during the test changes nothing.
		task := t.TempDir()
		if err := copyExecutable(bootstrap, filepath.Join(task, "bootstrap")); err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if err := os.Chmod(task, 0o755); err != nil {
			return nil, err
		}
		argv := append([]string{"--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", managedScript, "sh", task, rie}, args...)
		cmd = exec.Command("unshare", append(argv, "/var/task/bootstrap")...)
	}
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cmd.Dir}
	if concurrency > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("AWS_LAMBDA_MAX_CONCURRENCY=%d", concurrency))
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start the emulator: %w", label, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := sync.OnceValue(func() bool {
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
			return true
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
			return false
		}
	})
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s emulator output:\n%s", label, out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", invokeAddr, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			return &function{name: label, url: "http://" + invokeAddr + "/2015-03-31/functions/function/invocations", out: out, stop: stop}, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%s: the emulator exited before listening:\n%s", label, out)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: the emulator does not listen on %s: %w", label, invokeAddr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// copyExecutable copies the file src to dst with mode 0755.
func copyExecutable(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// invoke posts one event to the emulator and returns its status and body.
func (f *function) invoke(t testing.TB, payload any) (int, []byte) {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	status, out, err := f.post(context.Background(), body)
	if err != nil {
		t.Fatalf("%s: %v", f.name, err)
	}
	return status, out
}

// post invokes the function with body until ctx ends, and returns the
// emulator's status and answer.
func (f *function) post(ctx context.Context, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("invoke: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("read the invoke answer: %w", err)
	}
	return resp.StatusCode, out, nil
}

// scheduledEvent is what EventBridge sends the project function on its
// ProjectionSchedule.
func scheduledEvent() events.EventBridgeEvent {
	return events.EventBridgeEvent{
		Version: "0", ID: uuid.NewString(), DetailType: "Scheduled Event",
		Source: "aws.events", AccountID: "123456789012", Time: time.Now().UTC(), Region: "us-east-1",
		Resources: []string{"arn:aws:events:us-east-1:123456789012:rule/ProjectFunctionCatchUp"},
		Detail:    json.RawMessage(`{}`),
	}
}

// invokeOK invokes and requires the emulator's 200 (the function answered).
func (f *function) invokeOK(t testing.TB, payload any) []byte {
	t.Helper()
	status, out := f.invoke(t, payload)
	if status != http.StatusOK {
		t.Fatalf("%s: invoke answered %d: %s", f.name, status, out)
	}
	return out
}

// request is an HTTP API request; target is the path with an optional
// query.
type request struct {
	method  string
	target  string
	body    string
	headers map[string]string
	base64  bool
}

var (
	routesOnce sync.Once
	patterns   []string
)

// routeKey is the route API Gateway would match: "METHOD /pattern" for the
// routes of the template, "$default" for anything else.
func routeKey(method, path string) string {
	routesOnce.Do(func() {
		reg := handler.NewRegistry()
		bankapi.Register(reg)
		patterns = append([]string{handler.CommandRoute}, handler.ReadRoutes(reg)...)
	})
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, p := range patterns {
		ps := strings.Split(strings.TrimPrefix(p, "/"), "/")
		if len(ps) != len(segs) {
			continue
		}
		match := true
		for i := range ps {
			if !strings.HasPrefix(ps[i], "{") && ps[i] != segs[i] || segs[i] == "" {
				match = false
				break
			}
		}
		if match {
			want := http.MethodGet
			if p == handler.CommandRoute {
				want = http.MethodPost
			}
			if method == want {
				return method + " " + p
			}
		}
	}
	return "$default"
}

// event is the HTTP API (payload format 2.0) event of r.
func (r request) event() events.APIGatewayV2HTTPRequest {
	path, query, _ := strings.Cut(r.target, "?")
	headers := map[string]string{"host": "api.example.com", "user-agent": "e2e-test"}
	if r.body != "" {
		headers["content-type"] = "application/json"
	}
	for k, v := range r.headers {
		headers[strings.ToLower(k)] = v
	}
	params := map[string]string{}
	for _, kv := range strings.Split(query, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if params[k] != "" {
				v = params[k] + "," + v
			}
			params[k] = v
		}
	}
	now := time.Now()
	return events.APIGatewayV2HTTPRequest{
		Version:               "2.0",
		RouteKey:              routeKey(r.method, path),
		RawPath:               path,
		RawQueryString:        query,
		Headers:               headers,
		QueryStringParameters: params,
		Body:                  r.body,
		IsBase64Encoded:       r.base64,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			AccountID:  "123456789012",
			APIID:      "e2etest",
			DomainName: "api.example.com",
			Stage:      "$default",
			RequestID:  fmt.Sprintf("req-%d", now.UnixNano()),
			Time:       now.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:  now.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: r.method, Path: path, Protocol: "HTTP/1.1", SourceIP: "127.0.0.1", UserAgent: "e2e-test",
			},
		},
	}
}

// do sends an HTTP API request and returns the function's HTTP answer.
func (f *function) do(t testing.TB, r request) events.APIGatewayV2HTTPResponse {
	t.Helper()
	out := f.invokeOK(t, r.event())
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode == 0 {
		t.Fatalf("%s %s %s: not an HTTP API response: %s (%v)", f.name, r.method, r.target, out, err)
	}
	if ct := resp.Headers["Content-Type"]; ct != "application/json" {
		t.Errorf("%s %s %s: Content-Type %q", f.name, r.method, r.target, ct)
	}
	return resp
}

// decodeOK requires status 200 and decodes the body into T.
func decodeOK[T any](t *testing.T, resp events.APIGatewayV2HTTPResponse) T {
	t.Helper()
	var v T
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", resp.StatusCode, resp.Body)
	}
	if err := json.Unmarshal([]byte(resp.Body), &v); err != nil {
		t.Fatalf("decode %s: %v", resp.Body, err)
	}
	return v
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// wantError requires an error answer with status and code.
func wantError(t *testing.T, resp events.APIGatewayV2HTTPResponse, status int, code string) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(resp.Body), &e); err != nil {
		t.Fatalf("error body %q: %v", resp.Body, err)
	}
	if resp.StatusCode != status || e.Error.Code != code {
		t.Fatalf("answer %d %q, want %d %q: %s", resp.StatusCode, e.Error.Code, status, code, resp.Body)
	}
	if e.Error.Message == "" {
		t.Errorf("error %s without a message", code)
	}
	return e
}

func post(command, body string, headers ...string) request {
	r := request{method: http.MethodPost, target: "/commands/" + command, body: body, headers: map[string]string{}}
	for i := 0; i+1 < len(headers); i += 2 {
		r.headers[headers[i]] = headers[i+1]
	}
	return r
}

func get(target string) request { return request{method: http.MethodGet, target: target} }

type balance struct {
	Account  string `json:"account"`
	Balance  int64  `json:"balance"`
	Position uint64 `json:"position"`
}

type history struct {
	Account string `json:"account"`
	History []struct {
		Position     uint64  `json:"position"`
		Type         string  `json:"type"`
		Amount       int64   `json:"amount"`
		Balance      int64   `json:"balance"`
		Counterparty *string `json:"counterparty"`
		RecordedAt   string  `json:"recorded_at"`
	} `json:"history"`
}

type projectionStatus struct {
	Projections []struct {
		Name        string `json:"name"`
		Checkpoint  uint64 `json:"checkpoint"`
		Head        uint64 `json:"head"`
		Lag         uint64 `json:"lag"`
		DeadLetters int    `json:"dead_letters"`
	} `json:"projections"`
}

type scheduleReport struct {
	Projections []struct {
		Name       string `json:"name"`
		Applied    int    `json:"applied"`
		Checkpoint uint64 `json:"checkpoint"`
		Head       uint64 `json:"head"`
	} `json:"projections"`
}

type streamPage struct {
	Stream  string              `json:"stream"`
	Version uint64              `json:"version"`
	Events  []handler.EventJSON `json:"events"`
}

type feedPage struct {
	Events []handler.EventJSON `json:"events"`
	Next   uint64              `json:"next"`
}

func lastPosition(t *testing.T, res handler.CommandResponse) uint64 {
	t.Helper()
	if len(res.Events) == 0 {
		t.Fatalf("command recorded no events: %+v", res)
	}
	return uint64(res.Events[len(res.Events)-1].Position)
}

func eventTypes(res handler.CommandResponse) []string {
	var out []string
	for _, e := range res.Events {
		out = append(out, e.Type)
	}
	return out
}

// TestLambdaEndToEnd runs both bootstraps under the Lambda Runtime
// Interface Emulator over one pair of SQLite files, as they share EFS on
// AWS, and drives them with HTTP API, scheduled and direct events. The 409
// concurrency answer needs version conflicts outlasting the executor's
// retries; an emulator runs one invocation at a time, so commands never
// conflict here, and the handler's unit tests cover it.
func TestLambdaEndToEnd(t *testing.T) {
	requireBinaries(t)
	data := t.TempDir()
	env := map[string]string{
		"EVENTCORE_ALLOW_EPHEMERAL": "true",
		"EVENTCORE_DB":              filepath.Join(data, "events.db"),
		"EVENTCORE_READ_DB":         filepath.Join(data, "projections.db"),
	}
	execute := startFunction(t, "execute", "execute", env)
	project := startFunction(t, "project", "project", env)

	var head uint64

	t.Run("commands", func(t *testing.T) {
		for _, body := range []string{
			`{"account":"fees","owner":"Fee collector"}`,
			`{"account":"alice","owner":"Alice","fee_account":"fees"}`,
			`{"account":"bob","owner":"Bob"}`,
		} {
			res := decodeOK[handler.CommandResponse](t, execute.do(t, post("open-account", body)))
			if res.Attempts != 1 || len(res.Events) != 1 || res.Events[0].Type != "AccountOpened" {
				t.Fatalf("open-account %s answered %+v", body, res)
			}
		}
		res := decodeOK[handler.CommandResponse](t, execute.do(t, post("deposit", `{"account":"alice","amount":1000}`)))
		if got := eventTypes(res); len(got) != 1 || got[0] != "MoneyDeposited" || res.Events[0].Stream != "account-alice" {
			t.Fatalf("deposit answered %+v", res)
		}
		resp := execute.do(t, post("transfer", `{"from":"alice","to":"bob","amount":100}`,
			"Idempotency-Key", "transfer-1", "X-Correlation-Id", "corr-transfer-1", "X-Causation-Id", "cause-1"))
		transfer := decodeOK[handler.CommandResponse](t, resp)
		if resp.Headers["X-Correlation-Id"] != "corr-transfer-1" {
			t.Errorf("X-Correlation-Id answered %q", resp.Headers["X-Correlation-Id"])
		}
		types := map[string]string{}
		for _, e := range transfer.Events {
			types[e.Type] = e.Stream
		}
		want := map[string]string{"TransferDebited": "account-alice", "TransferCredited": "account-bob", "FeeCharged": "account-alice", "FeeCollected": "account-fees"}
		if len(types) != len(want) || len(transfer.Events) != len(want) {
			t.Fatalf("transfer recorded %+v, want %v", transfer.Events, want)
		}
		for typ, stream := range want {
			if types[typ] != stream {
				t.Errorf("transfer: %s on %q, want %s", typ, types[typ], stream)
			}
		}
		head = lastPosition(t, transfer)
		if head != 8 {
			t.Errorf("head after 3 opens, a deposit and a transfer with a fee is %d, want 8", head)
		}

		again := execute.do(t, post("transfer", `{"from":"alice","to":"bob","amount":100}`, "Idempotency-Key", "transfer-1"))
		repeat := decodeOK[handler.CommandResponse](t, again)
		if repeat.Attempts != 0 || lastPosition(t, repeat) != head || len(repeat.Events) != len(transfer.Events) {
			t.Fatalf("repeated transfer answered %+v, want the first events with attempts 0", repeat)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("read your writes", func(t *testing.T) {
		for _, c := range []struct {
			account string
			want    int64
		}{{"alice", 899}, {"bob", 100}, {"fees", 1}} {
			b := decodeOK[balance](t, project.do(t, get(fmt.Sprintf("/accounts/%s?min_position=%d", c.account, head))))
			if b.Account != c.account || b.Balance != c.want || b.Position == 0 || b.Position > head {
				t.Errorf("balance of %s = %+v, want %d", c.account, b, c.want)
			}
		}
		wantError(t, project.do(t, get(fmt.Sprintf("/accounts/nobody?min_position=%d", head))), http.StatusNotFound, "account_not_found")
	})

	t.Run("scheduled catch-up", func(t *testing.T) {
		scheduled := scheduledEvent()
		out := project.invokeOK(t, scheduled)
		var report scheduleReport
		if err := json.Unmarshal(out, &report); err != nil {
			t.Fatalf("scheduled invocation answered %s: %v", out, err)
		}
		seen := map[string]bool{}
		for _, p := range report.Projections {
			seen[p.Name] = true
			if p.Checkpoint != head || p.Head != head {
				t.Errorf("projection %s after the schedule: %+v, want checkpoint and head %d", p.Name, p, head)
			}
			if p.Name == "history" && p.Applied != int(head) {
				t.Errorf("history applied %d events, want %d (nothing read it before)", p.Applied, head)
			}
		}
		if !seen["balances"] || !seen["history"] || len(report.Projections) != 2 {
			t.Fatalf("scheduled invocation answered %s", out)
		}
	})

	t.Run("history", func(t *testing.T) {
		h := decodeOK[history](t, project.do(t, get("/accounts/alice/history")))
		want := []struct {
			typ          string
			amount, bal  int64
			counterparty string
		}{{"AccountOpened", 0, 0, ""}, {"MoneyDeposited", 1000, 1000, ""}, {"TransferDebited", 100, 900, "bob"}, {"FeeCharged", 1, 899, "fees"}}
		if h.Account != "alice" || len(h.History) != len(want) {
			t.Fatalf("history of alice: %+v", h)
		}
		for i, w := range want {
			m := h.History[i]
			cp := ""
			if m.Counterparty != nil {
				cp = *m.Counterparty
			}
			if m.Type != w.typ || m.Balance != w.bal || (w.amount != 0 && m.Amount != w.amount) || cp != w.counterparty || m.RecordedAt == "" {
				t.Errorf("history[%d] = %+v, want %+v", i, m, w)
			}
		}
		page := decodeOK[history](t, project.do(t, get(fmt.Sprintf("/accounts/bob/history?after=%d&limit=1&min_position=%d", 3, head))))
		if len(page.History) != 1 || page.History[0].Type != "TransferCredited" || page.History[0].Balance != 100 {
			t.Errorf("history of bob after 3: %+v", page)
		}
	})

	t.Run("projections", func(t *testing.T) {
		st := decodeOK[projectionStatus](t, project.do(t, get("/projections")))
		if len(st.Projections) != 2 {
			t.Fatalf("projections: %+v", st)
		}
		for _, p := range st.Projections {
			if p.Checkpoint != head || p.Head != head || p.Lag != 0 || p.DeadLetters != 0 {
				t.Errorf("projection %+v, want checkpoint %d, lag 0", p, head)
			}
		}
	})

	t.Run("stream", func(t *testing.T) {
		s := decodeOK[streamPage](t, project.do(t, get("/streams/account-alice")))
		if s.Stream != "account-alice" || s.Version != 4 || len(s.Events) != 4 {
			t.Fatalf("stream account-alice: %+v", s)
		}
		debit := s.Events[2]
		if debit.Type != "TransferDebited" || debit.Version != 3 {
			t.Fatalf("third event of account-alice: %+v", debit)
		}
		md := debit.Metadata
		if md.Command != "transfer" || md.CorrelationID != "corr-transfer-1" || md.CausationID != "cause-1" || md.CommandID != "transfer-1" || md.EventID.String() == "" {
			t.Errorf("transfer metadata %+v", md)
		}
		var data map[string]any
		if err := json.Unmarshal(debit.Data, &data); err != nil || data["to"] != "bob" || data["amount"] != float64(100) {
			t.Errorf("TransferDebited data %s (%v)", debit.Data, err)
		}
		page := decodeOK[streamPage](t, project.do(t, get("/streams/account-alice?after=1&limit=2")))
		if len(page.Events) != 2 || page.Events[0].Version != 2 || page.Version != 4 {
			t.Errorf("account-alice after 1, limit 2: %+v", page)
		}
		wantError(t, project.do(t, get("/streams/account-alice?limit=0")), http.StatusBadRequest, "invalid_request")
	})

	t.Run("events", func(t *testing.T) {
		feed := decodeOK[feedPage](t, project.do(t, get("/events?after=0&limit=10&type=TransferDebited&type=FeeCollected")))
		if len(feed.Events) != 2 || feed.Events[0].Type != "TransferDebited" || feed.Events[1].Type != "FeeCollected" || feed.Next != uint64(feed.Events[1].Position) {
			t.Fatalf("feed of TransferDebited and FeeCollected: %+v", feed)
		}
		all := decodeOK[feedPage](t, project.do(t, get("/events?after=2&limit=3&prefix=account-")))
		if len(all.Events) != 3 || all.Events[0].Position != 3 || all.Next != 5 {
			t.Errorf("feed after 2, limit 3: %+v", all)
		}
	})

	t.Run("direct invocation", func(t *testing.T) {
		call := map[string]any{
			"command":         "deposit",
			"input":           map[string]any{"account": "bob", "amount": 5},
			"idempotency_key": "direct-1",
		}
		var first, second handler.CommandResponse
		if err := json.Unmarshal(execute.invokeOK(t, call), &first); err != nil {
			t.Fatal(err)
		}
		if first.Attempts != 1 || len(first.Events) != 1 || first.Events[0].Type != "MoneyDeposited" || first.Events[0].Stream != "account-bob" {
			t.Fatalf("direct deposit answered %+v", first)
		}
		if err := json.Unmarshal(execute.invokeOK(t, call), &second); err != nil {
			t.Fatal(err)
		}
		if second.Attempts != 0 || len(second.Events) != 1 || second.Events[0] != first.Events[0] {
			t.Fatalf("repeated direct deposit answered %+v, want %+v with attempts 0", second, first)
		}
		head = uint64(first.Events[0].Position)
		b := decodeOK[balance](t, project.do(t, get(fmt.Sprintf("/accounts/bob?min_position=%d", head))))
		if b.Balance != 105 {
			t.Errorf("bob after a direct deposit of 5, repeated: %+v, want 105", b)
		}
		s := decodeOK[streamPage](t, project.do(t, get("/streams/account-bob")))
		if s.Version != 3 || s.Events[2].Metadata.CommandID != "direct-1" || s.Events[2].Metadata.Command != "deposit" {
			t.Errorf("account-bob after the direct deposit: %+v", s)
		}

		out := execute.invokeOK(t, map[string]any{"command": "withdraw", "input": map[string]any{"account": "bob", "amount": 1000}})
		var e errorBody
		if err := json.Unmarshal(out, &e); err != nil || e.Error.Code != "insufficient_funds" {
			t.Errorf("direct withdraw beyond the balance answered %s", out)
		}
	})

	t.Run("errors", func(t *testing.T) {
		big := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("x"), handler.MaxBodyBytes+1))
		for _, c := range []struct {
			name   string
			fn     *function
			req    request
			status int
			code   string
			allow  string
		}{
			{"bad JSON", execute, post("deposit", `{"account":"alice","amount":`), 400, "invalid_request", ""},
			{"fractional amount", execute, post("deposit", `{"account":"alice","amount":1.5}`), 400, "invalid_request", ""},
			{"unknown field", execute, post("deposit", `{"account":"alice","amount":1,"memo":"x"}`), 400, "invalid_request", ""},
			{"bad idempotency key", execute, post("deposit", `{"account":"alice","amount":1}`, "Idempotency-Key", strings.Repeat("k", 129)), 400, "invalid_request", ""},
			{"unknown command", execute, post("close-account", `{"account":"alice"}`), 404, "unknown_command", ""},
			{"no route", execute, request{method: http.MethodPost, target: "/nothing", body: `{}`}, 404, "not_found", ""},
			{"no read route", project, get("/nothing/here"), 404, "not_found", ""},
			{"GET a command", execute, get("/commands/deposit"), 405, "method_not_allowed", "POST"},
			{"POST a read", project, request{method: http.MethodPost, target: "/projections", body: `{}`}, 405, "method_not_allowed", "GET"},
			{"base64 body over 256 KiB", execute, request{method: http.MethodPost, target: "/commands/deposit", body: big, base64: true}, 413, "too_large", ""},
			{"insufficient funds", execute, post("transfer", `{"from":"bob","to":"alice","amount":1000}`), 422, "insufficient_funds", ""},
			{"account not open", execute, post("deposit", `{"account":"carol","amount":1}`), 422, "account_not_found", ""},
			{"bad min_position", project, get("/accounts/alice?min_position=x"), 400, "invalid_request", ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				resp := c.fn.do(t, c.req)
				wantError(t, resp, c.status, c.code)
				if c.allow != "" && resp.Headers["Allow"] != c.allow {
					t.Errorf("Allow = %q, want %q", resp.Headers["Allow"], c.allow)
				}
			})
		}
		small := base64.StdEncoding.EncodeToString([]byte(`{"account":"alice","amount":1}`))
		res := decodeOK[handler.CommandResponse](t, execute.do(t, request{method: http.MethodPost, target: "/commands/deposit", body: small, base64: true}))
		head = lastPosition(t, res)
		feed := decodeOK[feedPage](t, project.do(t, get(fmt.Sprintf("/events?after=%d", head-1))))
		if len(feed.Events) != 1 || feed.Next != head {
			t.Errorf("events after the error cases: %+v; an error answer wrote something", feed)
		}
	})

	t.Run("projection behind", func(t *testing.T) {
		// A deadline of one second (the emulator takes whole seconds) for
		// a position the log will not reach.
		shortEnv := map[string]string{"AWS_LAMBDA_FUNCTION_TIMEOUT": "1"}
		for k, v := range env {
			shortEnv[k] = v
		}
		short := startFunction(t, "project", "project (1 s timeout)", shortEnv)
		// Without the handler's margin before the deadline every attempt
		// times out; a machine too loaded to answer within the margin may
		// time out once.
		var resp events.APIGatewayV2HTTPResponse
		for attempt := 1; ; attempt++ {
			start := time.Now()
			status, out := short.invoke(t, get(fmt.Sprintf("/accounts/alice?min_position=%d", head+1_000_000)).event())
			elapsed := time.Since(start)
			if status != http.StatusOK {
				t.Fatalf("invoke answered %d after %v: %s", status, elapsed, out)
			}
			if err := json.Unmarshal(out, &resp); err == nil && resp.StatusCode != 0 {
				break
			}
			if attempt == 3 || !bytes.HasPrefix(out, []byte("Task timed out")) {
				t.Fatalf("after %v the emulator answered %s, not the function's 503", elapsed, out)
			}
			t.Logf("attempt %d: after %v the emulator answered %s; trying again", attempt, elapsed, out)
		}
		wantError(t, resp, http.StatusServiceUnavailable, "projection_behind")
		b := decodeOK[balance](t, short.do(t, get(fmt.Sprintf("/accounts/alice?min_position=%d", head))))
		if b.Balance != 900 {
			t.Errorf("alice after the extra deposit of 1: %+v, want 900", b)
		}
	})
}

// TestLambdaConfigErrorFailsStart starts the execute function with a log in
// /tmp and no EVENTCORE_ALLOW_EPHEMERAL: the bootstrap must exit at start
// with a line naming EVENTCORE_DB, and the invocation must fail.
func TestLambdaConfigErrorFailsStart(t *testing.T) {
	requireBinaries(t)
	_, statErr := os.Stat("/tmp/x.db")
	existed := statErr == nil
	fn := startFunction(t, "execute", "execute (bad config)", map[string]string{
		"EVENTCORE_DB":      "/tmp/x.db",
		"EVENTCORE_READ_DB": filepath.Join(t.TempDir(), "projections.db"),
	})
	status, out := fn.invoke(t, post("deposit", `{"account":"alice","amount":1}`).event())
	if status == http.StatusOK {
		t.Fatalf("an invocation of a function that cannot start answered 200: %s", out)
	}
	var logged string
	deadline := time.Now().Add(5 * time.Second)
	for {
		logged = fn.out.String()
		if strings.Contains(logged, "execute: EVENTCORE_DB: ") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logged, "execute: EVENTCORE_DB: ") || !strings.Contains(logged, "/mnt/") {
		t.Fatalf("the output does not name EVENTCORE_DB (status %d, body %s):\n%s", status, out, logged)
	}
	if _, err := os.Stat("/tmp/x.db"); err == nil && !existed {
		t.Error("the function created /tmp/x.db before refusing its configuration")
	}
}
