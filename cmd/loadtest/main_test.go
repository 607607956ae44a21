package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cmd/loadtest/internal/localtest"
	"github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

func TestMain(m *testing.M) { localtest.Main(m) }

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-n", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := load.Default()
	want.Count = 5
	if o.Config != want || o.JSON {
		t.Fatalf("defaults %+v", o)
	}
	o, err = parseFlags(strings.Fields("-url https://api.example.com/prod -clients 32 -duration 1m30s -accounts 7 "+
		"-prefix run_2 -mix transfer=8,deposit=1,withdraw=1 -fund 50 -amount 3 -timeout 2s -seed 9 -idempotency-keys -verify -json"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if c.URL != "https://api.example.com/prod" || c.Clients != 32 || c.Duration != 90*time.Second || c.Count != 0 ||
		c.Accounts != 7 || c.Prefix != "run_2" || c.Mix != (load.Mix{load.Transfer: 8, load.Deposit: 1, load.Withdraw: 1}) ||
		c.Fund != 50 || c.Amount != 3 || c.Timeout != 2*time.Second || c.Seed != 9 || !c.IdempotencyKeys || !c.Verify || !o.JSON {
		t.Fatalf("parsed %+v", o)
	}

	for _, tc := range []struct {
		args string
		err  string // the start of the one-line error
	}{
		{"", "-n or -duration: "},
		{"-n 10 -duration 1s", "-n and -duration: "},
		{"-duration 1s -n 10", "-n and -duration: "},
		{"-n 0", "-n: 0: "},
		{"-n -3", "-n: -3: "},
		{"-duration 0s", "-duration: 0s: "},
		{"-duration -1s", "-duration: -1s: "},
		{"-n 10 -clients 0", "-clients: 0: "},
		{"-n 10 -clients -2", "-clients: -2: "},
		{"-n 10 -mix transfer=1,payout=2", `-mix: unknown command "payout"`},
		{"-n 10 -mix transfer=x", `-mix: share "x" of transfer`},
		{"-n 10 -mix transfer=0", "-mix: every share is 0"},
		{"-n 10 -mix transfer=1,transfer=1", "-mix: transfer given twice"},
		{"-n 10 -mix ,", `-mix: "" is not name=share`},
		{"-n 10 -accounts 0", "-accounts: 0: "},
		{"-n 10 -accounts 1", "-accounts: 1: a transfer needs two accounts"},
		{"-n 10 -prefix a.b", `-prefix: "a.b"`},
		{"-n 10 -url localhost:8080", "-url: "},
		{"-n 10 -url http://", "-url: "},
		{"-n 10 -fund -1", "-fund: -1: "},
		{"-n 10 -amount 0", "-amount: 0: "},
		{"-n 10 -timeout 0s", "-timeout: 0s: "},
		{"-n ten", `invalid value "ten" for flag -n`},
		{"-clients x -n 1", `invalid value "x" for flag -clients`},
		{"-n 10 -nope", "flag provided but not defined: -nope"},
		{"-n 10 extra", `unexpected argument "extra"`},
		{"-n 10 -region eu-west-1", "-region: only with -sigv4"},
		{"-n 10 -service s3", "-service: only with -sigv4"},
		{"-n 10 -sigv4 -service=", "-service: empty"},
		{"-n 10 -histogram latency.svg", `-histogram: "latency.svg": want a file name ending in .png`},
		{"-n 10 -histogram", "flag needs an argument: -histogram"},
	} {
		_, err := parseFlags(strings.Fields(tc.args), io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), tc.err) || strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("%q: %v; want one line starting %q", tc.args, err, tc.err)
		}
	}

	var usage bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(usage.String(), "usage: loadtest") || !strings.Contains(usage.String(), "-mix") {
		t.Fatalf("-h: %v\n%s", err, usage.String())
	}
}

// TestRunText runs the tool's run against the local runner and reads the
// text summary.
func TestRunText(t *testing.T) {
	r := localtest.Start(t)
	o, err := parseFlags([]string{"-url", r.URL, "-clients", "8", "-n", "200", "-accounts", "10", "-mix", "transfer=1", "-prefix", "text", "-verify"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for _, re := range []string{
		`(?m)^loadtest done: ` + regexp.QuoteMeta(r.URL) + `, 8 clients, 10 accounts \(prefix text\), mix transfer=1, seed 1$`,
		`(?m)^commands:  200 in [0-9.]+s: [0-9.]+ commands/s answered, [0-9.]+/s answered 200$`,
		`(?m)^latency:   p50 [0-9.]+ms  p95 [0-9.]+ms  p99 [0-9.]+ms  \(min [0-9.]+ms  mean [0-9.]+ms  max [0-9.]+ms\)$`,
		`(?m)^statuses:  200=\d+( 409=\d+)?$`,
		`(?m)^codes:     (none|concurrency=\d+)$`,
		`(?m)^transport: 0 errors$`,
		`(?m)^  transfer +200  200=\d+`,
		`(?m)^verify:    10 accounts hold 10000000, expected 10000000: ok$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("the summary has no line matching %s", re)
		}
	}
	if regexp.MustCompile(`commands:  200 in [0-9.]+s: 0\.0 commands/s`).MatchString(text) {
		t.Error("no rate")
	}
}

// TestRunJSON: -json prints one JSON object with the figures scripts read.
func TestRunJSON(t *testing.T) {
	r := localtest.Start(t)
	o, err := parseFlags([]string{"-url", r.URL, "-clients", "8", "-n", "120", "-accounts", "6", "-json", "-prefix", "json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatal(err)
	}
	var s struct {
		Prefix            string                               `json:"prefix"`
		Mix               string                               `json:"mix"`
		Requests          int                                  `json:"requests"`
		Answered          int                                  `json:"answered"`
		CommandsPerSecond float64                              `json:"commands_per_second"`
		ElapsedSeconds    float64                              `json:"elapsed_seconds"`
		Statuses          map[string]int                       `json:"statuses"`
		Codes             map[string]int                       `json:"codes"`
		TransportErrors   *int                                 `json:"transport_errors"`
		LatencyMS         struct{ P50, P95, P99, Max float64 } `json:"latency_ms"`
		ByCommand         map[string]struct {
			Requests int            `json:"requests"`
			Statuses map[string]int `json:"statuses"`
		} `json:"by_command"`
		Interrupted *bool `json:"interrupted"`
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	sum := 0
	for _, n := range s.Statuses {
		sum += n
	}
	if s.Prefix != "json" || s.Mix != "deposit=1,withdraw=1,transfer=8" || s.Requests != 120 || s.Answered != 120 || sum != 120 ||
		s.TransportErrors == nil || *s.TransportErrors != 0 || s.Interrupted == nil || *s.Interrupted {
		t.Fatalf("%s", out.String())
	}
	if s.CommandsPerSecond <= 0 || s.ElapsedSeconds <= 0 || s.LatencyMS.P50 <= 0 ||
		s.LatencyMS.P50 > s.LatencyMS.P95 || s.LatencyMS.P95 > s.LatencyMS.P99 || s.LatencyMS.P99 > s.LatencyMS.Max {
		t.Fatalf("%s", out.String())
	}
	n := 0
	for _, c := range s.ByCommand {
		n += c.Requests
	}
	if n != 120 || s.ByCommand["transfer"].Requests == 0 {
		t.Fatalf("by command %+v", s.ByCommand)
	}
}

// TestRunFails: a setup that cannot start is an error and prints nothing.
func TestRunFails(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	o, err := parseFlags([]string{"-url", srv.URL, "-n", "5"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err == nil || !strings.Contains(err.Error(), "setup: open account") || out.Len() != 0 {
		t.Fatalf("%v, printed %q", err, out.String())
	}
}

// TestInterruptBinary builds the tool, runs it against a server that stops
// answering after 20 transfers, interrupts it, and reads the summary of
// what ran.
func TestInterruptBinary(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	bin := filepath.Join(t.TempDir(), "loadtest")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var transfers atomic.Int64
	stuck := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read to the end, so that the server notices a closed connection.
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/commands/transfer" && transfers.Add(1) > 20 {
			stuck <- struct{}{}
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"attempts":1,"events":[{"position":%d}]}`, transfers.Load())
	}))
	defer srv.Close()

	cmd := exec.Command(bin, "-url", srv.URL, "-clients", "3", "-n", "1000", "-accounts", "4", "-mix", "transfer=1", "-prefix", "sig")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		select {
		case <-stuck:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("the clients did not reach the stuck transfers")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("did not stop on SIGINT")
	}
	text := stdout.String()
	if !strings.Contains(text, "loadtest INTERRUPTED (3 requests in flight abandoned)") ||
		!regexp.MustCompile(`(?m)^commands:  20 in `).MatchString(text) || !strings.Contains(text, "statuses:  200=20\n") {
		t.Fatalf("summary:\n%s\nstderr:\n%s", text, stderr.String())
	}
}
