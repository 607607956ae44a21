package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is a server with the API's shape whose answers the test chooses.
type fake struct {
	position  atomic.Uint64
	transfers atomic.Int64
	mu        sync.Mutex
	keys      map[string]bool
	bodies    map[string][]string // by command
	// transfer answers the i-th transfer (from 0); nil: 200.
	transfer func(i int64, w http.ResponseWriter, r *http.Request)
	// setup answers open-account and deposit; nil: 200.
	setup func(name string, w http.ResponseWriter)
}

func (f *fake) ok(w http.ResponseWriter) {
	p := f.position.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"attempts":1,"events":[{"stream":"s","version":1,"position":%d,"type":"T"}]}`, p)
}

func fail(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"error":{"code":%q,"message":"m"}}`, code)
}

func (f *fake) start(t *testing.T) string {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /commands/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		if f.bodies == nil {
			f.bodies, f.keys = map[string][]string{}, map[string]bool{}
		}
		f.bodies[name] = append(f.bodies[name], string(body))
		if k := r.Header.Get("Idempotency-Key"); k != "" {
			if f.keys[k] {
				t.Errorf("Idempotency-Key %q sent twice", k)
			}
			f.keys[k] = true
		}
		f.mu.Unlock()
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
		}
		switch name {
		case "open-account", "deposit":
			if f.setup != nil {
				f.setup(name, w)
				return
			}
			f.ok(w)
		case "withdraw":
			fail(w, 422, "insufficient_funds")
		case "transfer":
			i := f.transfers.Add(1) - 1
			if f.transfer == nil {
				f.ok(w)
				return
			}
			f.transfer(i, w, r)
		default:
			fail(w, 404, "unknown_command")
		}
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s.URL
}

func fakeConfig(url string) Config {
	c := Default()
	c.URL, c.Clients, c.Accounts, c.Prefix, c.Count, c.Timeout = url, 4, 5, "t", 40, 5*time.Second
	c.Mix = Mix{Transfer: 1}
	return c
}

// TestCounting: every answer is counted by status and error code, answers
// without a code as NoCode, connections closed without an answer as
// transport errors; latencies cover only the answered.
func TestCounting(t *testing.T) {
	f := &fake{}
	f.transfer = func(i int64, w http.ResponseWriter, _ *http.Request) {
		switch i % 4 {
		case 0:
			f.ok(w)
		case 1:
			fail(w, 409, "concurrency")
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "Service Unavailable")
		case 3:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			_ = conn.Close()
		}
	}
	f.position.Store(100)
	cfg := fakeConfig(f.start(t))
	cfg.Mix = Mix{Transfer: 1, Withdraw: 1}
	cfg.Count = 0
	s, err := Run(context.Background(), withCount(cfg, 80))
	if err != nil {
		t.Fatal(err)
	}
	tr, wd := s.ByCommand["transfer"], s.ByCommand["withdraw"]
	n := int(f.transfers.Load())
	if s.Requests != 80 || tr.Requests != n || wd.Requests != 80-n || len(s.ByCommand) != 2 {
		t.Fatalf("requests %d, transfer %d (server saw %d), withdraw %d", s.Requests, tr.Requests, n, wd.Requests)
	}
	q := func(r int) int { return (n + 3 - r) / 4 } // transfers i < n with i%4 == r
	if tr.Statuses[200] != q(0) || tr.Statuses[409] != q(1) || tr.Statuses[503] != q(2) || tr.TransportErrors != q(3) {
		t.Fatalf("transfer counts %+v for %d", tr, n)
	}
	if tr.Codes["concurrency"] != q(1) || tr.Codes[NoCode] != q(2) || len(tr.Codes) != 2 {
		t.Fatalf("transfer codes %v", tr.Codes)
	}
	if kinds := sumOf(tr.TransportKinds); kinds != q(3) {
		t.Fatalf("transport kinds %v", tr.TransportKinds)
	}
	if wd.Statuses[422] != wd.Requests || wd.Codes["insufficient_funds"] != wd.Requests {
		t.Fatalf("withdraw counts %+v", wd)
	}
	// The totals are the sums, and add up.
	if s.Statuses[200] != q(0) || s.Statuses[422] != wd.Requests || s.TransportErrors != q(3) ||
		sumOf(s.Statuses)+s.TransportErrors != s.Requests || s.Codes["concurrency"] != q(1) {
		t.Fatalf("totals %+v", s.Counts)
	}
	if s.Answered() != 80-q(3) || s.Interrupted || s.Abandoned != 0 {
		t.Fatalf("answered %d interrupted %v abandoned %d", s.Answered(), s.Interrupted, s.Abandoned)
	}
	if s.Latency.Min <= 0 || s.Latency.P50 > s.Latency.P95 || s.Latency.P95 > s.Latency.P99 || s.Latency.P99 > s.Latency.Max {
		t.Fatalf("latency %+v", s.Latency)
	}
	// Setup: 5 opens and 5 deposits at positions 101..110, then the load.
	if want := uint64(110 + q(0)); s.Position != want {
		t.Fatalf("position %d; want %d", s.Position, want)
	}
	if s.PerSecond() <= 0 || s.OKPerSecond() >= s.PerSecond() {
		t.Fatalf("rates %v %v", s.PerSecond(), s.OKPerSecond())
	}
}

func withCount(c Config, n int) Config {
	c.Count = n
	return c
}

func sumOf[K comparable](m map[K]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestBodies: the commands name accounts of the prefix, never the same
// one twice in a transfer, with amounts from 1 to Amount; open-account
// opens new accounts; idempotency keys are unique.
func TestBodies(t *testing.T) {
	f := &fake{}
	cfg := fakeConfig(f.start(t))
	cfg.Accounts, cfg.Amount, cfg.Fund, cfg.IdempotencyKeys = 3, 2, 7, true
	cfg.Mix = Mix{OpenAccount: 1, Deposit: 1, Withdraw: 1, Transfer: 1}
	s, err := Run(context.Background(), withCount(cfg, 400))
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	type body struct {
		Account, Owner, From, To string
		Amount                   int64
	}
	ids := map[string]bool{"t-0": true, "t-1": true, "t-2": true}
	opened := map[string]bool{}
	for name, bodies := range f.bodies {
		for i, raw := range bodies {
			var b body
			if err := json.Unmarshal([]byte(raw), &b); err != nil {
				t.Fatalf("%s body %s: %v", name, raw, err)
			}
			switch name {
			case "open-account":
				if i < 3 { // the setup's, in some order
					if !ids[b.Account] {
						t.Fatalf("setup opened %s", raw)
					}
					continue
				}
				if !strings.HasPrefix(b.Account, "t-o") || opened[b.Account] || b.Owner != "loadtest" {
					t.Fatalf("open-account %s", raw)
				}
				opened[b.Account] = true
			case "deposit", "withdraw":
				if name == "deposit" && i < 3 {
					if b.Amount != 7 || !ids[b.Account] {
						t.Fatalf("setup deposit %s", raw)
					}
					continue
				}
				if !ids[b.Account] || b.Amount < 1 || b.Amount > 2 {
					t.Fatalf("%s %s", name, raw)
				}
			case "transfer":
				if !ids[b.From] || !ids[b.To] || b.From == b.To || b.Amount < 1 || b.Amount > 2 {
					t.Fatalf("transfer %s", raw)
				}
			}
		}
	}
	if len(opened) != s.ByCommand["open-account"].Requests || len(opened) == 0 {
		t.Fatalf("opened %d, summary %+v", len(opened), s.ByCommand["open-account"])
	}
	if len(f.keys) != 400 {
		t.Fatalf("%d idempotency keys for 400 commands", len(f.keys))
	}
	for k := range f.keys {
		if !strings.HasPrefix(k, "t-") {
			t.Fatalf("key %q", k)
		}
	}
	// Every command of the mix ran, about as often as its share says.
	for name, c := range s.ByCommand {
		if c.Requests < 50 || c.Requests > 150 {
			t.Errorf("%s ran %d times of 400 at a share of 1/4", name, c.Requests)
		}
	}
}

// TestSeed: the same seed draws the same commands.
func TestSeed(t *testing.T) {
	draws := func(seed uint64) []string {
		f := &fake{}
		cfg := fakeConfig(f.start(t))
		cfg.Clients, cfg.Seed, cfg.Mix = 1, seed, Mix{Deposit: 1, Transfer: 1}
		if _, err := Run(context.Background(), withCount(cfg, 30)); err != nil {
			t.Fatal(err)
		}
		return append(f.bodies["deposit"][cfg.Accounts:], f.bodies["transfer"]...)
	}
	a, b, c := draws(7), draws(7), draws(8)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatal("seed 7 drew different commands twice")
	}
	if strings.Join(a, "\n") == strings.Join(c, "\n") {
		t.Fatal("seeds 7 and 8 drew the same commands")
	}
}

// TestInterrupt: when ctx ends during the load, the requests in flight are
// abandoned and the summary covers those answered before.
func TestInterrupt(t *testing.T) {
	blocked := make(chan struct{}, 10)
	f := &fake{}
	f.transfer = func(i int64, w http.ResponseWriter, r *http.Request) {
		if i < 5 {
			f.ok(w)
			return
		}
		blocked <- struct{}{}
		<-r.Context().Done()
	}
	cfg := fakeConfig(f.start(t))
	cfg.Clients = 2
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-blocked
		<-blocked
		cancel()
	}()
	start := time.Now()
	s, err := Run(ctx, withCount(cfg, 1000))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("returned after %v", time.Since(start))
	}
	if !s.Interrupted || s.Requests != 5 || s.Statuses[200] != 5 || s.Abandoned != 2 || s.TransportErrors != 0 {
		t.Fatalf("interrupted %v, requests %d, statuses %v, abandoned %d, transport %d",
			s.Interrupted, s.Requests, s.Statuses, s.Abandoned, s.TransportErrors)
	}
}

// TestDuration: with a duration the clients start commands until it is
// over, and the summary's time covers it.
func TestDuration(t *testing.T) {
	f := &fake{}
	cfg := fakeConfig(f.start(t))
	cfg.Count, cfg.Duration = 0, time.Second
	s, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Elapsed < time.Second || s.Elapsed > 5*time.Second || s.Requests < 2 || s.Interrupted {
		t.Fatalf("elapsed %v, requests %d, interrupted %v", s.Elapsed, s.Requests, s.Interrupted)
	}
	if s.Statuses[200] != s.Requests || int(f.transfers.Load()) != s.Requests {
		t.Fatalf("statuses %v, server saw %d", s.Statuses, f.transfers.Load())
	}
}

// TestSetupFails: any setup answer but 200 stops the run before the load;
// an existing account asks for another prefix.
func TestSetupFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(name string, w http.ResponseWriter)
		err   string
	}{
		{"exists", func(name string, w http.ResponseWriter) { fail(w, 422, "account_exists") }, "choose another -prefix"},
		{"deposit fails", func(name string, w http.ResponseWriter) {
			if name == "deposit" {
				fail(w, 500, "internal")
				return
			}
			w.WriteHeader(http.StatusOK)
		}, `setup: fund account t-`},
	} {
		f := &fake{setup: tc.setup}
		_, err := Run(context.Background(), withCount(fakeConfig(f.start(t)), 10))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.err)
		}
		if n := f.transfers.Load(); n != 0 {
			t.Errorf("%s: %d transfers after a failed setup", tc.name, n)
		}
	}
	// Nothing listens: the setup fails with the transport's error.
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	_, err := Run(context.Background(), withCount(fakeConfig(srv.URL), 10))
	if err == nil || !strings.Contains(err.Error(), "setup: open account t-") || TransportKind(err) != "refused" {
		t.Errorf("no server: %v (%s)", err, TransportKind(err))
	}
	// An invalid config fails before any request.
	c := fakeConfig(srv.URL)
	c.Clients = 0
	if _, err := Run(context.Background(), c); err == nil || !strings.HasPrefix(err.Error(), "-clients:") {
		t.Errorf("no clients: %v", err)
	}
}

// TestTimeout: a request that outlasts Timeout is a transport error of
// kind timeout.
func TestTimeout(t *testing.T) {
	f := &fake{}
	f.transfer = func(i int64, w http.ResponseWriter, r *http.Request) {
		if i == 0 {
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
			return
		}
		f.ok(w)
	}
	cfg := fakeConfig(f.start(t))
	// Long enough that no answered request outlasts it on a loaded
	// machine; the unanswered one waits for it.
	cfg.Timeout = 2 * time.Second
	s, err := Run(context.Background(), withCount(cfg, 10))
	if err != nil {
		t.Fatal(err)
	}
	if s.TransportErrors != 1 || s.TransportKinds["timeout"] != 1 || s.Statuses[200] != 9 {
		t.Fatalf("%+v", s.Counts)
	}
}
