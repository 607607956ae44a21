package executor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

func openStore(t *testing.T) *sqlite.Store { return openStoreWith(t, sqlite.Options{}) }

func openStoreWith(t *testing.T, opts sqlite.Options) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "events.db"), opts)
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

// seed appends events to stream directly, expecting its current version.
func seed(t *testing.T, store eventlog.Store, stream string, events ...counterEvent) []eventlog.Record {
	t.Helper()
	ctx := context.Background()
	versions, err := store.StreamVersions(ctx, sids(stream))
	if err != nil {
		t.Fatal(err)
	}
	codec := newCounterCodec()
	req := eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: sid(stream), Version: versions[0]}}}
	for _, e := range events {
		typ, data, err := codec.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		req.Events = append(req.Events, eventlog.Event{Stream: sid(stream), Type: typ, Data: data})
	}
	res, err := store.Append(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return res.Records
}

func readAll(t *testing.T, store eventlog.Store, stream string) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	for r, err := range store.ReadStream(context.Background(), sid(stream), 0) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func head(t *testing.T, store eventlog.Store) eventlog.Position {
	t.Helper()
	h, err := store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// increment adds By to a counter, refusing to pass Limit when it is set.
type increment struct {
	Counter string
	By      int
	Limit   int
}

func (c increment) CommandName() string                          { return "Increment" }
func (c increment) Streams() []eventlog.StreamID                 { return sids(c.Counter) }
func (c increment) Apply(s *counterState, e Event[counterEvent]) { applyCounter(s, e) }
func (c increment) Handle(s counterState) ([]Emit[counterEvent], error) {
	if c.Limit > 0 && s.Total+c.By > c.Limit {
		return nil, errLimit
	}
	return []Emit[counterEvent]{emitInc(c.Counter, c.By)}, nil
}

// move takes Amount from one counter to another and reads Audit without
// writing it. When Race is set, its first Handle appends to Audit directly,
// as a concurrent writer would between the read and the append.
type move struct {
	From, To, Audit string
	Amount          int
	Race            eventlog.Store
	calls           *atomic.Int32
}

func (c move) CommandName() string                          { return "Move" }
func (c move) Streams() []eventlog.StreamID                 { return sids(c.From, c.To, c.Audit) }
func (c move) Apply(s *counterState, e Event[counterEvent]) { applyCounter(s, e) }
func (c move) Handle(s counterState) ([]Emit[counterEvent], error) {
	if c.calls.Add(1) == 1 && c.Race != nil {
		if err := concurrentWrite(c.Race, c.Audit); err != nil {
			return nil, err
		}
	}
	return []Emit[counterEvent]{emitInc(c.From, -c.Amount), emitInc(c.To, c.Amount)}, nil
}

func concurrentWrite(store eventlog.Store, stream string) error {
	ctx := context.Background()
	versions, err := store.StreamVersions(ctx, sids(stream))
	if err != nil {
		return err
	}
	_, err = store.Append(ctx, eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: sid(stream), Version: versions[0]}},
		Events:   []eventlog.Event{{Stream: sid(stream), Type: "Incremented", Data: []byte(`{"by":1}`)}},
	})
	return err
}

// contested writes to Contested directly on every Handle, so that every
// attempt conflicts.
type contested struct {
	Counter, Contested string
	Store              eventlog.Store
	calls              *atomic.Int32
}

func (c contested) Streams() []eventlog.StreamID                 { return sids(c.Counter, c.Contested) }
func (c contested) Apply(s *counterState, e Event[counterEvent]) { applyCounter(s, e) }
func (c contested) Handle(counterState) ([]Emit[counterEvent], error) {
	c.calls.Add(1)
	if err := concurrentWrite(c.Store, c.Contested); err != nil {
		return nil, err
	}
	return []Emit[counterEvent]{emitInc(c.Counter, 1)}, nil
}

func TestExecuteMultiStreamAppend(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	codec := newCounterCodec()
	seed(t, store, "A", incremented{By: 10})
	seed(t, store, "B", incremented{By: 1})
	seed(t, store, "audit", incremented{By: 1})

	cmd := move{From: "A", To: "B", Audit: "audit", Amount: 3, calls: new(atomic.Int32)}
	res, err := Execute[counterState](ctx, store, codec, cmd, Options{Metadata: eventlog.Metadata{CorrelationID: "req-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 1 || res.Duplicate || len(res.Events) != 2 {
		t.Fatalf("result %+v", res)
	}
	a, b := res.Events[0], res.Events[1]
	if a.Stream != sid("A") || a.Version != 2 || b.Stream != sid("B") || b.Version != 2 || b.Position != a.Position+1 {
		t.Errorf("records %+v", res.Events)
	}
	for _, r := range res.Events {
		if r.Metadata.Command != "Move" || r.Metadata.CorrelationID != "req-1" || r.Metadata.EventID.String() == "00000000-0000-0000-0000-000000000000" {
			t.Errorf("metadata %+v", r.Metadata)
		}
	}
	if got := readAll(t, store, "audit"); len(got) != 1 {
		t.Errorf("the read-only stream has %d events, want 1", len(got))
	}

	// A conflict on the read-only stream, with no retry, writes neither
	// of the other streams.
	before := head(t, store)
	cmd = move{From: "A", To: "B", Audit: "audit", Amount: 3, Race: store, calls: new(atomic.Int32)}
	_, err = Execute[counterState](ctx, store, codec, cmd, Options{Retry: NoRetry{}})
	if !errors.Is(err, ErrConcurrency) {
		t.Fatalf("err %v, want ErrConcurrency", err)
	}
	if len(readAll(t, store, "A")) != 2 || len(readAll(t, store, "B")) != 2 || head(t, store) != before+1 {
		t.Errorf("a refused append wrote something")
	}
}

func TestExecuteRetriesWhenReadOnlyStreamChanges(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	seed(t, store, "A", incremented{By: 10})
	seed(t, store, "audit", incremented{By: 1})

	calls := new(atomic.Int32)
	var infos []RetryInfo
	opts := Options{
		Retry:   FixedDelay{MaxRetries: 3, Wait: time.Millisecond},
		OnRetry: func(i RetryInfo) { infos = append(infos, i) },
	}
	cmd := move{From: "A", To: "B", Audit: "audit", Amount: 4, Race: store, calls: calls}
	res, err := Execute[counterState](ctx, store, newCounterCodec(), cmd, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || calls.Load() != 2 {
		t.Errorf("Attempts %d, Handle calls %d; want 2 and 2", res.Attempts, calls.Load())
	}
	if len(infos) != 1 || infos[0].Attempt != 1 || infos[0].Delay != time.Millisecond {
		t.Fatalf("OnRetry got %+v", infos)
	}
	want := []eventlog.StreamConflict{{Stream: sid("audit"), Expected: 1, Actual: 2}}
	if c := infos[0].Conflict; c == nil || fmt.Sprint(c.Conflicts) != fmt.Sprint(want) {
		t.Errorf("conflict %+v, want %+v", infos[0].Conflict, want)
	}
	if a, b := readAll(t, store, "A"), readAll(t, store, "B"); len(a) != 2 || len(b) != 1 {
		t.Errorf("A has %d events, B %d; want 2 and 1", len(a), len(b))
	}
}

func TestExecuteCommandIDIsIdempotent(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	codec := newCounterCodec()
	cmd := increment{Counter: "C", By: 1, Limit: 1}
	opts := Options{CommandID: "inc-1"}

	first, err := Execute[counterState](ctx, store, codec, cmd, opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.Attempts != 1 || first.Duplicate || len(first.Events) != 1 || first.Events[0].Metadata.CommandID != "inc-1" {
		t.Fatalf("first result %+v", first)
	}
	before := head(t, store)

	// The limit is reached: run again without the key, the command fails.
	if _, err := Execute[counterState](ctx, store, codec, cmd, Options{}); !errors.Is(err, errLimit) {
		t.Fatalf("without the key: %v, want errLimit", err)
	}
	if _, err := Execute[counterState](ctx, store, codec, cmd, Options{CommandID: "inc-2"}); !errors.Is(err, errLimit) {
		t.Fatalf("with another key: %v, want errLimit", err)
	}

	again, err := Execute[counterState](ctx, store, codec, cmd, opts)
	if err != nil {
		t.Fatalf("with the same key: %v", err)
	}
	if !again.Duplicate || again.Attempts != 0 || len(again.Events) != 1 {
		t.Fatalf("second result %+v", again)
	}
	f, g := first.Events[0], again.Events[0]
	if g.Position != f.Position || g.Stream != f.Stream || g.Version != f.Version || g.Metadata != f.Metadata || g.Type != f.Type {
		t.Errorf("second result %+v, want %+v", g, f)
	}
	if head(t, store) != before || len(readAll(t, store, "C")) != 1 {
		t.Error("the duplicate appended something")
	}
}

func TestExecuteContextCancelledDuringBackoff(t *testing.T) {
	store := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := new(atomic.Int32)
	retries := 0
	opts := Options{
		Retry: FixedDelay{MaxRetries: 1, Wait: 5 * time.Second},
		OnRetry: func(RetryInfo) {
			retries++
			time.AfterFunc(20*time.Millisecond, cancel)
		},
	}
	start := time.Now()
	res, err := Execute[counterState](ctx, store, newCounterCodec(), contested{Counter: "C", Contested: "X", Store: store, calls: calls}, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 4*time.Second {
		t.Errorf("took %v to notice the cancellation", elapsed)
	}
	if res.Attempts != 1 || retries != 1 || calls.Load() != 1 {
		t.Errorf("result %+v, %d retries, %d Handle calls", res, retries, calls.Load())
	}
	if len(readAll(t, store, "C")) != 0 {
		t.Error("the command appended")
	}
}

func TestExecuteRetriesRunOut(t *testing.T) {
	store := openStore(t)
	calls := new(atomic.Int32)
	_, err := Execute[counterState](context.Background(), store, newCounterCodec(),
		contested{Counter: "C", Contested: "X", Store: store, calls: calls},
		Options{Retry: FixedDelay{MaxRetries: 2}})
	var ce *ConcurrencyError
	if !errors.As(err, &ce) || ce.Attempts != 3 || !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("err %v, want a ConcurrencyError after 3 attempts", err)
	}
	if calls.Load() != 3 || len(readAll(t, store, "C")) != 0 {
		t.Errorf("%d Handle calls, C has events", calls.Load())
	}
}

func TestExecuteDiscoveryAndLongStreams(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	long := make([]counterEvent, 1200)
	for i := range long {
		long[i] = incremented{By: 1}
	}
	seed(t, store, "A", pointed{To: "B"})
	seed(t, store, "B", long...)
	var seen []counterState
	cmd := probe{streams: sids("A"), seen: &seen, handle: func(s counterState) ([]Emit[counterEvent], error) {
		return []Emit[counterEvent]{emitInc("B", s.Total)}, nil
	}}
	res, err := Execute[counterState](ctx, store, newCounterCodec(), cmd, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if seen[0].Folds != 1201 || seen[0].Total != 1200 {
		t.Errorf("folded %d events, total %d", seen[0].Folds, seen[0].Total)
	}
	if len(res.Events) != 1 || res.Events[0].Stream != sid("B") || res.Events[0].Version != 1201 {
		t.Errorf("result %+v", res.Events)
	}
}

func TestExecuteNothingToAppend(t *testing.T) {
	store := openStore(t)
	seed(t, store, "A", incremented{By: 1})
	before := head(t, store)
	res, err := Execute[counterState](context.Background(), store, newCounterCodec(), probe{streams: sids("A", "B")}, Options{CommandID: "noop"})
	if err != nil || res.Attempts != 1 || res.Events != nil || res.Duplicate {
		t.Fatalf("result %+v, err %v", res, err)
	}
	if head(t, store) != before {
		t.Error("appended")
	}
}

func TestExecuteDecodeError(t *testing.T) {
	store := openStore(t)
	seed(t, store, "A", incremented{By: 1})
	if _, err := store.Append(context.Background(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: sid("A"), Version: 1}},
		Events:   []eventlog.Event{{Stream: sid("A"), Type: "Mystery", Data: []byte(`{}`)}},
	}); err != nil {
		t.Fatal(err)
	}
	_, err := Execute[counterState](context.Background(), store, newCounterCodec(), increment{Counter: "A", By: 1}, Options{})
	var de *DecodeError
	if !errors.As(err, &de) || de.Stream != sid("A") || de.Version != 2 || de.Type != "Mystery" {
		t.Fatalf("err %v, want a DecodeError at A version 2", err)
	}
	if len(readAll(t, store, "A")) != 2 {
		t.Error("appended")
	}
}

func TestExecuteClosedStore(t *testing.T) {
	store := openStore(t)
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := Execute[counterState](context.Background(), store, newCounterCodec(), increment{Counter: "A", By: 1}, Options{})
	if !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", err)
	}
}

func TestExecuteConcurrentIncrements(t *testing.T) {
	const workers, each = 16, 20
	store := openStoreWith(t, sqlite.Options{Synchronous: sqlite.SyncNormal})
	codec := newCounterCodec()
	policy := ExponentialBackoff{MaxRetries: 1000, Initial: 2 * time.Millisecond, Max: 50 * time.Millisecond, Jitter: 1}

	var wg sync.WaitGroup
	var retries atomic.Int64
	versions := make(chan eventlog.Version, workers*each)
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				res, err := Execute[counterState](context.Background(), store, codec, increment{Counter: "hot", By: 1}, Options{Retry: policy})
				if err != nil {
					errs <- err
					return
				}
				retries.Add(int64(res.Attempts - 1))
				versions <- res.Events[0].Version
			}
		})
	}
	wg.Wait()
	close(errs)
	close(versions)
	for err := range errs {
		t.Fatal(err)
	}
	seenVersion := map[eventlog.Version]bool{}
	for v := range versions {
		if seenVersion[v] {
			t.Errorf("version %d returned twice", v)
		}
		seenVersion[v] = true
	}
	records := readAll(t, store, "hot")
	if len(records) != workers*each || len(seenVersion) != workers*each {
		t.Fatalf("%d records, %d versions returned; want %d", len(records), len(seenVersion), workers*each)
	}
	total := 0
	for i, r := range records {
		if r.Version != eventlog.Version(i+1) {
			t.Fatalf("record %d has version %d", i, r.Version)
		}
		ev, err := codec.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		total += ev.Data.(incremented).By
	}
	if total != workers*each {
		t.Errorf("count %d, want %d", total, workers*each)
	}
	t.Logf("%d increments, %d retries", workers*each, retries.Load())
}
