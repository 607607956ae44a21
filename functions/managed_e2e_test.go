package functions_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/replica"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// The tests here run the execute function in the emulator's
// managed-instances mode (startManaged): one execution environment, one
// writer, many invocations at once, as Lambda Managed Instances runs it.

// s3Delay is added to every request of the test S3, about a round trip to
// a bucket in the same region.
const s3Delay = 20 * time.Millisecond

// concurrentClient carries many invocations at once: the default
// transport keeps only two idle connections per host, so every other
// request would open a new one.
var concurrentClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
}

// answer is the outcome of one command sent through the emulator.
type answer struct {
	sent        bool   // the job ran (false: the load ended first)
	correlation string // the request's X-Correlation-Id
	status      int    // the function's HTTP status; 0 when err is set
	body        string
	resends     int // Runtime.Unavailable answers before an invocation ran
	latency     time.Duration
	err         error // no answer from the function
}

// response decodes a 200 answer.
func (a answer) response() (handler.CommandResponse, error) {
	var res handler.CommandResponse
	err := json.Unmarshal([]byte(a.body), &res)
	if err == nil && len(res.Events) == 0 {
		err = errors.New("no events")
	}
	return res, err
}

// errorCode is the code of an error answer.
func (a answer) errorCode() string {
	var e errorBody
	_ = json.Unmarshal([]byte(a.body), &e)
	return e.Error.Code
}

// send invokes f with the HTTP API event of r and returns the function's
// answer. While every runtime worker is busy the emulator answers 400 with
// Error-Type Runtime.Unavailable (Lambda would throttle): the invocation
// did not run, and send resends it after a short jittered backoff, as a
// client of a throttled function does. Safe for concurrent use.
func (f *function) send(ctx context.Context, r request) (a answer) {
	a = answer{sent: true, correlation: r.headers["X-Correlation-Id"]}
	payload, err := json.Marshal(r.event())
	if err != nil {
		a.err = err
		return a
	}
	start := time.Now()
	defer func() { a.latency = time.Since(start) }()
	backoff := time.Millisecond
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(payload))
		if err != nil {
			a.err = err
			return a
		}
		resp, err := concurrentClient.Do(req)
		if err != nil {
			a.err = err
			return a
		}
		out, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			a.err = err
			return a
		}
		if resp.Header.Get("Error-Type") == "Runtime.Unavailable" {
			a.resends++
			wait := backoff/2 + rand.N(backoff)
			backoff = min(2*backoff, 20*time.Millisecond)
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				a.err = fmt.Errorf("still Runtime.Unavailable after %d resends: %w", a.resends, ctx.Err())
				return a
			}
		}
		var fr events.APIGatewayV2HTTPResponse
		if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &fr) != nil || fr.StatusCode == 0 {
			a.err = fmt.Errorf("the emulator answered %d %s: %s", resp.StatusCode, resp.Header.Get("Error-Type"), out)
			return a
		}
		a.status, a.body = fr.StatusCode, fr.Body
		return a
	}
}

// load runs jobs 0..n-1 from clients goroutines at once, each taking the
// next job when its last one is answered, and returns the answers by job.
// It hands out no job after ctx ends.
func load(ctx context.Context, clients, n int, job func(ctx context.Context, i int) answer) []answer {
	answers := make([]answer, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				answers[i] = job(ctx, i)
			}
		})
	}
	wg.Wait()
	return answers
}

// transfer is one planned transfer.
type transfer struct {
	from, to string
	amount   int64
}

// bank is a set of funded accounts and transfers between them.
type bank struct {
	prefix    string // of the correlation ids
	accounts  []string
	funds     int64 // each account's deposit
	transfers []transfer
}

// newBank plans n transfers of 1 to 100 between random pairs of
// accounts; each account is funded so that no transfer can fail for want
// of money.
func newBank(prefix string, accounts, n int) *bank {
	b := &bank{prefix: prefix, funds: 1_000_000_000}
	for i := range accounts {
		b.accounts = append(b.accounts, fmt.Sprintf("acct-%03d", i))
	}
	rng := rand.New(rand.NewPCG(uint64(accounts), uint64(n)))
	for range n {
		from := rng.IntN(accounts)
		to := rng.IntN(accounts - 1)
		if to >= from {
			to++
		}
		b.transfers = append(b.transfers, transfer{b.accounts[from], b.accounts[to], 1 + rng.Int64N(100)})
	}
	return b
}

// request is the HTTP API request of transfer i, with a correlation id
// of its own, by which the log's events are traced back to it.
func (b *bank) request(i int) request {
	tr := b.transfers[i%len(b.transfers)]
	return post("transfer", fmt.Sprintf(`{"from":%q,"to":%q,"amount":%d}`, tr.from, tr.to, tr.amount),
		"X-Correlation-Id", fmt.Sprintf("%s-%d", b.prefix, i))
}

// open opens and funds the accounts, clients at a time; every command
// must answer 200.
func (b *bank) open(t testing.TB, f *function, clients int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	answers := load(ctx, clients, len(b.accounts), func(ctx context.Context, i int) answer {
		id := b.accounts[i]
		a := f.send(ctx, post("open-account", fmt.Sprintf(`{"account":%q,"owner":"Owner of %s"}`, id, id)))
		if a.err != nil || a.status != http.StatusOK {
			return a
		}
		return f.send(ctx, post("deposit", fmt.Sprintf(`{"account":%q,"amount":%d}`, id, b.funds)))
	})
	for i, a := range answers {
		if a.err != nil || a.status != http.StatusOK {
			t.Fatalf("%s: opening and funding %s answered %d %s (%v)", f.name, b.accounts[i], a.status, a.body, a.err)
		}
	}
}

// run sends transfers 0..n-1 from clients goroutines at once.
func (b *bank) run(f *function, clients, n int) []answer {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return load(ctx, clients, n, func(ctx context.Context, i int) answer { return f.send(ctx, b.request(i)) })
}

// tally counts answers by outcome: "200", "409 concurrency", ..., or
// "error" for no answer.
func tally(answers []answer) map[string]int {
	out := map[string]int{}
	for _, a := range answers {
		switch {
		case !a.sent:
		case a.err != nil:
			out["error"]++
		case a.status == http.StatusOK:
			out["200"]++
		default:
			out[fmt.Sprintf("%d %s", a.status, a.errorCode())]++
		}
	}
	return out
}

// requireTransferAnswers checks that the function answered every
// transfer, only 200 or 409 concurrency (the executor's retries ran out),
// at least 90% of them 200.
func requireTransferAnswers(t *testing.T, answers []answer) {
	t.Helper()
	counts := tally(answers)
	resends, attempts := 0, map[int]int{}
	for _, a := range answers {
		resends += a.resends
		if res, err := a.response(); a.status == http.StatusOK && err == nil {
			attempts[res.Attempts]++
		}
	}
	t.Logf("%d transfers: %v; attempts of the 200s: %v; %d Runtime.Unavailable resends", len(answers), counts, attempts, resends)
	for i, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("transfer %d: %v", i, a.err)
		case a.status >= 500:
			t.Errorf("transfer %d answered %d: %s", i, a.status, a.body)
		case a.status != http.StatusOK && (a.status != http.StatusConflict || a.errorCode() != "concurrency"):
			t.Errorf("transfer %d answered %d, want 200 or 409 concurrency: %s", i, a.status, a.body)
		}
	}
	if ok := counts["200"]; ok*10 < len(answers)*9 {
		t.Errorf("%d of %d transfers answered 200, want at least 90%%", ok, len(answers))
	}
}

// errorKind shortens a failed invocation's error for a count: what
// follows the last colon of its first line.
func errorKind(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		return msg[i+2:]
	}
	return msg
}

// runtimeShutdown finds in the emulator's debug log how the runtime
// ended after the emulator's SIGTERM: how long it took and the event the
// emulator logged ("Cause:exited ... ExitStatus:0" for a clean exit),
// empty when it logged none.
func runtimeShutdown(out string) (took time.Duration, ended string) {
	var signaled, exited time.Time
	for _, line := range strings.Split(out, "\n") {
		stamp, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "time=")), " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		switch {
		case err != nil:
		case strings.Contains(line, `msg="SignalHandler received:"`):
			signaled = at
		case strings.Contains(line, "EvType:process_termination Name:runtime "):
			exited = at
			_, ended, _ = strings.Cut(line, "Name:runtime ")
			ended, _, _ = strings.Cut(ended, " Size:")
		}
	}
	if signaled.IsZero() || exited.IsZero() {
		return 0, ""
	}
	return exited.Sub(signaled), ended
}

// logEvent is one row of an event log's events table.
type logEvent struct {
	position, version uint64
	stream, typ       string
	data              json.RawMessage
	correlation       string
}

// readLog reads every event of the SQLite event log at path, read-only,
// and checks that positions run from 1 without a gap and each stream's
// versions from 1 without a gap. (eventlog/sqlite registers the driver.)
func readLog(t testing.TB, path string) []logEvent {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	rows, err := db.Query(`SELECT position, stream_id, version, type, data, metadata FROM events ORDER BY position`)
	if err != nil {
		t.Fatalf("read the log %s: %v", path, err)
	}
	defer func() { _ = rows.Close() }()
	var out []logEvent
	versions := map[string]uint64{}
	for rows.Next() {
		var e logEvent
		var data, metadata string
		if err := rows.Scan(&e.position, &e.stream, &e.version, &e.typ, &data, &metadata); err != nil {
			t.Fatal(err)
		}
		var md struct {
			Correlation string `json:"correlation_id"`
		}
		if err := json.Unmarshal([]byte(metadata), &md); err != nil {
			t.Fatalf("%s: metadata of position %d: %v", path, e.position, err)
		}
		e.data, e.correlation = json.RawMessage(data), md.Correlation
		if e.position != uint64(len(out))+1 {
			t.Fatalf("%s: position %d follows %d", path, e.position, len(out))
		}
		if e.version != versions[e.stream]+1 {
			t.Fatalf("%s: position %d is version %d of %s, which was at %d", path, e.position, e.version, e.stream, versions[e.stream])
		}
		versions[e.stream] = e.version
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// restoreLog restores the replica at replicaURL into a new file, as a new
// instance would, and reads it.
func restoreLog(t testing.TB, replicaURL string) []logEvent {
	t.Helper()
	path := filepath.Join(t.TempDir(), "restored.db")
	f, err := replica.OpenFollower(context.Background(), replica.Options{URL: replicaURL, Path: path}, sqlite.Options{})
	if err != nil {
		t.Fatalf("restore the replica: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return readLog(t, path)
}

// requireAcknowledged checks that every command answered 200 is in log
// exactly once: each event where the answer put it (position, stream,
// version, type), under the command's correlation id, and no other event
// with that id. It returns the number of 200s.
func requireAcknowledged(t *testing.T, where string, log []logEvent, answers []answer) int {
	t.Helper()
	byCorrelation := map[string][]uint64{}
	for _, e := range log {
		byCorrelation[e.correlation] = append(byCorrelation[e.correlation], e.position)
	}
	n := 0
	for i, a := range answers {
		if a.err != nil || a.status != http.StatusOK {
			continue
		}
		n++
		res, err := a.response()
		if err != nil {
			t.Errorf("%s: command %d answered 200 %s: %v", where, i, a.body, err)
			continue
		}
		var answered []uint64
		for _, ev := range res.Events {
			answered = append(answered, uint64(ev.Position))
			if ev.Position < 1 || int(ev.Position) > len(log) {
				t.Errorf("%s: command %d (%s) answered position %d; the log ends at %d", where, i, a.correlation, ev.Position, len(log))
				continue
			}
			got := log[ev.Position-1]
			if got.stream != ev.Stream || got.version != uint64(ev.Version) || got.typ != ev.Type || got.correlation != a.correlation {
				t.Errorf("%s: command %d (%s) answered %+v; at that position the log holds %s v%d %s of %q",
					where, i, a.correlation, ev, got.stream, got.version, got.typ, got.correlation)
			}
		}
		if logged := byCorrelation[a.correlation]; !slices.Equal(logged, answered) {
			t.Errorf("%s: command %d (%s) answered positions %v; the log holds its events at %v", where, i, a.correlation, answered, logged)
		}
	}
	return n
}

// balances folds the log into the balance of every account.
func balances(t *testing.T, log []logEvent) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, e := range log {
		var d struct {
			Account string `json:"account"`
			Amount  int64  `json:"amount"`
		}
		if err := json.Unmarshal(e.data, &d); err != nil {
			t.Fatalf("data of position %d: %v", e.position, err)
		}
		switch e.typ {
		case "AccountOpened":
			out[d.Account] += 0
		case "MoneyDeposited", "TransferCredited", "FeeCollected":
			out[d.Account] += d.Amount
		case "MoneyWithdrawn", "TransferDebited", "FeeCharged":
			out[d.Account] -= d.Amount
		default:
			t.Fatalf("position %d: unknown event type %s", e.position, e.typ)
		}
	}
	return out
}

// requireConserved checks that the log's balances add up to the money
// deposited, none below zero; with exact, also that each balance is what
// the transfers answered 200 make it (the log holds no other transfer).
func (b *bank) requireConserved(t *testing.T, where string, log []logEvent, answers []answer, exact bool) {
	t.Helper()
	got := balances(t, log)
	want := map[string]int64{}
	for _, id := range b.accounts {
		want[id] = b.funds
	}
	for i, a := range answers {
		if a.err == nil && a.status == http.StatusOK {
			tr := b.transfers[i%len(b.transfers)]
			want[tr.from] -= tr.amount
			want[tr.to] += tr.amount
		}
	}
	var sum int64
	for id, bal := range got {
		sum += bal
		if bal < 0 {
			t.Errorf("%s: %s has a balance of %d", where, id, bal)
		}
	}
	if total := b.funds * int64(len(b.accounts)); sum != total || len(got) != len(b.accounts) {
		t.Errorf("%s: %d accounts hold %d in all, want %d accounts holding %d", where, len(got), sum, len(b.accounts), total)
	}
	if exact {
		for _, id := range b.accounts {
			if got[id] != want[id] {
				t.Errorf("%s: %s holds %d; the transfers answered 200 leave it %d", where, id, got[id], want[id])
			}
		}
	}
}

// fileEnv is the environment of an execute function over a local event
// log in dir (EVENTCORE_SYNC=full), without a replica.
func fileEnv(dir string) map[string]string {
	return map[string]string{
		"EVENTCORE_ALLOW_EPHEMERAL": "true",
		"EVENTCORE_SYNC":            "full",
		"EVENTCORE_DB":              filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB":         filepath.Join(dir, "projections.db"),
	}
}

// litestreamEnv is the environment of an execute function over a log in
// dir replicated to replicaURL.
func litestreamEnv(dir, replicaURL string) map[string]string {
	env := map[string]string{
		"EVENTCORE_DB":          filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB":     filepath.Join(dir, "projections.db"),
		"EVENTCORE_REPLICA_URL": replicaURL,
	}
	for k, v := range replicatest.EnvVars() {
		env[k] = v
	}
	return env
}

// Transfers of one test: 64 at once, four rounds of them.
const (
	managedConcurrency = 64
	managedAccounts    = 10
	managedTransfers   = 4 * managedConcurrency
)

// TestManagedTransfers runs 256 transfers over 10 accounts, 64 at once,
// through one execute environment running 64 invocations at once over a
// local log (EVENTCORE_SYNC=full). Every transfer is answered 200 or 409
// concurrency (never a 5xx), at least 90% of them 200; after the
// environment stops, the log holds every 200 exactly once at its answered
// positions, and no other transfer: the balances are what the 200s make
// them, and money is conserved.
func TestManagedTransfers(t *testing.T) {
	requireManaged(t)
	dir := sharedDir(t)
	runManagedTransfers(t, "execute (managed, file)", fileEnv(dir))
}

// runManagedTransfers runs managedTransfers transfers over managedAccounts
// accounts, managedConcurrency at once, through one execute environment
// with env, checks the answers, stops it and checks its log; it returns
// the bank, the answers and the log.
func runManagedTransfers(t *testing.T, label string, env map[string]string) (*bank, []answer, []logEvent) {
	t.Helper()
	f := startManaged(t, "execute", label, managedConcurrency, env)
	b := newBank("transfer", managedAccounts, managedTransfers)
	b.open(t, f, managedAccounts)
	start := time.Now()
	answers := b.run(f, managedConcurrency, managedTransfers)
	t.Logf("%d transfers in %v", managedTransfers, time.Since(start))
	requireTransferAnswers(t, answers)
	if !f.stop() {
		t.Fatal("the emulator did not stop on SIGTERM within 5 s")
	}
	log := readLog(t, env["EVENTCORE_DB"])
	requireAcknowledged(t, "log", log, answers)
	b.requireConserved(t, "log", log, answers, true)
	return b, answers, log
}

// TestManagedLitestream is TestManagedTransfers in Litestream mode over
// the test S3 with 20 ms added to every request: besides the local log,
// the replica, restored into a new file, holds every 200 at its answered
// positions.
func TestManagedLitestream(t *testing.T) {
	requireManaged(t)
	s3 := replicatest.StartS3(t)
	s3.SetDelay(s3Delay)
	dir := sharedDir(t)
	env := litestreamEnv(dir, s3.URL("managed/events"))
	b, answers, log := runManagedTransfers(t, "execute (managed, litestream)", env)
	restored := restoreLog(t, env["EVENTCORE_REPLICA_URL"])
	requireAcknowledged(t, "replica", restored, answers)
	b.requireConserved(t, "replica", restored, answers, true)
	if len(restored) != len(log) {
		t.Errorf("after a clean shutdown the replica ends at position %d, the log at %d", len(restored), len(log))
	}
}

// TestManagedShutdown sends SIGTERM to an execute environment in
// Litestream mode while 64 transfers are in flight. The emulator gives
// the runtime 600 ms before SIGKILL (Lambda about 500 ms): the runtime
// exits by itself with status 0 (the emulator's debug log says how it
// ended) and the emulator within 2 s. Every transfer answered 200 is in
// the local log and in the replica, and money is conserved in both. The
// writer lease is released: a new environment on the same replica, with
// an empty disk, accepts a command at once (not 503 writer_unavailable
// until the lease expires) and records it after the replica's last event.
func TestManagedShutdown(t *testing.T) {
	requireManaged(t)
	s3 := replicatest.StartS3(t)
	s3.SetDelay(s3Delay)
	replicaURL := s3.URL("shutdown/events")
	dir := sharedDir(t)
	env := litestreamEnv(dir, replicaURL)
	env["LOG_LEVEL"] = "debug" // the emulator logs how the runtime ended
	f := startManaged(t, "execute", "execute A (managed, litestream)", managedConcurrency, env)
	b := newBank("shutdown", managedAccounts, 1000)
	b.open(t, f, managedAccounts)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acknowledged, inFlight atomic.Int64
	done := make(chan []answer)
	go func() {
		done <- load(ctx, managedConcurrency, 100_000, func(ctx context.Context, i int) answer {
			inFlight.Add(1)
			a := f.send(ctx, b.request(i))
			inFlight.Add(-1)
			if a.err != nil {
				time.Sleep(10 * time.Millisecond) // the emulator is gone: no busy loop
			} else if a.status == http.StatusOK {
				acknowledged.Add(1)
			}
			return a
		})
	}()
	deadline := time.Now().Add(time.Minute)
	for acknowledged.Load() < 2*managedConcurrency && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if acknowledged.Load() == 0 {
		cancel()
		<-done
		t.Fatal("no transfer was acknowledged within a minute")
	}
	// Connections the client opened and never used would hold the
	// emulator's HTTP server for a second at its exit.
	concurrentClient.CloseIdleConnections()
	busy := inFlight.Load()
	term := time.Now()
	exited := f.stop()
	took := time.Since(term)
	cancel()
	answers := <-done
	t.Logf("SIGTERM after %d acknowledged transfers, %d in flight; the emulator exited after %v; answers: %v", acknowledged.Load(), busy, took, tally(answers))
	if busy == 0 {
		t.Error("no invocation was in flight at SIGTERM")
	}
	if !exited || took > 2*time.Second {
		t.Errorf("the emulator exited %v after SIGTERM (by itself: %v), want within 2 s", took, exited)
	}
	// The emulator gives the runtime 600 ms after its SIGTERM, then kills
	// it; a runtime that exits non-zero did not finish its shutdown.
	switch took, ended := runtimeShutdown(f.out.String()); {
	case ended == "":
		t.Error("the emulator's log does not say how the runtime ended after SIGTERM")
	case !strings.HasPrefix(ended, "Cause:exited ") || !strings.HasSuffix(ended, " ExitStatus:0"):
		t.Errorf("the runtime ended %v after the emulator's SIGTERM with %s, want Cause:exited ... ExitStatus:0", took, ended)
	default:
		t.Logf("the runtime exited %v after the emulator's SIGTERM (%s)", took, ended)
	}
	// Besides 200 and 409, an invocation in flight may fail (the emulator
	// aborts it) or be answered 503 (not made durable: not acknowledged);
	// invocations after the exit find no emulator.
	failures := map[string]int{}
	for i, a := range answers {
		switch {
		case !a.sent || a.err == nil && a.status == http.StatusOK:
		case a.err != nil:
			failures[errorKind(a.err)]++
		case a.status >= 500:
			failures[fmt.Sprintf("%d %s", a.status, a.errorCode())]++
		case a.status != http.StatusConflict || a.errorCode() != "concurrency":
			t.Errorf("transfer %d answered %d: %s", i, a.status, a.body)
		}
	}
	t.Logf("not acknowledged: %v", failures)

	log := readLog(t, env["EVENTCORE_DB"])
	n := requireAcknowledged(t, "log", log, answers)
	b.requireConserved(t, "log", log, answers, false)
	restored := restoreLog(t, replicaURL)
	requireAcknowledged(t, "replica", restored, answers)
	b.requireConserved(t, "replica", restored, answers, false)
	t.Logf("%d transfers acknowledged; the log ends at position %d, the replica at %d", n, len(log), len(restored))

	// The successor: a new environment with an empty disk.
	next := startFunction(t, "execute", "execute B", litestreamEnv(sharedDir(t), replicaURL))
	started := time.Now()
	a := next.send(context.Background(), post("deposit", fmt.Sprintf(`{"account":%q,"amount":1}`, b.accounts[0])))
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("the successor's first command (%v after the predecessor's exit) answered %d %s (%v); the predecessor's lease was not released",
			time.Since(started), a.status, a.body, a.err)
	}
	res, err := a.response()
	if err != nil || uint64(res.Events[0].Position) != uint64(len(restored))+1 {
		t.Fatalf("the successor's first command answered %s (%v), want position %d after the replica's last", a.body, err, len(restored)+1)
	}
}
