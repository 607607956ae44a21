package bank_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
)

// ---------------------------------------------------------------------------
// Helpers shared by every test file of the package.

// fatalTB is what the helpers need from *testing.T and *rapid.T.
type fatalTB interface {
	Helper()
	Fatalf(format string, args ...any)
}

var storeOptions = sqlite.Options{Synchronous: sqlite.SyncNormal}

func openStoreAt(ctx context.Context, path string) (*sqlite.Store, error) {
	return sqlite.Open(ctx, path, storeOptions)
}

// newStore opens a fresh SQLite store in t.TempDir(), closed at cleanup.
func newStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := openStoreAt(context.Background(), filepath.Join(t.TempDir(), "bank.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

func headOf(t fatalTB, s eventlog.Store) eventlog.Position {
	t.Helper()
	h, err := s.Head(context.Background())
	if err != nil {
		t.Fatalf("head: %v", err)
	}
	return h
}

// mustExec runs cmd through bank.Execute and fails the test on any error.
func mustExec(t fatalTB, s eventlog.Store, cmd bank.Command) executor.Result {
	t.Helper()
	res, err := bank.Execute(context.Background(), s, cmd, executor.Options{})
	if err != nil {
		t.Fatalf("%s %+v: %v", cmd.CommandName(), cmd, err)
	}
	return res
}

// readAll returns the whole feed, read in pages.
func readAll(t fatalTB, s eventlog.Store) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	var after eventlog.Position
	for {
		page, err := s.ReadFeed(context.Background(), eventlog.FeedQuery{After: after, Limit: 1000})
		if err != nil {
			t.Fatalf("read feed after %d: %v", after, err)
		}
		for i, r := range page {
			if r.Position != after+eventlog.Position(i)+1 {
				t.Fatalf("feed has position %d after %d: positions are not gapless", r.Position, after+eventlog.Position(i))
			}
		}
		out = append(out, page...)
		if len(page) < 1000 {
			return out
		}
		after = page[len(page)-1].Position
	}
}

var testCodec = bank.NewCodec()

func decode(t fatalTB, r eventlog.Record) bank.Event {
	t.Helper()
	ev, err := testCodec.Decode(r)
	if err != nil {
		t.Fatalf("decode %s at position %d: %v", r.Type, r.Position, err)
	}
	return ev.Data
}

// foldAll folds every account of the log.
func foldAll(t fatalTB, records []eventlog.Record) bank.State {
	t.Helper()
	var st bank.State
	for _, r := range records {
		ev := decode(t, r)
		if want := bank.StreamOf(ev.AccountID()); r.Stream != want {
			t.Fatalf("%s of account %q at position %d is in stream %q, want %q", r.Type, ev.AccountID(), r.Position, r.Stream, want)
		}
		st.Apply(ev)
	}
	return st
}

// accountOf folds the stream of one account.
func accountOf(t fatalTB, s eventlog.Store, id string) bank.Account {
	t.Helper()
	var st bank.State
	for r, err := range s.ReadStream(context.Background(), bank.StreamOf(id), 0) {
		if err != nil {
			t.Fatalf("read stream of %q: %v", id, err)
		}
		st.Apply(decode(t, r))
	}
	return st.Account(id)
}

// seedDeposits records deposits of at most bank.MaxAmount each that bring
// the balance of the open account id up by total, in one raw append, so
// that balances near bank.MaxBalance can be reached without a thousand
// commands.
func seedDeposits(t *testing.T, s eventlog.Store, id string, total int64) {
	t.Helper()
	stream := bank.StreamOf(id)
	vs, err := s.StreamVersions(context.Background(), []eventlog.StreamID{stream})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0] == 0 {
		t.Fatalf("seed: account %q is not open", id)
	}
	req := eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: stream, Version: vs[0]}}}
	for total > 0 {
		amount := min(total, bank.MaxAmount)
		total -= amount
		typ, data, err := testCodec.Encode(bank.MoneyDeposited{Account: id, Amount: amount})
		if err != nil {
			t.Fatal(err)
		}
		req.Events = append(req.Events, eventlog.Event{Stream: stream, Type: typ, Data: data})
	}
	if _, err := s.Append(context.Background(), req); err != nil {
		t.Fatalf("seed %q: %v", id, err)
	}
}

// countingStore counts every call that reaches the store and can run a hook
// once, just before the first Append.
type countingStore struct {
	eventlog.Store
	calls   atomic.Int64
	appends atomic.Int64

	mu           sync.Mutex
	requests     []eventlog.AppendRequest
	beforeAppend func()
}

func (c *countingStore) Append(ctx context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	c.calls.Add(1)
	c.appends.Add(1)
	c.mu.Lock()
	c.requests = append(c.requests, req)
	hook := c.beforeAppend
	c.beforeAppend = nil
	c.mu.Unlock()
	if hook != nil {
		hook()
	}
	return c.Store.Append(ctx, req)
}

func (c *countingStore) ReadStream(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) iter.Seq2[eventlog.Record, error] {
	c.calls.Add(1)
	return c.Store.ReadStream(ctx, stream, after)
}

func (c *countingStore) StreamVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	c.calls.Add(1)
	return c.Store.StreamVersions(ctx, streams)
}

func (c *countingStore) ReadFeed(ctx context.Context, q eventlog.FeedQuery) ([]eventlog.Record, error) {
	c.calls.Add(1)
	return c.Store.ReadFeed(ctx, q)
}

func (c *countingStore) LookupCommand(ctx context.Context, id string) ([]eventlog.Record, bool, error) {
	c.calls.Add(1)
	return c.Store.LookupCommand(ctx, id)
}

func (c *countingStore) Head(ctx context.Context) (eventlog.Position, error) {
	c.calls.Add(1)
	return c.Store.Head(ctx)
}

// ---------------------------------------------------------------------------
// Step tables: each step runs one command on a shared store and states the
// exact outcome.

// ev is one expected recorded event: its stream, type and exact JSON data.
type ev struct {
	stream string
	typ    string
	data   string
}

type step struct {
	name     string
	cmd      bank.Command
	err      error            // a rule sentinel; nil for success
	events   []ev             // the exact events of a success, in order
	balances map[string]int64 // balances after the step
}

func runSteps(t *testing.T, s eventlog.Store, steps []step) {
	t.Helper()
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			checkStep(t, s, st)
		})
	}
}

func checkStep(t *testing.T, s eventlog.Store, st step) {
	t.Helper()
	before := headOf(t, s)
	res, err := bank.Execute(context.Background(), s, st.cmd, executor.Options{})
	after := headOf(t, s)
	if st.err != nil {
		var re *bank.RuleError
		if !errors.Is(err, st.err) || !errors.As(err, &re) {
			t.Fatalf("%s %+v: got error %v, want %v", st.cmd.CommandName(), st.cmd, err, st.err)
		}
		if want := st.err.(*bank.RuleError).Code; re.Code != want {
			t.Fatalf("code %q, want %q", re.Code, want)
		}
		if errors.Is(err, bank.ErrInvalidInput) {
			t.Fatalf("rule error %v also matches ErrInvalidInput", err)
		}
		if after != before || len(res.Events) != 0 {
			t.Fatalf("failed command wrote: head %d -> %d, %d events returned", before, after, len(res.Events))
		}
	} else {
		if err != nil {
			t.Fatalf("%s %+v: %v", st.cmd.CommandName(), st.cmd, err)
		}
		checkRecords(t, res.Events, before, st.events)
		if after != before+eventlog.Position(len(st.events)) {
			t.Fatalf("head %d -> %d, want +%d", before, after, len(st.events))
		}
		for _, r := range res.Events {
			if r.Metadata.Command != st.cmd.CommandName() {
				t.Errorf("event %s has command %q in its metadata, want %q", r.Type, r.Metadata.Command, st.cmd.CommandName())
			}
		}
	}
	for id, want := range st.balances {
		if got := accountOf(t, s, id).Balance; got != want {
			t.Errorf("balance of %q = %d, want %d", id, got, want)
		}
	}
}

// checkRecords compares records with the wanted events and checks that they
// form one append: consecutive positions right after before, consecutive
// versions within each stream.
func checkRecords(t *testing.T, got []eventlog.Record, before eventlog.Position, want []ev) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events recorded, want %d: %s", len(got), len(want), describe(got))
	}
	lastVersion := map[eventlog.StreamID]eventlog.Version{}
	for i, r := range got {
		w := want[i]
		if r.Stream.String() != w.stream || r.Type != w.typ || string(r.Data) != w.data {
			t.Errorf("event %d:\n got %s %s %s\nwant %s %s %s", i, r.Stream, r.Type, r.Data, w.stream, w.typ, w.data)
		}
		if r.Position != before+eventlog.Position(i)+1 {
			t.Errorf("event %d at position %d, want %d (one append, consecutive positions)", i, r.Position, before+eventlog.Position(i)+1)
		}
		if v, seen := lastVersion[r.Stream]; seen && r.Version != v+1 {
			t.Errorf("event %d has version %d of %s after version %d", i, r.Version, r.Stream, v)
		}
		lastVersion[r.Stream] = r.Version
	}
}

func describe(rs []eventlog.Record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n  %d %s v%d %s %s", r.Position, r.Stream, r.Version, r.Type, r.Data)
	}
	return b.String()
}

func open(id, owner string) bank.OpenAccount { return bank.OpenAccount{Account: id, Owner: owner} }

func openWithFee(id, owner, fee string) bank.OpenAccount {
	return bank.OpenAccount{Account: id, Owner: owner, FeeAccount: fee}
}

func deposit(id string, amount int64) bank.Deposit { return bank.Deposit{Account: id, Amount: amount} }

func withdraw(id string, amount int64) bank.Withdraw {
	return bank.Withdraw{Account: id, Amount: amount}
}

func transfer(id, from, to string, amount int64) bank.Transfer {
	return bank.Transfer{ID: id, From: from, To: to, Amount: amount}
}

func opened(id, owner string) ev {
	return ev{"account-" + id, "AccountOpened", fmt.Sprintf(`{"account":%q,"owner":%q}`, id, owner)}
}

func openedWithFee(id, owner, fee string) ev {
	return ev{"account-" + id, "AccountOpened", fmt.Sprintf(`{"account":%q,"owner":%q,"fee_account":%q}`, id, owner, fee)}
}

func deposited(id string, amount int64) ev {
	return ev{"account-" + id, "MoneyDeposited", fmt.Sprintf(`{"account":%q,"amount":%d}`, id, amount)}
}

func withdrawn(id string, amount int64) ev {
	return ev{"account-" + id, "MoneyWithdrawn", fmt.Sprintf(`{"account":%q,"amount":%d}`, id, amount)}
}

// transferred is the events of a transfer without fee.
func transferred(tid, from, to string, amount int64) []ev {
	return []ev{
		{"account-" + from, "TransferDebited", fmt.Sprintf(`{"account":%q,"to":%q,"amount":%d,"transfer_id":%q}`, from, to, amount, tid)},
		{"account-" + to, "TransferCredited", fmt.Sprintf(`{"account":%q,"from":%q,"amount":%d,"transfer_id":%q}`, to, from, amount, tid)},
	}
}

// transferredWithFee is the events of a transfer that charges fee to feeAcc.
func transferredWithFee(tid, from, to, feeAcc string, amount, fee int64) []ev {
	return append(transferred(tid, from, to, amount),
		ev{"account-" + from, "FeeCharged", fmt.Sprintf(`{"account":%q,"fee_account":%q,"amount":%d,"transfer_id":%q}`, from, feeAcc, fee, tid)},
		ev{"account-" + feeAcc, "FeeCollected", fmt.Sprintf(`{"account":%q,"from":%q,"amount":%d,"transfer_id":%q}`, feeAcc, from, fee, tid)},
	)
}

func evs(e ...ev) []ev { return e }

// ---------------------------------------------------------------------------
// Input rules.

var (
	id64      = strings.Repeat("a", 60) + "Z9_-"
	id65      = id64 + "x"
	owner200e = strings.Repeat("é", 200)       // 400 bytes
	owner200k = strings.Repeat("日", 200)       // 600 bytes
	owner201e = strings.Repeat("é", 201)       // 201 characters
	owner201k = strings.Repeat("日", 201)       // 201 characters
	owner200a = strings.Repeat("o", 199) + "😀" // 200 characters, one of 4 bytes
)

func TestInputRulesRefuseBeforeAnythingRuns(t *testing.T) {
	store := newStore(t)
	mustExec(t, store, open("alice", "Alice"))
	mustExec(t, store, open("bob", "Bob"))
	mustExec(t, store, deposit("alice", 1000))

	cases := []struct {
		name  string
		cmd   bank.Command
		field string
	}{
		{"open: empty id", open("", "x"), "account"},
		{"open: 65-char id", open(id65, "x"), "account"},
		{"open: id with space", open("a b", "x"), "account"},
		{"open: id with dot", open("a.b", "x"), "account"},
		{"open: id with slash", open("a/b", "x"), "account"},
		{"open: id with colon", open("a:b", "x"), "account"},
		{"open: id with non-ASCII letter", open("é", "x"), "account"},
		{"open: id with trailing newline", open("abc\n", "x"), "account"},
		{"open: id with NUL", open("ab\x00", "x"), "account"},
		{"open: pattern character", open("a*", "x"), "account"},
		{"open: empty owner", open("carol", ""), "owner"},
		{"open: owner of 201 two-byte characters", open("carol", owner201e), "owner"},
		{"open: owner of 201 three-byte characters", open("carol", owner201k), "owner"},
		{"open: owner of 201 ASCII characters", open("carol", strings.Repeat("x", 201)), "owner"},
		{"open: owner not UTF-8", open("carol", "Car\xffol"), "owner"},
		{"open: owner truncated UTF-8", open("carol", "日"[:2]), "owner"},
		{"open: owner with NUL", open("carol", "Car\x00ol"), "owner"},
		{"open: owner with newline", open("carol", "Carol\n"), "owner"},
		{"open: owner with tab", open("carol", "Car\tol"), "owner"},
		{"open: owner with DEL", open("carol", "Carol\x7f"), "owner"},
		{"open: owner with C1 control", open("carol", "Carol\u0085"), "owner"},
		{"open: 65-char fee account", openWithFee("carol", "Carol", id65), "fee_account"},
		{"open: fee account with space", openWithFee("carol", "Carol", "al ice"), "fee_account"},

		{"deposit: amount 0", deposit("alice", 0), "amount"},
		{"deposit: amount -1", deposit("alice", -1), "amount"},
		{"deposit: amount 10^12+1", deposit("alice", bank.MaxAmount+1), "amount"},
		{"deposit: min int64", deposit("alice", math.MinInt64), "amount"},
		{"deposit: max int64", deposit("alice", math.MaxInt64), "amount"},
		{"deposit: empty id", deposit("", 1), "account"},
		{"deposit: 65-char id", deposit(id65, 1), "account"},

		{"withdraw: amount 0", withdraw("alice", 0), "amount"},
		{"withdraw: amount -5", withdraw("alice", -5), "amount"},
		{"withdraw: amount 10^12+1", withdraw("alice", bank.MaxAmount+1), "amount"},
		{"withdraw: bad id", withdraw("al/ice", 1), "account"},

		{"transfer: amount 0", transfer("t", "alice", "bob", 0), "amount"},
		{"transfer: amount -1", transfer("t", "alice", "bob", -1), "amount"},
		{"transfer: amount 10^12+1", transfer("t", "alice", "bob", bank.MaxAmount+1), "amount"},
		{"transfer: bad from", transfer("t", "al ice", "bob", 1), "from"},
		{"transfer: 65-char from", transfer("t", id65, "bob", 1), "from"},
		{"transfer: empty to", transfer("t", "alice", "", 1), "to"},
		{"transfer: 65-char to", transfer("t", "alice", id65, 1), "to"},
		{"transfer: same bad account", transfer("t", "a b", "a b", 1), "from"},
		{"transfer: same account, bad amount", transfer("t", "alice", "alice", 0), "amount"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			verr := c.cmd.Validate()
			var ie *bank.InputError
			if !errors.Is(verr, bank.ErrInvalidInput) || !errors.As(verr, &ie) {
				t.Fatalf("Validate() = %v, want an *InputError", verr)
			}
			if ie.Field != c.field {
				t.Errorf("Validate() names field %q, want %q (%v)", ie.Field, c.field, verr)
			}
			var re *bank.RuleError
			if errors.As(verr, &re) {
				t.Errorf("input error %v is also a rule error", verr)
			}

			cs := &countingStore{Store: store}
			before := headOf(t, store)
			res, err := bank.Execute(context.Background(), cs, c.cmd, executor.Options{})
			if !errors.Is(err, bank.ErrInvalidInput) || !errors.As(err, &ie) || ie.Field != c.field {
				t.Fatalf("Execute: %v, want an *InputError for %q", err, c.field)
			}
			if n := cs.calls.Load(); n != 0 {
				t.Errorf("Execute called the store %d times for invalid input", n)
			}
			if len(res.Events) != 0 || res.Attempts != 0 {
				t.Errorf("Execute returned %+v for invalid input", res)
			}
			if after := headOf(t, store); after != before {
				t.Errorf("head moved from %d to %d", before, after)
			}
		})
	}
}

func TestInputBoundariesAccepted(t *testing.T) {
	valid := []bank.Command{
		open(id64, owner200e),
		open("a", "x"),
		open("A-Z_a-z_0-9", owner200k),
		open("U", owner200a),
		openWithFee("F", strings.Repeat("x", 200), id64),
		deposit(id64, 1),
		deposit(id64, bank.MaxAmount),
		withdraw(id64, bank.MaxAmount),
		transfer("", id64, "a", bank.MaxAmount),
		transfer("", id64, "a", 1),
	}
	for _, c := range valid {
		if err := c.Validate(); err != nil {
			t.Errorf("%s %+v: Validate() = %v", c.CommandName(), c, err)
		}
	}

	s := newStore(t)
	runSteps(t, s, []step{
		{name: "64-char id, owner of 200 two-byte characters", cmd: open(id64, owner200e), events: evs(opened(id64, owner200e))},
		{name: "owner of 200 three-byte characters", cmd: open("k", owner200k), events: evs(opened("k", owner200k))},
		{name: "owner of 200 characters with a four-byte one", cmd: open("U", owner200a), events: evs(opened("U", owner200a))},
		{name: "one-char id, one-char owner", cmd: open("a", "x"), events: evs(opened("a", "x"))},
		{name: "64-char fee account", cmd: openWithFee("F", "Fee payer", id64), events: evs(openedWithFee("F", "Fee payer", id64))},
		{name: "deposit 10^12", cmd: deposit(id64, bank.MaxAmount), events: evs(deposited(id64, bank.MaxAmount)), balances: map[string]int64{id64: bank.MaxAmount}},
		{name: "deposit 1", cmd: deposit("a", 1), events: evs(deposited("a", 1)), balances: map[string]int64{"a": 1}},
		{name: "transfer 10^12", cmd: transfer("t1", id64, "a", bank.MaxAmount), events: transferred("t1", id64, "a", bank.MaxAmount),
			balances: map[string]int64{id64: 0, "a": bank.MaxAmount + 1}},
		{name: "withdraw 10^12", cmd: withdraw("a", bank.MaxAmount), events: evs(withdrawn("a", bank.MaxAmount)), balances: map[string]int64{"a": 1}},
		{name: "withdraw 1", cmd: withdraw("a", 1), events: evs(withdrawn("a", 1)), balances: map[string]int64{"a": 0}},
	})
	if got := accountOf(t, s, id64).Owner; got != owner200e {
		t.Errorf("owner of %q recorded as %q", id64, got)
	}
}

// ---------------------------------------------------------------------------
// Business rules.

func TestOpenAccount(t *testing.T) {
	s := newStore(t)
	runSteps(t, s, []step{
		{name: "opens", cmd: open("alice", "Alice"), events: evs(opened("alice", "Alice")), balances: map[string]int64{"alice": 0}},
		{name: "owner with spaces and non-ASCII", cmd: open("bob", "Bob \"B\" Ünal"), events: evs(ev{"account-bob", "AccountOpened", `{"account":"bob","owner":"Bob \"B\" Ünal"}`})},
		{name: "again", cmd: open("alice", "Alice"), err: bank.ErrAccountExists},
		{name: "again with another owner", cmd: open("alice", "Mallory"), err: bank.ErrAccountExists},
		{name: "again with a fee account", cmd: openWithFee("alice", "Alice", "bob"), err: bank.ErrAccountExists},
		{name: "fee account not open", cmd: openWithFee("carol", "Carol", "fees"), err: bank.ErrAccountNotFound},
		{name: "fee account is the account", cmd: openWithFee("carol", "Carol", "carol"), err: bank.ErrSameAccount},
		{name: "fee account open", cmd: openWithFee("carol", "Carol", "bob"), events: evs(openedWithFee("carol", "Carol", "bob"))},
		{name: "ids are case-sensitive", cmd: open("Alice", "Other Alice"), events: evs(opened("Alice", "Other Alice"))},
		{name: "fee account that itself has a fee account", cmd: openWithFee("dave", "Dave", "carol"), events: evs(openedWithFee("dave", "Dave", "carol"))},
		{name: "after a refused open", cmd: open("fees", "Fees"), events: evs(opened("fees", "Fees"))},
		{name: "now with that fee account", cmd: openWithFee("erin", "Erin", "fees"), events: evs(openedWithFee("erin", "Erin", "fees"))},
	})
	a := accountOf(t, s, "carol")
	if !a.Open || a.Owner != "Carol" || a.FeeAccount != "bob" || a.Balance != 0 {
		t.Errorf("carol folds to %+v", a)
	}
}

func TestDepositAndWithdraw(t *testing.T) {
	s := newStore(t)
	mustExec(t, s, open("alice", "Alice"))
	runSteps(t, s, []step{
		{name: "deposit to unknown account", cmd: deposit("nobody", 10), err: bank.ErrAccountNotFound},
		{name: "withdraw from unknown account", cmd: withdraw("nobody", 10), err: bank.ErrAccountNotFound},
		{name: "withdraw from empty account", cmd: withdraw("alice", 1), err: bank.ErrInsufficientFunds},
		{name: "deposit", cmd: deposit("alice", 100), events: evs(deposited("alice", 100)), balances: map[string]int64{"alice": 100}},
		{name: "deposit again", cmd: deposit("alice", 50), events: evs(deposited("alice", 50)), balances: map[string]int64{"alice": 150}},
		{name: "withdraw one more than the balance", cmd: withdraw("alice", 151), err: bank.ErrInsufficientFunds, balances: map[string]int64{"alice": 150}},
		{name: "withdraw part", cmd: withdraw("alice", 49), events: evs(withdrawn("alice", 49)), balances: map[string]int64{"alice": 101}},
		{name: "withdraw the whole balance", cmd: withdraw("alice", 101), events: evs(withdrawn("alice", 101)), balances: map[string]int64{"alice": 0}},
		{name: "withdraw from zero", cmd: withdraw("alice", 1), err: bank.ErrInsufficientFunds, balances: map[string]int64{"alice": 0}},
		{name: "unknown account differing only in case", cmd: deposit("Alice", 1), err: bank.ErrAccountNotFound},
	})
}

func TestTransferWithoutFee(t *testing.T) {
	s := newStore(t)
	mustExec(t, s, open("alice", "Alice"))
	mustExec(t, s, open("bob", "Bob"))
	mustExec(t, s, deposit("alice", 500))
	runSteps(t, s, []step{
		{name: "same account", cmd: transfer("t0", "alice", "alice", 1), err: bank.ErrSameAccount},
		{name: "unknown source", cmd: transfer("t0", "nobody", "bob", 1), err: bank.ErrAccountNotFound},
		{name: "unknown target", cmd: transfer("t0", "alice", "nobody", 1), err: bank.ErrAccountNotFound},
		{name: "both unknown", cmd: transfer("t0", "x", "y", 1), err: bank.ErrAccountNotFound},
		{name: "more than the balance", cmd: transfer("t0", "alice", "bob", 501), err: bank.ErrInsufficientFunds,
			balances: map[string]int64{"alice": 500, "bob": 0}},
		{name: "empty source", cmd: transfer("t0", "bob", "alice", 1), err: bank.ErrInsufficientFunds},
		{name: "part", cmd: transfer("t1", "alice", "bob", 200), events: transferred("t1", "alice", "bob", 200),
			balances: map[string]int64{"alice": 300, "bob": 200}},
		{name: "back", cmd: transfer("t2", "bob", "alice", 1), events: transferred("t2", "bob", "alice", 1),
			balances: map[string]int64{"alice": 301, "bob": 199}},
		{name: "whole balance", cmd: transfer("t3", "alice", "bob", 301), events: transferred("t3", "alice", "bob", 301),
			balances: map[string]int64{"alice": 0, "bob": 500}},
	})
}

func TestTransferWithFee(t *testing.T) {
	s := newStore(t)
	mustExec(t, s, open("fees", "Fee collector"))
	mustExec(t, s, openWithFee("payer", "Payer", "fees"))
	mustExec(t, s, open("bob", "Bob"))
	mustExec(t, s, deposit("payer", 1_000))
	mustExec(t, s, deposit("bob", 1_000))
	runSteps(t, s, []step{
		{name: "amount 99 charges 1", cmd: transfer("f1", "payer", "bob", 99), events: transferredWithFee("f1", "payer", "bob", "fees", 99, 1),
			balances: map[string]int64{"payer": 900, "bob": 1_099, "fees": 1}},
		{name: "amount 100 charges 1", cmd: transfer("f2", "payer", "bob", 100), events: transferredWithFee("f2", "payer", "bob", "fees", 100, 1),
			balances: map[string]int64{"payer": 799, "bob": 1_199, "fees": 2}},
		{name: "amount 250 charges 2", cmd: transfer("f3", "payer", "bob", 250), events: transferredWithFee("f3", "payer", "bob", "fees", 250, 2),
			balances: map[string]int64{"payer": 547, "bob": 1_449, "fees": 4}},
		{name: "amount 1 charges 1", cmd: transfer("f4", "payer", "bob", 1), events: transferredWithFee("f4", "payer", "bob", "fees", 1, 1),
			balances: map[string]int64{"payer": 545, "bob": 1_450, "fees": 5}},
		{name: "amount 199 charges 1", cmd: transfer("f5", "payer", "bob", 199), events: transferredWithFee("f5", "payer", "bob", "fees", 199, 1),
			balances: map[string]int64{"payer": 345, "bob": 1_649, "fees": 6}},
		// 345 = 342 + 3 (fee of 342 is 3): one more is refused, exactly enough succeeds.
		{name: "amount plus fee one more than the balance", cmd: transfer("f6", "payer", "bob", 343), err: bank.ErrInsufficientFunds,
			balances: map[string]int64{"payer": 345, "bob": 1_649, "fees": 6}},
		{name: "amount equal to the balance, fee not covered", cmd: transfer("f6", "payer", "bob", 345), err: bank.ErrInsufficientFunds},
		{name: "amount plus fee exactly the balance", cmd: transfer("f7", "payer", "bob", 342), events: transferredWithFee("f7", "payer", "bob", "fees", 342, 3),
			balances: map[string]int64{"payer": 0, "bob": 1_991, "fees": 9}},
		{name: "fee of 1 not covered", cmd: transfer("f8", "payer", "bob", 1), err: bank.ErrInsufficientFunds},
		{name: "a transfer to the fee payer pays no fee", cmd: transfer("f9", "bob", "payer", 101), events: transferred("f9", "bob", "payer", 101),
			balances: map[string]int64{"payer": 101, "bob": 1_890, "fees": 9}},
		{name: "to the fee account: fee still charged, both credited", cmd: transfer("f10", "payer", "fees", 50),
			events:   transferredWithFee("f10", "payer", "fees", "fees", 50, 1),
			balances: map[string]int64{"payer": 50, "bob": 1_890, "fees": 60}},
		{name: "to the fee account, fee not covered", cmd: transfer("f11", "payer", "fees", 50), err: bank.ErrInsufficientFunds},
		{name: "from the fee account pays no fee", cmd: transfer("f12", "fees", "payer", 60), events: transferred("f12", "fees", "payer", 60),
			balances: map[string]int64{"payer": 110, "fees": 0}},
		{name: "unknown target with a fee account", cmd: transfer("f13", "payer", "nobody", 1), err: bank.ErrAccountNotFound},
		{name: "same account with a fee account", cmd: transfer("f13", "payer", "payer", 1), err: bank.ErrSameAccount},
	})

	t.Run("amount 10^12 charges 10^10", func(t *testing.T) {
		seedDeposits(t, s, "payer", bank.MaxAmount+10_000_000_000-110)
		checkStep(t, s, step{cmd: transfer("big", "payer", "bob", bank.MaxAmount),
			events:   transferredWithFee("big", "payer", "bob", "fees", bank.MaxAmount, 10_000_000_000),
			balances: map[string]int64{"payer": 0, "bob": 1_890 + bank.MaxAmount, "fees": 10_000_000_000}})
	})

	for _, c := range []struct{ amount, fee int64 }{{1, 1}, {99, 1}, {100, 1}, {101, 1}, {199, 1}, {200, 2}, {250, 2}, {999, 9}, {1000, 10}, {bank.MaxAmount, bank.MaxAmount / 100}} {
		if got := bank.Fee(c.amount); got != c.fee {
			t.Errorf("Fee(%d) = %d, want %d", c.amount, got, c.fee)
		}
	}
}

func TestBalanceLimit(t *testing.T) {
	s := newStore(t)
	for _, id := range []string{"big", "src", "fees", "other"} {
		mustExec(t, s, open(id, id))
	}
	mustExec(t, s, openWithFee("payer", "Payer", "fees"))
	seedDeposits(t, s, "big", bank.MaxBalance-bank.MaxAmount)
	mustExec(t, s, deposit("src", 1_000))
	mustExec(t, s, deposit("payer", 10_000))
	const limit = int64(bank.MaxBalance)

	runSteps(t, s, []step{
		{name: "deposit reaching exactly 10^15", cmd: deposit("big", bank.MaxAmount), events: evs(deposited("big", bank.MaxAmount)),
			balances: map[string]int64{"big": limit}},
		{name: "deposit of 1 more", cmd: deposit("big", 1), err: bank.ErrBalanceLimit, balances: map[string]int64{"big": limit}},
		{name: "deposit of 10^12 more", cmd: deposit("big", bank.MaxAmount), err: bank.ErrBalanceLimit},
		{name: "transfer of 1 more", cmd: transfer("b1", "src", "big", 1), err: bank.ErrBalanceLimit,
			balances: map[string]int64{"big": limit, "src": 1_000}},
		{name: "withdraw 5", cmd: withdraw("big", 5), events: evs(withdrawn("big", 5)), balances: map[string]int64{"big": limit - 5}},
		{name: "transfer of 6 would pass it", cmd: transfer("b2", "src", "big", 6), err: bank.ErrBalanceLimit},
		{name: "transfer reaching exactly 10^15", cmd: transfer("b3", "src", "big", 5), events: transferred("b3", "src", "big", 5),
			balances: map[string]int64{"big": limit, "src": 995}},
		{name: "deposit of 1 after it", cmd: deposit("big", 1), err: bank.ErrBalanceLimit},
		{name: "transfer out of a full account", cmd: transfer("b4", "big", "src", 5), events: transferred("b4", "big", "src", 5),
			balances: map[string]int64{"big": limit - 5, "src": 1_000}},
		{name: "deposit of 5 reaching exactly 10^15", cmd: deposit("big", 5), events: evs(deposited("big", 5))},
	})

	t.Run("fee account at the limit refuses the whole transfer", func(t *testing.T) {
		seedDeposits(t, s, "fees", limit)
		runSteps(t, s, []step{
			{name: "fee of 1 over the limit", cmd: transfer("c1", "payer", "other", 100), err: bank.ErrBalanceLimit,
				balances: map[string]int64{"payer": 10_000, "other": 0, "fees": limit}},
			{name: "withdraw 1 from the fee account", cmd: withdraw("fees", 1), events: evs(withdrawn("fees", 1))},
			{name: "fee of 2 over the limit", cmd: transfer("c2", "payer", "other", 200), err: bank.ErrBalanceLimit,
				balances: map[string]int64{"payer": 10_000, "other": 0, "fees": limit - 1}},
			{name: "fee of 1 reaching exactly the limit", cmd: transfer("c3", "payer", "other", 100),
				events:   transferredWithFee("c3", "payer", "other", "fees", 100, 1),
				balances: map[string]int64{"payer": 9_899, "other": 100, "fees": limit}},
			{name: "to the full fee account", cmd: transfer("c4", "payer", "fees", 1), err: bank.ErrBalanceLimit,
				balances: map[string]int64{"payer": 9_899, "fees": limit}},
			{name: "withdraw 101 from the fee account", cmd: withdraw("fees", 101), events: evs(withdrawn("fees", 101))},
			// amount 100 + fee 1 = 101 fits exactly; 101 + fee 1 = 102 does not.
			{name: "to the fee account, amount plus fee one over", cmd: transfer("c5", "payer", "fees", 101), err: bank.ErrBalanceLimit,
				balances: map[string]int64{"payer": 9_899, "fees": limit - 101}},
			{name: "to the fee account, amount plus fee exactly to the limit", cmd: transfer("c6", "payer", "fees", 100),
				events:   transferredWithFee("c6", "payer", "fees", "fees", 100, 1),
				balances: map[string]int64{"payer": 9_798, "fees": limit}},
		})
	})

	st := foldAll(t, readAll(t, s))
	for id, a := range st.Accounts {
		if a.Balance < 0 || a.Balance > limit {
			t.Errorf("balance of %q is %d", id, a.Balance)
		}
	}
}

// TestRecordedJSON reads back every event type from the store and compares
// its stream, type and data with golden JSON.
func TestRecordedJSON(t *testing.T) {
	s := newStore(t)
	mustExec(t, s, open("fees", "Fees Ltd"))
	mustExec(t, s, openWithFee("alice", "Alice Ünal", "fees"))
	mustExec(t, s, open("bob", "Bob"))
	mustExec(t, s, deposit("alice", 1000))
	mustExec(t, s, withdraw("alice", 100))
	mustExec(t, s, transfer("tr-1", "alice", "bob", 250))
	mustExec(t, s, transfer("tr-2", "bob", "alice", 10))
	want := []struct{ stream, typ, data string }{
		{"account-fees", "AccountOpened", `{"account":"fees","owner":"Fees Ltd"}`},
		{"account-alice", "AccountOpened", `{"account":"alice","owner":"Alice Ünal","fee_account":"fees"}`},
		{"account-bob", "AccountOpened", `{"account":"bob","owner":"Bob"}`},
		{"account-alice", "MoneyDeposited", `{"account":"alice","amount":1000}`},
		{"account-alice", "MoneyWithdrawn", `{"account":"alice","amount":100}`},
		{"account-alice", "TransferDebited", `{"account":"alice","to":"bob","amount":250,"transfer_id":"tr-1"}`},
		{"account-bob", "TransferCredited", `{"account":"bob","from":"alice","amount":250,"transfer_id":"tr-1"}`},
		{"account-alice", "FeeCharged", `{"account":"alice","fee_account":"fees","amount":2,"transfer_id":"tr-1"}`},
		{"account-fees", "FeeCollected", `{"account":"fees","from":"alice","amount":2,"transfer_id":"tr-1"}`},
		{"account-bob", "TransferDebited", `{"account":"bob","to":"alice","amount":10,"transfer_id":"tr-2"}`},
		{"account-alice", "TransferCredited", `{"account":"alice","from":"bob","amount":10,"transfer_id":"tr-2"}`},
	}
	got := readAll(t, s)
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d:%s", len(got), len(want), describe(got))
	}
	for i, r := range got {
		w := want[i]
		if r.Stream.String() != w.stream || r.Type != w.typ || string(r.Data) != w.data {
			t.Errorf("record %d:\n got %s %s %s\nwant %s %s %s", i+1, r.Stream, r.Type, r.Data, w.stream, w.typ, w.data)
		}
	}
	if a := accountOf(t, s, "alice"); a.Balance != 1000-100-250-2+10 {
		t.Errorf("alice has %d", a.Balance)
	}
}

func TestTransferWithoutIDGetsUUIDv7(t *testing.T) {
	s := newStore(t)
	mustExec(t, s, open("fees", "Fees"))
	mustExec(t, s, openWithFee("a", "A", "fees"))
	mustExec(t, s, open("b", "B"))
	mustExec(t, s, deposit("a", 500))
	res := mustExec(t, s, bank.Transfer{From: "a", To: "b", Amount: 100})
	if len(res.Events) != 4 {
		t.Fatalf("%d events:%s", len(res.Events), describe(res.Events))
	}
	var ids []string
	for _, r := range res.Events {
		var tid string
		switch e := decode(t, r).(type) {
		case bank.TransferDebited:
			tid = e.TransferID
		case bank.TransferCredited:
			tid = e.TransferID
		case bank.FeeCharged:
			tid = e.TransferID
		case bank.FeeCollected:
			tid = e.TransferID
		default:
			t.Fatalf("unexpected %T", e)
		}
		ids = append(ids, tid)
	}
	u, err := uuid.Parse(ids[0])
	if err != nil || u.Version() != 7 {
		t.Fatalf("transfer id %q is not a UUIDv7 (%v)", ids[0], err)
	}
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Errorf("transfer ids differ: %q", ids)
		}
	}
}

// ---------------------------------------------------------------------------
// Atomicity and the consistency boundary of a transfer.

func TestTransferIsOneAppend(t *testing.T) {
	s := newStore(t)
	mustExec(t, s, open("fees", "Fees"))
	mustExec(t, s, openWithFee("a", "A", "fees"))
	mustExec(t, s, open("b", "B"))
	mustExec(t, s, deposit("a", 1000))
	mustExec(t, s, deposit("b", 1000))

	cs := &countingStore{Store: s}
	before := headOf(t, s)
	res, err := bank.Execute(context.Background(), cs, transfer("one", "a", "b", 300), executor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := cs.appends.Load(); n != 1 {
		t.Fatalf("%d appends, want 1", n)
	}
	req := cs.requests[0]
	if len(req.Events) != 4 {
		t.Fatalf("the append carries %d events, want 4", len(req.Events))
	}
	checkRecords(t, res.Events, before, transferredWithFee("one", "a", "b", "fees", 300, 3))
	// Every stream read is in the consistency check, with the version read:
	// a and b at 2 (opened, deposited), the discovered fees at 1.
	wantExpected := map[string]eventlog.Version{"account-a": 2, "account-b": 2, "account-fees": 1}
	if len(req.Expected) != len(wantExpected) {
		t.Fatalf("expected versions %+v, want %v", req.Expected, wantExpected)
	}
	for _, e := range req.Expected {
		if v, ok := wantExpected[e.Stream.String()]; !ok || v != e.Version {
			t.Errorf("expected version of %s is %d, want %d (listed: %v)", e.Stream, e.Version, v, ok)
		}
	}
	// The records are one block: nothing else between them in the feed.
	all := readAll(t, s)
	for i, r := range res.Events {
		if got := all[int(r.Position)-1]; got.Position != r.Position || got.Type != r.Type || string(got.Data) != string(r.Data) {
			t.Errorf("event %d: feed has %s %s at %d", i, got.Type, got.Data, got.Position)
		}
	}

	// A refused transfer appends nothing at all.
	cs = &countingStore{Store: s}
	_, err = bank.Execute(context.Background(), cs, transfer("two", "a", "b", 700), executor.Options{})
	if !errors.Is(err, bank.ErrInsufficientFunds) {
		t.Fatalf("got %v, want insufficient_funds", err)
	}
	if n := cs.appends.Load(); n != 0 {
		t.Errorf("%d appends for a refused transfer", n)
	}
}

// TestFeeStreamInConsistencyBoundary changes the fee account's stream, and
// only that stream, between the transfer's reads and its append. The
// append must conflict on the fee stream and the retry must decide on the
// new state of the fee account.
func TestFeeStreamInConsistencyBoundary(t *testing.T) {
	setup := func(t *testing.T) *sqlite.Store {
		s := newStore(t)
		mustExec(t, s, open("fees", "Fees"))
		mustExec(t, s, openWithFee("a", "A", "fees"))
		mustExec(t, s, open("b", "B"))
		mustExec(t, s, deposit("a", 1000))
		return s
	}
	// interfere deposits into the fee account directly, behind the
	// executor's back, once, just before the transfer's first append.
	interfere := func(t *testing.T, s eventlog.Store, cs *countingStore, amount int64) {
		cs.beforeAppend = func() {
			if _, err := bank.Execute(context.Background(), s, deposit("fees", amount), executor.Options{}); err != nil {
				t.Errorf("interfering deposit: %v", err)
			}
		}
	}

	t.Run("conflict and retry", func(t *testing.T) {
		s := setup(t)
		cs := &countingStore{Store: s}
		interfere(t, s, cs, 7)
		var retries []executor.RetryInfo
		opts := executor.Options{
			Retry:   executor.FixedDelay{MaxRetries: 3},
			OnRetry: func(ri executor.RetryInfo) { retries = append(retries, ri) },
		}
		res, err := bank.Execute(context.Background(), cs, transfer("x", "a", "b", 100), opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(retries) != 1 || res.Attempts != 2 || cs.appends.Load() != 2 {
			t.Fatalf("retries %d, attempts %d, appends %d; want 1, 2, 2", len(retries), res.Attempts, cs.appends.Load())
		}
		c := retries[0].Conflict
		if c == nil || len(c.Conflicts) != 1 || c.Conflicts[0].Stream.String() != "account-fees" ||
			c.Conflicts[0].Expected != 1 || c.Conflicts[0].Actual != 2 {
			t.Fatalf("conflict %v, want only account-fees expected 1, actual 2", c)
		}
		for i, req := range cs.requests {
			found := false
			for _, e := range req.Expected {
				if e.Stream.String() == "account-fees" {
					found = true
					if want := eventlog.Version(i + 1); e.Version != want {
						t.Errorf("append %d expects account-fees at %d, want %d", i+1, e.Version, want)
					}
				}
			}
			if !found {
				t.Errorf("append %d does not expect the fee stream: %+v", i+1, req.Expected)
			}
		}
		if a := accountOf(t, s, "fees"); a.Balance != 8 {
			t.Errorf("fee account has %d, want 7 + 1", a.Balance)
		}
		if a := accountOf(t, s, "a"); a.Balance != 899 {
			t.Errorf("source has %d, want 899", a.Balance)
		}
	})

	t.Run("the retry decides on the fee account's new state", func(t *testing.T) {
		s := setup(t)
		seedDeposits(t, s, "fees", bank.MaxBalance-bank.MaxAmount)
		cs := &countingStore{Store: s}
		// The interfering deposit fills the fee account exactly to the
		// limit: the fee of 1 no longer fits, so the retried transfer
		// must be refused. Had the fee stream been left out of the check,
		// the first append would have succeeded and broken the limit.
		interfere(t, s, cs, bank.MaxAmount)
		var retries atomic.Int32
		opts := executor.Options{
			Retry:   executor.FixedDelay{MaxRetries: 3},
			OnRetry: func(executor.RetryInfo) { retries.Add(1) },
		}
		before := headOf(t, s) + 1 // the interfering deposit
		_, err := bank.Execute(context.Background(), cs, transfer("y", "a", "b", 100), opts)
		if !errors.Is(err, bank.ErrBalanceLimit) {
			t.Fatalf("got %v, want balance_limit after the retry", err)
		}
		if retries.Load() != 1 {
			t.Errorf("%d retries, want 1", retries.Load())
		}
		if after := headOf(t, s); after != before {
			t.Errorf("head %d, want %d: the refused transfer wrote", after, before)
		}
		if a := accountOf(t, s, "fees"); a.Balance != bank.MaxBalance {
			t.Errorf("fee account has %d", a.Balance)
		}
		if a := accountOf(t, s, "a"); a.Balance != 1000 {
			t.Errorf("source has %d", a.Balance)
		}
	})

	t.Run("no retries left", func(t *testing.T) {
		s := setup(t)
		cs := &countingStore{Store: s}
		interfere(t, s, cs, 1)
		before := headOf(t, s) + 1
		_, err := bank.Execute(context.Background(), cs, transfer("z", "a", "b", 100), executor.Options{Retry: executor.NoRetry{}})
		var ce *executor.ConcurrencyError
		if !errors.Is(err, executor.ErrConcurrency) || !errors.Is(err, eventlog.ErrConflict) || !errors.As(err, &ce) {
			t.Fatalf("got %v, want a concurrency error", err)
		}
		if len(ce.Last.Conflicts) != 1 || ce.Last.Conflicts[0].Stream.String() != "account-fees" {
			t.Errorf("conflict %v, want only account-fees", ce.Last)
		}
		if after := headOf(t, s); after != before {
			t.Errorf("head %d, want %d", after, before)
		}
	})

	t.Run("concurrent deposits to the fee account", func(t *testing.T) {
		s := setup(t)
		mustExec(t, s, deposit("a", 1_000_000))
		depositOpts := executor.Options{
			Retry: executor.ExponentialBackoff{MaxRetries: 50, Initial: 100 * time.Microsecond, Max: 5 * time.Millisecond, Jitter: 0.2},
		}
		var retries atomic.Int64
		var otherConflicts atomic.Int64
		transferOpts := executor.Options{
			Retry: executor.ExponentialBackoff{MaxRetries: 200, Initial: time.Millisecond, Max: 10 * time.Millisecond, Jitter: 0.5},
			OnRetry: func(ri executor.RetryInfo) {
				retries.Add(1)
				for _, c := range ri.Conflict.Conflicts {
					if c.Stream.String() != "account-fees" {
						otherConflicts.Add(1)
					}
				}
			},
		}
		// Transfers a -> b touch the fee account only through discovery;
		// deposits to it from other goroutines force conflicts there.
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var deposits atomic.Int64
		for range 2 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := bank.Execute(context.Background(), s, deposit("fees", 1), depositOpts); err != nil {
						t.Errorf("deposit: %v", err)
						return
					}
					deposits.Add(1)
					time.Sleep(time.Millisecond)
				}
			})
		}
		var transfers int64
		for i := range 500 {
			res, err := bank.Execute(context.Background(), s, transfer(fmt.Sprintf("c%d", i), "a", "b", 150), transferOpts)
			if err != nil {
				t.Errorf("transfer %d: %v", i, err)
				break
			}
			transfers++
			if len(res.Events) != 4 {
				t.Errorf("transfer %d recorded %d events", i, len(res.Events))
			}
			if i >= 10 && retries.Load() >= 3 {
				break
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("transfers %d, concurrent fee deposits %d, transfer retries %d", transfers, deposits.Load(), retries.Load())
		if retries.Load() == 0 {
			t.Fatal("no transfer was retried although the fee account changed under it")
		}
		if n := otherConflicts.Load(); n != 0 {
			t.Errorf("%d conflicts on streams other than the fee account", n)
		}
		if a := accountOf(t, s, "fees"); a.Balance != deposits.Load()+transfers {
			t.Errorf("fee account has %d, want %d deposits + %d fees of 1", a.Balance, deposits.Load(), transfers)
		}
		if a := accountOf(t, s, "a"); a.Balance != 1_001_000-151*transfers {
			t.Errorf("source has %d after %d transfers", a.Balance, transfers)
		}
	})
}
