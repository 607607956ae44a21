package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
)

func openBankStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"), sqlite.Options{Synchronous: sqlite.SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// cold never uses a cache or a snapshot.
var cold = executor.Options{SnapshotThreshold: -1}

// cacheKey is the key of a bank command's warm state: command name, state
// type and declared streams.
func cacheKey(command string, accounts ...string) string {
	key := command + "\x1fbank.State"
	for _, a := range accounts {
		key += "\x1f" + bank.StreamOf(a).String()
	}
	return key
}

// snapshotKey is the key the executor saves a bank command's snapshots
// under: its cache key and the state's schema.
func snapshotKey(command string, schema string, accounts ...string) string {
	return cacheKey(command, accounts...) + "\x1f" + schema
}

// twin is two stores that receive the same writes: warm runs commands with
// the options under test, cold runs them from scratch.
type twin struct {
	t          *testing.T
	warm, cold *sqlite.Store
}

func newTwin(t *testing.T) twin { return twin{t: t, warm: openBankStore(t), cold: openBankStore(t)} }

// open opens account on both stores and deposits 1, 2, ... n-1 to it
// directly, so that its stream holds n events.
func (tw twin) open(account string, n int) {
	tw.t.Helper()
	for _, s := range []*sqlite.Store{tw.warm, tw.cold} {
		if _, err := bank.Execute(context.Background(), s, bank.OpenAccount{Account: account, Owner: "owner"}, cold); err != nil {
			tw.t.Fatal(err)
		}
	}
	tw.deposit(account, n-1)
}

// deposit appends n deposits of 1, 2, ... n to account on both stores,
// bypassing the executor (another writer).
func (tw twin) deposit(account string, n int) {
	tw.t.Helper()
	ctx := context.Background()
	stream := bank.StreamOf(account)
	for _, s := range []*sqlite.Store{tw.warm, tw.cold} {
		versions, err := s.StreamVersions(ctx, []eventlog.StreamID{stream})
		if err != nil {
			tw.t.Fatal(err)
		}
		req := eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: stream, Version: versions[0]}}}
		for i := range n {
			data, _ := json.Marshal(bank.MoneyDeposited{Account: account, Amount: int64(i + 1)})
			req.Events = append(req.Events, eventlog.Event{Stream: stream, Type: bank.TypeMoneyDeposited, Data: data})
		}
		if _, err := s.Append(ctx, req); err != nil {
			tw.t.Fatal(err)
		}
	}
}

// run executes cmd on the warm store with opts and on the cold store from
// scratch, and checks that both decided the same.
func (tw twin) run(cmd bank.Command, opts executor.Options) (executor.Result, error) {
	tw.t.Helper()
	ctx := context.Background()
	warm, werr := bank.Execute(ctx, tw.warm, cmd, opts)
	ref, cerr := bank.Execute(ctx, tw.cold, cmd, cold)
	if fmt.Sprint(werr) != fmt.Sprint(cerr) {
		tw.t.Fatalf("%T: warm err %v, cold err %v", cmd, werr, cerr)
	}
	if len(warm.Events) != len(ref.Events) {
		tw.t.Fatalf("%T: warm recorded %d events, cold %d", cmd, len(warm.Events), len(ref.Events))
	}
	for i, w := range warm.Events {
		c := ref.Events[i]
		if w.Stream != c.Stream || w.Version != c.Version || w.Position != c.Position || w.Type != c.Type || string(w.Data) != string(c.Data) {
			tw.t.Errorf("%T: event %d warm %+v, cold %+v", cmd, i, w, c)
		}
	}
	if ref.Cache.String() != "" || ref.SnapshotSaved {
		tw.t.Errorf("the cold run used warm state: %+v", ref)
	}
	return warm, werr
}

func loadSnapshot(t *testing.T, s *sqlite.Store, key string) (eventlog.Snapshot, bool) {
	t.Helper()
	snap, found, err := s.LoadSnapshot(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return snap, found
}

func snapshotBalance(t *testing.T, snap eventlog.Snapshot, account string) int64 {
	t.Helper()
	var s bank.State
	if err := json.Unmarshal(snap.State, &s); err != nil {
		t.Fatalf("snapshot state %q: %v", snap.State, err)
	}
	return s.Account(account).Balance
}

func wantResult(t *testing.T, res executor.Result, outcome string, replayed int, saved bool) {
	t.Helper()
	if res.Cache.String() != outcome || res.Replayed != replayed || res.SnapshotSaved != saved {
		t.Errorf("Cache %q, Replayed %d, SnapshotSaved %v; want %q, %d, %v", res.Cache, res.Replayed, res.SnapshotSaved, outcome, replayed, saved)
	}
}

// withdrawV2 is a withdrawal whose state has another schema: it may never
// start from a snapshot of bank.StateSchema.
type withdrawV2 struct{ bank.Withdraw }

func (withdrawV2) SnapshotSchema() string { return "bank.State/v2" }

func TestWarmSnapshotSavedAndLoaded(t *testing.T) {
	tw := newTwin(t)
	opts := executor.Options{SnapshotThreshold: 10}
	key := snapshotKey(bank.CommandWithdraw, bank.StateSchema, "acc")
	balance := int64(8 * 9 / 2) // deposits 1..8
	tw.open("acc", 9)

	// 9 events replayed: below the threshold.
	res, err := tw.run(bank.Withdraw{Account: "acc", Amount: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	balance--
	wantResult(t, res, "", 9, false)
	if _, found := loadSnapshot(t, tw.warm, key); found {
		t.Fatal("a snapshot after a replay of 9")
	}

	// 10 events replayed: the state after the withdrawal is saved.
	res, err = tw.run(bank.Withdraw{Account: "acc", Amount: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	balance--
	wantResult(t, res, "", 10, true)
	snap, found := loadSnapshot(t, tw.warm, key)
	if !found || len(snap.Streams) != 1 || snap.Streams[0] != (eventlog.ExpectedVersion{Stream: bank.StreamOf("acc"), Version: 11}) {
		t.Fatalf("snapshot %+v, found %v; want one at version 11", snap, found)
	}
	if got := snapshotBalance(t, snap, "acc"); got != balance {
		t.Fatalf("snapshot balance %d, want %d", got, balance)
	}

	// Five more events; a later execution reads only those.
	tw.deposit("acc", 5)
	balance += 15
	res, err = tw.run(bank.Withdraw{Account: "acc", Amount: balance + 1}, opts)
	if !errors.Is(err, bank.ErrInsufficientFunds) {
		t.Fatalf("withdrawing more than the balance: %v", err)
	}
	wantResult(t, res, "snapshot", 5, false)
	res, err = tw.run(bank.Withdraw{Account: "acc", Amount: balance - 3}, opts)
	if err != nil {
		t.Fatal(err)
	}
	balance = 3
	wantResult(t, res, "snapshot", 5, false)

	// Another schema never loads it: a whole replay, and a snapshot of
	// its own that leaves the first one as it was.
	res, err = tw.run(withdrawV2{bank.Withdraw{Account: "acc", Amount: 1}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	balance--
	wantResult(t, res, "", 17, true)
	if v2, found := loadSnapshot(t, tw.warm, snapshotKey(bank.CommandWithdraw, "bank.State/v2", "acc")); !found || v2.Streams[0].Version != 18 || snapshotBalance(t, v2, "acc") != balance {
		t.Errorf("v2 snapshot %+v, found %v", v2, found)
	}
	if again, _ := loadSnapshot(t, tw.warm, key); again.Streams[0].Version != 11 || string(again.State) != string(snap.State) {
		t.Errorf("the v1 snapshot changed: %+v", again)
	}

	// The first schema still starts from its own snapshot.
	res, err = tw.run(bank.Withdraw{Account: "acc", Amount: balance + 1}, opts)
	if !errors.Is(err, bank.ErrInsufficientFunds) {
		t.Fatalf("withdrawing more than the balance: %v", err)
	}
	wantResult(t, res, "snapshot", 7, false)
	res, err = tw.run(bank.Withdraw{Account: "acc", Amount: balance}, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, res, "snapshot", 7, false)

	// A deposit has a key of its own: it replays everything.
	res, err = tw.run(bank.Deposit{Account: "acc", Amount: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, res, "", 19, true)
}

func TestWarmSnapshotGarbageIgnored(t *testing.T) {
	tw := newTwin(t)
	opts := executor.Options{SnapshotThreshold: 10}
	for i, garbage := range []string{"\x00\x01garbage", `{"Accounts":5}`, `[]`, `{"Accounts":{"g0":{"Balance":"x"}}}`} {
		account := fmt.Sprintf("g%d", i)
		tw.open(account, 13) // balance 78
		key := snapshotKey(bank.CommandWithdraw, bank.StateSchema, account)
		bad := eventlog.Snapshot{Key: key, Streams: []eventlog.ExpectedVersion{{Stream: bank.StreamOf(account), Version: 13}}, State: []byte(garbage)}
		if err := tw.warm.SaveSnapshot(context.Background(), bad); err != nil {
			t.Fatal(err)
		}

		res, err := tw.run(bank.Withdraw{Account: account, Amount: 79}, opts)
		if !errors.Is(err, bank.ErrInsufficientFunds) {
			t.Fatalf("%q: withdrawing more than the balance: %v", garbage, err)
		}
		wantResult(t, res, "", 13, false)
		res, err = tw.run(bank.Withdraw{Account: account, Amount: 78}, opts)
		if err != nil {
			t.Fatalf("%q: %v", garbage, err)
		}
		wantResult(t, res, "", 13, true)

		// The garbage was under the executor's key: it is replaced.
		snap, _ := loadSnapshot(t, tw.warm, key)
		if snap.Streams[0].Version != 14 || snapshotBalance(t, snap, account) != 0 {
			t.Errorf("%q: snapshot %+v after the withdrawal", garbage, snap)
		}
	}
}

func TestWarmSnapshotNeverGoesBack(t *testing.T) {
	store := openBankStore(t)
	ctx := context.Background()
	a, b := bank.StreamOf("a"), bank.StreamOf("b")
	save := func(state string, versions ...eventlog.ExpectedVersion) {
		t.Helper()
		if err := store.SaveSnapshot(ctx, eventlog.Snapshot{Key: "k", Streams: versions, State: []byte(state)}); err != nil {
			t.Fatal(err)
		}
	}
	want := func(state string) {
		t.Helper()
		if snap, found := loadSnapshot(t, store, "k"); !found || string(snap.State) != state {
			t.Errorf("snapshot %q, found %v; want %q", snap.State, found, state)
		}
	}
	save(`"ten"`, eventlog.ExpectedVersion{Stream: a, Version: 10})
	save(`"five"`, eventlog.ExpectedVersion{Stream: a, Version: 5})
	want(`"ten"`)
	save(`"nine"`, eventlog.ExpectedVersion{Stream: a, Version: 4}, eventlog.ExpectedVersion{Stream: b, Version: 5})
	want(`"ten"`)
	save(`"twelve"`, eventlog.ExpectedVersion{Stream: a, Version: 11}, eventlog.ExpectedVersion{Stream: b, Version: 1})
	want(`"twelve"`)

	// Through the executor: an execution that read less than the snapshot
	// covers does not replace it.
	tw := twin{t: t, warm: store, cold: openBankStore(t)}
	tw.open("acc", 20)
	opts := executor.Options{SnapshotThreshold: 10}
	key := snapshotKey(bank.CommandDeposit, bank.StateSchema, "acc")
	ahead := eventlog.Snapshot{Key: key, Streams: []eventlog.ExpectedVersion{{Stream: bank.StreamOf("acc"), Version: 1000}}, State: []byte(`{}`)}
	if err := store.SaveSnapshot(ctx, ahead); err != nil {
		t.Fatal(err)
	}
	res, err := tw.run(bank.Deposit{Account: "acc", Amount: 1}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed != 20 || res.Cache.String() != "" {
		t.Errorf("started from a snapshot ahead of the store: %+v", res)
	}
	if snap, _ := loadSnapshot(t, store, key); snap.Streams[0].Version != 1000 {
		t.Errorf("the snapshot went back to %+v", snap.Streams)
	}
}

func TestWarmSnapshotDisabled(t *testing.T) {
	tw := newTwin(t)
	tw.open("acc", 30)
	for _, opts := range []executor.Options{{SnapshotThreshold: -1}, {SnapshotThreshold: -1, Cache: cache.New(time.Minute, 1<<20)}} {
		for range 2 {
			res, err := tw.run(bank.Deposit{Account: "acc", Amount: 1}, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.SnapshotSaved {
				t.Errorf("saved a snapshot with threshold -1: %+v", res)
			}
		}
	}
	if _, found := loadSnapshot(t, tw.warm, snapshotKey(bank.CommandDeposit, bank.StateSchema, "acc")); found {
		t.Error("a snapshot was saved")
	}
}

// TestWarmConcurrentInstances runs two instances, each with its own cache,
// on one store: 16 goroutines share the first cache, 4 the second, all
// depositing 1 to the same few accounts.
func TestWarmConcurrentInstances(t *testing.T) {
	const (
		accounts = 3
		each     = 12
	)
	store := openBankStore(t)
	ctx := context.Background()
	name := func(i int) string { return fmt.Sprintf("c%d", i) }
	for i := range accounts {
		if _, err := bank.Execute(ctx, store, bank.OpenAccount{Account: name(i), Owner: "owner"}, cold); err != nil {
			t.Fatal(err)
		}
	}
	policy := executor.ExponentialBackoff{MaxRetries: 1000, Initial: time.Millisecond, Max: 20 * time.Millisecond, Jitter: 1}
	first, second := cache.New(time.Minute, 1<<20), cache.New(time.Minute, 1<<20)
	caches := make([]*cache.Cache, 0, 20)
	for range 16 {
		caches = append(caches, first)
	}
	for range 4 {
		caches = append(caches, second)
	}

	type deposit struct {
		account int
		version eventlog.Version
	}
	var wg sync.WaitGroup
	results := make(chan deposit, len(caches)*each)
	errs := make(chan error, len(caches))
	for g, c := range caches {
		wg.Go(func() {
			for i := range each {
				account := (g + i) % accounts
				res, err := bank.Execute(ctx, store, bank.Deposit{Account: name(account), Amount: 1}, executor.Options{Cache: c, Retry: policy})
				if err != nil {
					errs <- err
					return
				}
				if len(res.Events) != 1 || res.Cache.String() == "" {
					errs <- fmt.Errorf("result %+v", res)
					return
				}
				results <- deposit{account, res.Events[0].Version}
			}
		})
	}
	wg.Wait()
	close(errs)
	close(results)
	for err := range errs {
		t.Fatal(err)
	}

	want := make([]int, accounts)
	for g := range caches {
		for i := range each {
			want[(g+i)%accounts]++
		}
	}
	returned := map[deposit]bool{}
	for d := range results {
		if returned[d] {
			t.Errorf("version %d of %s returned twice", d.version, name(d.account))
		}
		returned[d] = true
	}
	if len(returned) != len(caches)*each {
		t.Errorf("%d deposits returned, want %d", len(returned), len(caches)*each)
	}
	codec := bank.NewCodec()
	for i := range accounts {
		var balance int64
		n := 0
		for r, err := range store.ReadStream(ctx, bank.StreamOf(name(i)), 0) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if r.Version != eventlog.Version(n) {
				t.Fatalf("%s: record %d has version %d", name(i), n, r.Version)
			}
			ev, err := codec.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := ev.Data.(bank.MoneyDeposited); ok {
				balance += d.Amount
			}
		}
		if n != want[i]+1 || balance != int64(want[i]) {
			t.Errorf("%s: %d events, balance %d; want %d and %d", name(i), n, balance, want[i]+1, want[i])
		}
	}

	// Every entry left in either cache is consistent with its version: the
	// balance of deposits of 1 after the opening is the version less one.
	for ci, c := range []*cache.Cache{first, second} {
		st := c.Stats()
		if st.Invalidations != 0 || st.Hits+st.PartialHits == 0 {
			t.Errorf("cache %d: %+v", ci, st)
		}
		for i := range accounts {
			e, ok := c.Get(cacheKey(bank.CommandDeposit, name(i)))
			if !ok {
				t.Errorf("cache %d has no entry for %s", ci, name(i))
				continue
			}
			s, ok := executor.CachedState[bank.State](e)
			if !ok || len(e.Streams) != 1 {
				t.Fatalf("cache %d entry %+v keeps no decoded state", ci, e)
			}
			if got, v := s.Account(name(i)).Balance, e.Streams[0].Version; got != int64(v)-1 {
				t.Errorf("cache %d: %s at version %d has balance %d", ci, name(i), v, got)
			}
		}
		t.Logf("cache %d: %+v", ci, st)
	}
}

// Without a cache and without admission, concurrent deposits on one long
// stream conflict and retry; every attempt, retries included, starts from
// the snapshot (caught up from it), so the events folded per command stay
// near the snapshot threshold instead of the stream's length.
func TestRetriesStartFromTheSnapshot(t *testing.T) {
	tw := newTwin(t)
	const threshold, history = 100, 10_000
	tw.open("hot", history)
	opts := executor.Options{SnapshotThreshold: threshold,
		Retry: executor.ExponentialBackoff{MaxRetries: 1000, Initial: time.Millisecond, Max: 5 * time.Millisecond, Jitter: 1}}
	if _, err := bank.Execute(context.Background(), tw.warm, bank.Deposit{Account: "hot", Amount: 1}, opts); err != nil {
		t.Fatal(err) // the whole replay, which saves the first snapshot
	}
	const callers, each = 8, 15
	var wg sync.WaitGroup
	var mu sync.Mutex
	folded, attempts := 0, 0
	for range callers {
		wg.Go(func() {
			for range each {
				res, err := bank.Execute(context.Background(), tw.warm, bank.Deposit{Account: "hot", Amount: 1}, opts)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				folded += res.Folded
				attempts += res.Attempts
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	perCommand := float64(folded) / (callers * each)
	t.Logf("%d commands, %d attempts, %.0f events folded per command (history %d, threshold %d)", callers*each, attempts, perCommand, history, threshold)
	if attempts == callers*each {
		t.Fatal("no command retried: the test does not exercise the retry path")
	}
	if perCommand >= 2*threshold {
		t.Fatalf("%.0f events folded per command, want under twice the snapshot threshold (%d)", perCommand, 2*threshold)
	}
}

// With the cache's doorkeeper (the default), a command whose stream set
// is new is not encoded into the cache; the second time it is, and the
// third is a hit.
func TestOneOffStreamSetsAreNotCached(t *testing.T) {
	tw := newTwin(t)
	for i := range 12 {
		tw.open(fmt.Sprintf("acc%d", i), 2)
	}
	c := cache.New(time.Minute, 1<<20)
	opts := executor.Options{Cache: c, SnapshotThreshold: -1}
	for i := range 6 { // six pairs, each once
		if _, err := bank.Execute(context.Background(), tw.warm, bank.Transfer{From: fmt.Sprintf("acc%d", 2*i), To: fmt.Sprintf("acc%d", 2*i+1), Amount: 1}, opts); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.Stats().Entries; n != 0 {
		t.Fatalf("%d entries after six one-off transfers, want none", n)
	}
	var outcomes []string
	for range 3 {
		res, err := bank.Execute(context.Background(), tw.warm, bank.Deposit{Account: "acc0", Amount: 1}, opts)
		if err != nil {
			t.Fatal(err)
		}
		outcomes = append(outcomes, res.Cache.String())
	}
	if fmt.Sprint(outcomes) != "[miss miss hit]" {
		t.Fatalf("three deposits on one account: %v, want [miss miss hit]", outcomes)
	}
}

// A cache hit of a state that can clone itself (bank.State) decodes
// nothing and folds into a clone: the cached value another command holds
// never changes, and warm results agree with cold ones.
func TestCachedStateIsNeverFoldedInto(t *testing.T) {
	tw := newTwin(t)
	tw.open("acc", 3)
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := executor.Options{Cache: c, SnapshotThreshold: -1}
	deposit := func(amount int64) executor.Result {
		t.Helper()
		res, err := bank.Execute(context.Background(), tw.warm, bank.Deposit{Account: "acc", Amount: amount}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bank.Execute(context.Background(), tw.cold, bank.Deposit{Account: "acc", Amount: amount}, cold); err != nil {
			t.Fatal(err)
		}
		return res
	}
	deposit(10) // cached
	key := cacheKey(bank.CommandDeposit, "acc")
	entry, ok := c.Get(key)
	if !ok {
		t.Fatal("no entry after a deposit")
	}
	held, ok := executor.CachedState[bank.State](entry)
	if !ok {
		t.Fatalf("the entry keeps no decoded state: %T", entry.Value)
	}
	before := held.Account("acc").Balance
	tw.deposit("acc", 1) // another writer: the next hit catches up one event
	if res := deposit(5); res.Cache.String() != "partial" {
		t.Fatalf("second deposit: cache %q, want partial", res.Cache)
	}
	if got := held.Account("acc").Balance; got != before {
		t.Fatalf("the cached state another command held changed from %d to %d", before, got)
	}
	// The state now cached is the warm store's truth, as a cold read finds it.
	entry, _ = c.Get(key)
	warmState, _ := executor.CachedState[bank.State](entry)
	warm := warmState.Account("acc").Balance
	var coldState bank.State
	codec := bank.NewCodec()
	for r, err := range tw.cold.ReadStream(context.Background(), bank.StreamOf("acc"), 0) {
		if err != nil {
			t.Fatal(err)
		}
		ev, err := codec.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		coldState.Apply(ev.Data)
	}
	if got := coldState.Account("acc").Balance; got != warm {
		t.Fatalf("cached balance %d, cold balance %d", warm, got)
	}
}
