package bank_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/internal/testproc"
)

// TestConcurrentTransfersWithoutCache is the same test with no cache, on
// fewer transfers: every attempt replays both accounts from their first
// event, so the run's cost grows with the square of the transfers.
func TestConcurrentTransfersWithoutCache(t *testing.T) {
	s := newStore(t)
	deposited := setupConcAccounts(t, s)
	seed := uint64(time.Now().UnixNano())
	n := concTransfers / 5
	out := runConcTransfersWith(s, nil, "p", n, concWorkers, seed)
	t.Logf("seed %d: %d transfers without cache: %d acknowledged, %d insufficient_funds, %d errors, %d retries",
		seed, n, len(out.Acks), len(out.Refused), len(out.Errors), out.Retries)
	checkConcLog(t, s, deposited, out, n)
	if out.Retries == 0 {
		t.Error("no conflict was retried: the transfers did not run concurrently")
	}
}

const (
	concAccounts  = 10
	concWorkers   = 32
	concFunding   = 200_000 // deposited into every account before the transfers
	concMaxAmount = 30_000  // transfers are of 1 to concMaxAmount
)

// concFees gives some accounts a fee account; fee accounts are opened
// before the accounts that pay into them.
var concFees = map[string]string{"acc1": "acc0", "acc5": "acc4", "acc8": "acc3"}

func concAccount(i int) string { return "acc" + strconv.Itoa(i) }

func concOptions(retries *atomic.Int64) executor.Options {
	return executor.Options{
		Retry:   executor.ExponentialBackoff{MaxRetries: 200, Initial: time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5},
		OnRetry: func(executor.RetryInfo) { retries.Add(1) },
	}
}

// setupConcAccounts opens and funds the accounts; it returns the money
// deposited.
func setupConcAccounts(t *testing.T, s eventlog.Store) int64 {
	t.Helper()
	for i := range concAccounts {
		id := concAccount(i)
		mustExec(t, s, bank.OpenAccount{Account: id, Owner: "Owner of " + id, FeeAccount: concFees[id]})
		mustExec(t, s, deposit(id, concFunding))
	}
	return concAccounts * concFunding
}

// concAck is an acknowledged transfer: its id and the positions Execute
// returned for its events.
type concAck struct {
	ID        string              `json:"id"`
	From      string              `json:"from"`
	To        string              `json:"to"`
	Amount    int64               `json:"amount"`
	Positions []eventlog.Position `json:"positions"`
}

// concOutcome is what one process's run of transfers returns; a child
// process prints it as JSON.
type concOutcome struct {
	Acks    []concAck `json:"acks"`
	Refused []string  `json:"refused"` // ids refused with insufficient_funds
	Errors  []string  `json:"errors"`  // anything else: the test fails
	Retries int64     `json:"retries"`
}

// runConcTransfers runs n random transfers with ids prefix-00000 ... over
// the accounts from workers goroutines.
func runConcTransfers(s eventlog.Store, prefix string, n, workers int, seed uint64) concOutcome {
	return runConcTransfersWith(s, cache.New(0, 0), prefix, n, workers, seed)
}

// runConcTransfersWith is runConcTransfers with the given warm cache (nil
// for none: every attempt folds its streams from their first event).
func runConcTransfersWith(s eventlog.Store, warm *cache.Cache, prefix string, n, workers int, seed uint64) concOutcome {
	var (
		next    atomic.Int64
		retries atomic.Int64
		mu      sync.Mutex
		out     concOutcome
		wg      sync.WaitGroup
	)
	opts := concOptions(&retries)
	// Each process has its own warm cache, as each Lambda instance does:
	// the invariants below must hold whatever the caches hold.
	opts.Cache = warm
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				from := rng.IntN(concAccounts)
				to := (from + 1 + rng.IntN(concAccounts-1)) % concAccounts
				tr := bank.Transfer{
					ID:     fmt.Sprintf("%s-%05d", prefix, i),
					From:   concAccount(from),
					To:     concAccount(to),
					Amount: 1 + rng.Int64N(concMaxAmount),
				}
				res, err := bank.Execute(context.Background(), s, tr, opts)
				mu.Lock()
				switch {
				case err == nil:
					ack := concAck{ID: tr.ID, From: tr.From, To: tr.To, Amount: tr.Amount}
					for _, r := range res.Events {
						ack.Positions = append(ack.Positions, r.Position)
					}
					out.Acks = append(out.Acks, ack)
				case errors.Is(err, bank.ErrInsufficientFunds):
					out.Refused = append(out.Refused, tr.ID)
				default:
					out.Errors = append(out.Errors, fmt.Sprintf("%s: %v", tr.ID, err))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out.Retries = retries.Load()
	return out
}

// transferEvents are the events of one transfer found in the log.
type transferEvents struct {
	debited, credited, charged, collected []eventlog.Record
	amount, fee                           int64
	from, to, feeAccount                  string
}

// checkConcLog scans the whole log in ReadFeed pages and checks the
// invariants against the acknowledged and refused transfers.
func checkConcLog(t *testing.T, s eventlog.Store, deposited int64, out concOutcome, transfers int) {
	t.Helper()
	for _, e := range out.Errors {
		t.Errorf("transfer failed: %s", e)
	}
	if got := len(out.Acks) + len(out.Refused) + len(out.Errors); got != transfers {
		t.Errorf("%d outcomes for %d transfers", got, transfers)
	}

	records := readAll(t, s)
	state := foldAll(t, records)
	var sum int64
	for i := range concAccounts {
		id := concAccount(i)
		a := state.Account(id)
		if a.Balance < 0 || a.Balance > bank.MaxBalance {
			t.Errorf("balance of %s is %d", id, a.Balance)
		}
		sum += a.Balance
	}
	if len(state.Accounts) != concAccounts {
		t.Errorf("%d accounts in the log, want %d", len(state.Accounts), concAccounts)
	}
	if sum != deposited {
		t.Errorf("balances sum to %d, %d was deposited: money was not conserved", sum, deposited)
	}

	byID := map[string]*transferEvents{}
	get := func(id string) *transferEvents {
		if byID[id] == nil {
			byID[id] = &transferEvents{}
		}
		return byID[id]
	}
	for _, r := range records {
		switch e := decode(t, r).(type) {
		case bank.TransferDebited:
			te := get(e.TransferID)
			te.debited = append(te.debited, r)
			te.from, te.to, te.amount = e.Account, e.To, e.Amount
		case bank.TransferCredited:
			te := get(e.TransferID)
			te.credited = append(te.credited, r)
		case bank.FeeCharged:
			te := get(e.TransferID)
			te.charged = append(te.charged, r)
			te.fee, te.feeAccount = e.Amount, e.FeeAccount
		case bank.FeeCollected:
			te := get(e.TransferID)
			te.collected = append(te.collected, r)
		}
	}

	acked := map[string]bool{}
	for _, ack := range out.Acks {
		if acked[ack.ID] {
			t.Errorf("transfer %s acknowledged twice", ack.ID)
		}
		acked[ack.ID] = true
		te := byID[ack.ID]
		if te == nil {
			t.Errorf("acknowledged transfer %s is not in the log", ack.ID)
			continue
		}
		if len(te.debited) != 1 || len(te.credited) != 1 {
			t.Errorf("transfer %s is in the log %d/%d times (debited/credited)", ack.ID, len(te.debited), len(te.credited))
			continue
		}
		if te.from != ack.From || te.to != ack.To || te.amount != ack.Amount {
			t.Errorf("transfer %s logged as %s -> %s %d, acknowledged as %s -> %s %d", ack.ID, te.from, te.to, te.amount, ack.From, ack.To, ack.Amount)
		}
		wantEvents := 2
		if fee := concFees[ack.From]; fee != "" {
			wantEvents = 4
			if len(te.charged) != 1 || len(te.collected) != 1 || te.feeAccount != fee || te.fee != bank.Fee(ack.Amount) {
				t.Errorf("transfer %s: fee events %d/%d of %d to %q, want one each of %d to %q", ack.ID, len(te.charged), len(te.collected), te.fee, te.feeAccount, bank.Fee(ack.Amount), fee)
			}
		} else if len(te.charged)+len(te.collected) != 0 {
			t.Errorf("transfer %s from %s charged a fee", ack.ID, ack.From)
		}
		var logged []eventlog.Position
		for _, rs := range [][]eventlog.Record{te.debited, te.credited, te.charged, te.collected} {
			for _, r := range rs {
				logged = append(logged, r.Position)
			}
		}
		slices.Sort(logged)
		if len(ack.Positions) != wantEvents || !slices.Equal(logged, ack.Positions) {
			t.Errorf("transfer %s: acknowledged positions %v, in the log at %v", ack.ID, ack.Positions, logged)
		}
		for i := 1; i < len(logged); i++ {
			if logged[i] != logged[i-1]+1 {
				t.Errorf("transfer %s: positions %v are not consecutive", ack.ID, logged)
				break
			}
		}
	}
	for id := range byID {
		if !acked[id] {
			t.Errorf("transfer %s is in the log but was not acknowledged", id)
		}
	}
	for _, id := range out.Refused {
		if byID[id] != nil {
			t.Errorf("refused transfer %s wrote events", id)
		}
	}
	if wantRecords := 2*concAccounts + countEvents(out.Acks); len(records) != wantRecords {
		t.Errorf("%d records in the log, want %d (setup and acknowledged transfers only)", len(records), wantRecords)
	}
}

func countEvents(acks []concAck) int {
	n := 0
	for _, a := range acks {
		n += len(a.Positions)
	}
	return n
}

func TestConcurrentTransfers(t *testing.T) {
	s := newStore(t)
	deposited := setupConcAccounts(t, s)
	seed := uint64(time.Now().UnixNano())
	start := time.Now()
	out := runConcTransfers(s, "p", concTransfers, concWorkers, seed)
	t.Logf("seed %d: %d transfers in %v from %d goroutines: %d acknowledged, %d insufficient_funds, %d errors, %d retries",
		seed, concTransfers, time.Since(start).Round(time.Millisecond), concWorkers, len(out.Acks), len(out.Refused), len(out.Errors), out.Retries)
	checkConcLog(t, s, deposited, out, concTransfers)
	if out.Retries == 0 {
		t.Error("no conflict was retried: the transfers did not run concurrently")
	}
}

const (
	concChildEnv = "BANK_CONCURRENCY_CHILD"
	concDBEnv    = "BANK_CONCURRENCY_DB"
	concSeedEnv  = "BANK_CONCURRENCY_SEED"
	concAcksLine = "BANK-OUTCOME "
)

const (
	concProcessWorkers   = 16
	concProcessTransfers = concTransfers / 2 // per process
)

// TestConcurrentTransfersTwoProcesses runs half of the transfers in this
// process and half in a child process, the test binary re-executed, both
// on one database file at the same time.
func TestConcurrentTransfersTwoProcesses(t *testing.T) {
	if os.Getenv(concChildEnv) == "1" {
		runConcChild(t)
		return
	}
	path := filepath.Join(t.TempDir(), "bank.db")
	s, err := openStoreAt(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	deposited := setupConcAccounts(t, s)
	seed := uint64(time.Now().UnixNano())

	proc := testproc.Start(t, "TestConcurrentTransfersTwoProcesses",
		[]string{concChildEnv + "=1", concDBEnv + "=" + path, concSeedEnv + "=" + strconv.FormatUint(seed+1, 10)}, "-test.timeout=5m")
	stdin, lines := proc.Stdin, proc.Lines
	var childOut []string
	readUntil := func(prefix string) (string, bool) {
		for lines.Scan() {
			line := lines.Text()
			childOut = append(childOut, line)
			if strings.HasPrefix(line, prefix) {
				return strings.TrimPrefix(line, prefix), true
			}
		}
		return "", false
	}
	childFailed := func(what string) {
		werr := proc.CloseAndWait()
		t.Fatalf("child process %s (%v)\nstdout:\n%s\nstderr:\n%s", what, werr, strings.Join(childOut, "\n"), proc.Stderr())
	}
	if _, ok := readUntil("ready"); !ok {
		childFailed("did not get ready")
	}
	// Both processes start their transfers together.
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		childFailed("did not read go: " + err.Error())
	}
	start := time.Now()
	parent := runConcTransfers(s, "parent", concProcessTransfers, concProcessWorkers, seed)
	parentTime := time.Since(start)
	line, ok := readUntil(concAcksLine)
	if !ok {
		childFailed("printed no outcome")
	}
	if err := proc.CloseAndWait(); err != nil {
		t.Fatalf("child process: %v\nstdout:\n%s\nstderr:\n%s", err, strings.Join(childOut, "\n"), proc.Stderr())
	}
	var child concOutcome
	if err := json.Unmarshal([]byte(line), &child); err != nil {
		t.Fatalf("child outcome: %v", err)
	}
	t.Logf("seed %d: parent %d transfers in %v: %d acknowledged, %d insufficient_funds, %d retries; child: %d acknowledged, %d insufficient_funds, %d retries",
		seed, concProcessTransfers, parentTime.Round(time.Millisecond), len(parent.Acks), len(parent.Refused), parent.Retries,
		len(child.Acks), len(child.Refused), child.Retries)

	both := concOutcome{
		Acks:    append(parent.Acks, child.Acks...),
		Refused: append(parent.Refused, child.Refused...),
		Errors:  append(parent.Errors, child.Errors...),
		Retries: parent.Retries + child.Retries,
	}
	checkConcLog(t, s, deposited, both, 2*concProcessTransfers)
	if len(parent.Acks) == 0 || len(child.Acks) == 0 {
		t.Errorf("a process acknowledged nothing: parent %d, child %d", len(parent.Acks), len(child.Acks))
	}
	if both.Retries == 0 {
		t.Error("no conflict was retried")
	}
	// The two processes' transfers interleave in the log.
	if !interleaved(both.Acks) {
		t.Error("the two processes' transfers did not interleave in the log: they did not run at the same time")
	}
}

// interleaved reports whether some child transfer lies between two parent
// transfers in the log.
func interleaved(acks []concAck) bool {
	var parentFirst, parentLast, childFirst, childLast eventlog.Position
	for _, a := range acks {
		p := a.Positions[0]
		if strings.HasPrefix(a.ID, "parent-") {
			if parentFirst == 0 || p < parentFirst {
				parentFirst = p
			}
			parentLast = max(parentLast, p)
		} else {
			if childFirst == 0 || p < childFirst {
				childFirst = p
			}
			childLast = max(childLast, p)
		}
	}
	return childFirst < parentLast && parentFirst < childLast
}

// runConcChild is the child process: it opens the database file, says it
// is ready, waits for go on stdin, runs its transfers and prints its
// outcome as one JSON line.
func runConcChild(t *testing.T) {
	seed, err := strconv.ParseUint(os.Getenv(concSeedEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStoreAt(context.Background(), os.Getenv(concDBEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("waiting for go: %v", err)
	}
	out := runConcTransfers(s, "child", concProcessTransfers, concProcessWorkers, seed)
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(concAcksLine + string(data))
}
