package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
)

// The linearizability check of the HTTP API: concurrent clients send
// deposits, transfers and balance reads with ?min_position (the highest
// position acknowledged to any client when the read is sent) to one
// runner; every operation is recorded with its invocation and response
// times, and porcupine checks that one order of the operations, each
// placed between its invocation and its response, explains every answer
// under a model of the bank. Answers whose outcome is unknown (a 5xx, a
// timeout) may or may not have been applied.

const (
	linAccounts = 3
	linFund     = 100
)

type linKind int

const (
	linDeposit linKind = iota
	linTransfer
	linRead
)

// linInput is one operation sent.
type linInput struct {
	kind     linKind
	from, to int // account indexes; a deposit and a read use from
	amount   int64
}

// linOutput is what it answered.
type linOutput struct {
	applied bool   // 200 to a command
	refused string // a business-rule code: nothing was applied
	unknown bool   // 5xx, timeout or transport error: maybe applied
	balance int64  // a read's balance
	status  int    // the HTTP status, for a failing history's report
}

type linState [linAccounts]int64

// linModel is the bank, as far as these operations see it.
var linModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{linState{linFund, linFund, linFund}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(linState), input.(linInput), output.(linOutput)
		next := s
		switch in.kind {
		case linRead:
			if s[in.from] == out.balance {
				return []any{s}
			}
			return nil
		case linDeposit:
			next[in.from] += in.amount
		case linTransfer:
			if s[in.from] < in.amount {
				// Refused for insufficient funds, or (unknown) not applied.
				if out.refused == "insufficient_funds" || out.unknown {
					return []any{s}
				}
				return nil
			}
			next[in.from] -= in.amount
			next[in.to] += in.amount
		}
		switch {
		case out.applied:
			return []any{next}
		case out.unknown:
			return []any{s, next}
		}
		return nil // refused although it could have been applied
	},
	Equal: func(a, b any) bool { return a.(linState) == b.(linState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		var op string
		switch in.kind {
		case linDeposit:
			op = fmt.Sprintf("deposit(%d, %d)", in.from, in.amount)
		case linTransfer:
			op = fmt.Sprintf("transfer(%d→%d, %d)", in.from, in.to, in.amount)
		default:
			return fmt.Sprintf("read(%d) = %d", in.from, out.balance)
		}
		switch {
		case out.applied:
			return op + " ok"
		case out.unknown:
			return op + " ?"
		}
		return op + " " + out.refused
	},
}

// linHistory drives clients against url and records what they saw.
type linHistory struct {
	url    string
	prefix string
	client *http.Client

	mu    sync.Mutex
	ops   []porcupine.Operation
	acked atomic.Uint64 // the highest position answered to any client
	reads []plainRead
}

// plainRead is a read without min_position: it may be stale, but never
// older than a read that ended before it began.
type plainRead struct {
	call, ret time.Time
	asOf      uint64
}

func (h *linHistory) account(i int) string { return fmt.Sprintf("%s-%d", h.prefix, i) }

// setup opens and funds the accounts before any operation is recorded.
func (h *linHistory) setup(t *testing.T) {
	t.Helper()
	for i := range linAccounts {
		for _, cmd := range []string{
			fmt.Sprintf(`{"account":%q,"owner":"lin"}`, h.account(i)),
			fmt.Sprintf(`{"account":%q,"amount":%d}`, h.account(i), linFund),
		} {
			name := "open-account"
			if strings.Contains(cmd, "amount") {
				name = "deposit"
			}
			status, body, err := h.post(context.Background(), name, cmd)
			if err != nil || status != http.StatusOK {
				t.Fatalf("setup %s: %d %s %v", name, status, body, err)
			}
			h.noteAcked(body)
		}
	}
}

func (h *linHistory) post(ctx context.Context, name, body string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/commands/"+name, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return h.send(req)
}

func (h *linHistory) send(req *http.Request) (int, []byte, error) {
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// noteAcked raises the acknowledged position to the command's last event.
func (h *linHistory) noteAcked(body []byte) {
	var a struct {
		Events []struct {
			Position uint64 `json:"position"`
		} `json:"events"`
	}
	if json.Unmarshal(body, &a) != nil {
		return
	}
	for _, e := range a.Events {
		for {
			cur := h.acked.Load()
			if e.Position <= cur || h.acked.CompareAndSwap(cur, e.Position) {
				break
			}
		}
	}
}

// command sends a deposit or a transfer and records it.
func (h *linHistory) command(client int, in linInput) {
	var name, body string
	if in.kind == linDeposit {
		name, body = "deposit", fmt.Sprintf(`{"account":%q,"amount":%d}`, h.account(in.from), in.amount)
	} else {
		name, body = "transfer", fmt.Sprintf(`{"from":%q,"to":%q,"amount":%d}`, h.account(in.from), h.account(in.to), in.amount)
	}
	call := time.Now()
	status, resp, err := h.post(context.Background(), name, body)
	out := linOutput{status: status}
	switch {
	case err == nil && status == http.StatusOK:
		out.applied = true
		h.noteAcked(resp)
	case err == nil && status >= 400 && status < 500:
		out.refused = errorCode(resp)
	default:
		out.unknown = true
	}
	// The return is taken after noteAcked: a read sent after this
	// operation returned must ask for its position. Taking it before
	// would leave a gap in which a read that must follow this command
	// asks for less and may rightly not see it.
	h.record(client, in, out, call, time.Now())
}

// read reads a balance at the acknowledged position and records it.
func (h *linHistory) read(t *testing.T, client int, in linInput) {
	call := time.Now()
	url := fmt.Sprintf("%s/accounts/%s?min_position=%d", h.url, h.account(in.from), h.acked.Load())
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	status, body, err := h.send(req)
	ret := time.Now()
	var b struct {
		Balance int64 `json:"balance"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &b) != nil {
		t.Errorf("GET %s: %d %s %v", url, status, body, err)
		return
	}
	h.record(client, in, linOutput{balance: b.Balance, status: status}, call, ret)
}

// plain reads a balance without min_position and keeps its as_of.
func (h *linHistory) plain(t *testing.T, account int) {
	call := time.Now()
	req, _ := http.NewRequest(http.MethodGet, h.url+"/accounts/"+h.account(account), nil)
	status, body, err := h.send(req)
	ret := time.Now()
	var b struct {
		AsOf uint64 `json:"as_of"`
	}
	switch {
	case err == nil && status == http.StatusNotFound && errorCode(body) == "account_not_found":
		return // stale: the read model has not seen the account opened yet
	case err != nil || status != http.StatusOK || json.Unmarshal(body, &b) != nil:
		t.Errorf("plain read: %d %s %v", status, body, err)
		return
	}
	h.mu.Lock()
	h.reads = append(h.reads, plainRead{call: call, ret: ret, asOf: b.AsOf})
	h.mu.Unlock()
}

func (h *linHistory) record(client int, in linInput, out linOutput, call, ret time.Time) {
	returned := ret.UnixNano()
	if out.unknown {
		returned = math.MaxInt64 // it may take effect at any time after its call
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call.UnixNano(), Output: out, Return: returned})
	h.mu.Unlock()
}

func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// runLinearizability sends clients × each operations to url and checks
// the history; it returns porcupine's verdict and the history's size.
func runLinearizability(t *testing.T, url, prefix string, clients, each int, seed uint64) (porcupine.CheckResult, porcupine.LinearizationInfo, []porcupine.Operation) {
	t.Helper()
	h := &linHistory{url: url, prefix: prefix, client: &http.Client{Timeout: 30 * time.Second}}
	h.setup(t)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for range each {
				from := rng.IntN(linAccounts)
				in := linInput{from: from, to: (from + 1 + rng.IntN(linAccounts-1)) % linAccounts, amount: 1 + rng.Int64N(60)}
				switch r := rng.IntN(10); {
				case r < 2:
					in.kind = linDeposit
					h.command(c, in)
				case r < 7:
					in.kind = linTransfer
					h.command(c, in)
				case r < 9:
					in.kind = linRead
					h.read(t, c, in)
				default:
					h.plain(t, from)
				}
			}
		})
	}
	wg.Wait()
	checkPlainReads(t, h.reads)
	result, info := porcupine.CheckOperationsVerbose(linModel.ToModel(), h.ops, 60*time.Second)
	return result, info, h.ops
}

// checkPlainReads: a plain read may be stale, but its as_of is never below
// that of a read that returned before it was sent.
func checkPlainReads(t *testing.T, reads []plainRead) {
	t.Helper()
	for _, r := range reads {
		for _, earlier := range reads {
			if earlier.ret.Before(r.call) && r.asOf < earlier.asOf {
				t.Errorf("a plain read ran backwards: as_of %d after a read at %d", r.asOf, earlier.asOf)
			}
		}
	}
}

// TestLinearizableHTTP checks a history of 8 clients × 50 operations
// against the local runner.
func TestLinearizableHTTP(t *testing.T) {
	s := start(t, testEnv(t.TempDir()))
	began := time.Now()
	result, info, ops := runLinearizability(t, s.url, "lin", 8, 50, 1)
	t.Logf("history and check took %v", time.Since(began))
	if result != porcupine.Ok {
		t.Fatalf("%d operations: %s\n%s", len(ops), result, describeLinearization(info, ops))
	}
	t.Logf("%d operations checked: linearizable", len(ops))
}

// TestLinearizableHTTPPostgres: the same check with the event log and the
// read models on PostgreSQL.
func TestLinearizableHTTPPostgres(t *testing.T) {
	s := start(t, pgEnv(t, pgtest.NewDatabase(t)))
	result, info, ops := runLinearizability(t, s.url, "linpg", 8, 50, 1)
	if result != porcupine.Ok {
		t.Fatalf("%d operations: %s\n%s", len(ops), result, describeLinearization(info, ops))
	}
	t.Logf("%d operations checked: linearizable", len(ops))
}

// describeLinearization reports a failing history: the end of the
// longest order porcupine could build, then the operations it could not
// place after it, in the order they were sent.
func describeLinearization(info porcupine.LinearizationInfo, ops []porcupine.Operation) string {
	var longest []int
	for _, partial := range info.PartialLinearizations() {
		for _, seq := range partial {
			if len(seq) > len(longest) {
				longest = seq
			}
		}
	}
	placed := make(map[int]bool, len(longest))
	for _, i := range longest {
		placed[i] = true
	}
	start := slices.MinFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) }).Call
	var b strings.Builder
	fmt.Fprintf(&b, "times in µs from the first call; the longest order found places %d of %d operations; it ends with:\n", len(longest), len(ops))
	for _, i := range longest[max(0, len(longest)-12):] {
		fmt.Fprintf(&b, "  %s\n", describeOp(ops[i], start))
	}
	var rest []porcupine.Operation
	for i, op := range ops {
		if !placed[i] {
			rest = append(rest, op)
		}
	}
	slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	fmt.Fprintf(&b, "and none of these could come next (the first %d of %d, by send time):\n", min(12, len(rest)), len(rest))
	for _, op := range rest[:min(12, len(rest))] {
		fmt.Fprintf(&b, "  %s\n", describeOp(op, start))
	}
	return b.String()
}

func describeOp(op porcupine.Operation, start int64) string {
	out := op.Output.(linOutput)
	ret := "never"
	if op.Return != math.MaxInt64 {
		ret = fmt.Sprint((op.Return - start) / 1e3)
	}
	return fmt.Sprintf("client %d, sent %d, returned %s, status %d: %s",
		op.ClientId, (op.Call-start)/1e3, ret, out.status, linModel.DescribeOperation(op.Input, op.Output))
}

// TestLinearizabilityCheckerCatchesRaces: the same check against a runner
// built with the tag eventcore_nochecks, whose store skips the version
// check and whose admission lets every command in, must report a
// violation: the check can fail.
func TestLinearizabilityCheckerCatchesRaces(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second runner binary")
	}
	bin := buildRunnerWith(t, "eventcore_nochecks")
	dir := t.TempDir()
	p := launch(t, bin, []string{
		"EVENTCORE_DB=" + filepath.Join(dir, "events.db"),
		"EVENTCORE_READ_DB=" + filepath.Join(dir, "projections.db"),
		"EVENTCORE_SYNC=normal",
	})
	for seed := range uint64(10) {
		result, _, ops := runLinearizability(t, p.url, fmt.Sprintf("race%d", seed), 16, 30, seed)
		t.Logf("seed %d: %d operations: %s", seed, len(ops), result)
		if result == porcupine.Illegal {
			return
		}
	}
	t.Fatal("no history was found illegal although commands raced unchecked")
}
