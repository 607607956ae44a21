package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// world is a recording fake store: it scripts the outcomes of the store
// calls an execution makes and records every call in trace, so that tests
// assert what an attempt asked the store, in order.
type world struct {
	t       *testing.T
	streams map[eventlog.StreamID][]eventlog.Record
	readErr map[eventlog.StreamID]error // yielded after the stream's records
	lookup  func() ([]eventlog.Record, bool, error)
	appends []func(eventlog.AppendRequest) (eventlog.AppendResult, error)

	trace    []string // every call, in order; hooks may add to it
	requests []eventlog.AppendRequest

	// Warm state: probes answer the streams' versions, snapshots are kept
	// as a store keeps them, and with autoCommit every append without a
	// scripted outcome goes to commit.
	probeErr   error
	afterProbe func() // called once after the next probe, then cleared
	snapshots  map[string]eventlog.Snapshot
	autoCommit bool
	reads      []readCall // every read, for its after
}

// readCall is one ReadStream call.
type readCall struct {
	stream eventlog.StreamID
	after  eventlog.Version
}

func newWorld(t *testing.T, records ...[]eventlog.Record) *world {
	w := &world{t: t, streams: map[eventlog.StreamID][]eventlog.Record{}, readErr: map[eventlog.StreamID]error{}}
	for _, rs := range records {
		for _, r := range rs {
			w.streams[r.Stream] = append(w.streams[r.Stream], r)
		}
	}
	return w
}

func (w *world) add(rs ...eventlog.Record) {
	for _, r := range rs {
		w.streams[r.Stream] = append(w.streams[r.Stream], r)
	}
}

// testCodec is shared by every test execution, as a domain shares one:
// the cache keeps streams' events per codec.
var testCodec = newCounterCodec()

// newTestExecution prepares cmd for a world; drive runs it there.
func newTestExecution(cmd Command[counterState, counterEvent], opts Options) *execution[counterState, counterEvent] {
	return newExecution[counterState, counterEvent](nil, testCodec, cmd, opts)
}

// withoutSnapshots hides the world's snapshot capability.
type withoutSnapshots struct{ eventlog.Store }

// drive runs x against w (with its snapshots when snapshots is given and
// true) and records "done" at the end.
func (w *world) drive(x *execution[counterState, counterEvent], snapshots ...bool) (Result, error) {
	w.t.Helper()
	x.store, x.snapshots = withoutSnapshots{w}, nil
	if len(snapshots) > 0 && snapshots[0] {
		if _, ok := x.cmd.(Snapshotter); ok && x.opts.SnapshotThreshold > 0 {
			x.store, x.snapshots = w, w
			x.key = cacheKey[counterState](x.opts.Metadata.Command, x.cmd)
		}
	}
	x.sleep = func(_ context.Context, d time.Duration) error {
		w.trace = append(w.trace, "sleep "+d.String())
		return nil
	}
	res, err := x.run(context.Background())
	w.trace = append(w.trace, "done")
	return res, err
}

func (w *world) LookupCommand(context.Context, string) ([]eventlog.Record, bool, error) {
	w.trace = append(w.trace, "lookup")
	if w.lookup == nil {
		w.t.Fatal("unexpected lookup")
	}
	return w.lookup()
}

func (w *world) ReadStream(_ context.Context, s eventlog.StreamID, after eventlog.Version) iter.Seq2[eventlog.Record, error] {
	if after != 0 {
		w.trace = append(w.trace, fmt.Sprintf("read %s after %d", s, after))
	} else {
		w.trace = append(w.trace, "read "+s.String())
	}
	w.reads = append(w.reads, readCall{stream: s, after: after})
	return func(yield func(eventlog.Record, error) bool) {
		for _, r := range w.streams[s] {
			if r.Version > after && !yield(r, nil) {
				return
			}
		}
		if err := w.readErr[s]; err != nil {
			yield(eventlog.Record{}, err)
		}
	}
}

func (w *world) StreamVersions(_ context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	names := make([]string, len(streams))
	for i, s := range streams {
		names[i] = s.String()
	}
	w.trace = append(w.trace, "probe "+strings.Join(names, " "))
	versions := make([]eventlog.Version, len(streams))
	for i, s := range streams {
		versions[i] = w.version(s)
	}
	if hook := w.afterProbe; hook != nil {
		w.afterProbe = nil
		hook()
	}
	return versions, w.probeErr
}

func (w *world) Append(_ context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	w.trace = append(w.trace, "append "+expectedString(req.Expected))
	w.requests = append(w.requests, req)
	next := w.commit
	switch {
	case len(w.appends) > 0:
		next = w.appends[0]
		w.appends = w.appends[1:]
	case !w.autoCommit:
		w.t.Fatalf("unexpected append %+v", req)
	}
	return next(req)
}

func (w *world) LoadSnapshot(_ context.Context, key string) (eventlog.Snapshot, bool, error) {
	w.trace = append(w.trace, "load snapshot")
	snap, found := w.snapshots[key]
	return snap, found, nil
}

func (w *world) SaveSnapshot(_ context.Context, snap eventlog.Snapshot) error {
	w.trace = append(w.trace, "save snapshot "+expectedString(snap.Streams))
	w.saveSnapshot(snap)
	return nil
}

func (w *world) ReadFeed(context.Context, eventlog.FeedQuery) ([]eventlog.Record, error) {
	w.t.Fatal("an execution read the feed")
	return nil, nil
}

func (w *world) Head(context.Context) (eventlog.Position, error) {
	w.t.Fatal("an execution read the head")
	return 0, nil
}

func (w *world) Close() error { return nil }

// version is the current version of s: its last record's, 0 when empty.
func (w *world) version(s eventlog.StreamID) eventlog.Version {
	rs := w.streams[s]
	if len(rs) == 0 {
		return 0
	}
	return rs[len(rs)-1].Version
}

// commit records req as a store would: it checks the request and every
// expected version, then appends the events after the streams' current
// versions.
func (w *world) commit(req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	if err := req.Validate(); err != nil {
		return eventlog.AppendResult{}, err
	}
	var conflicts []eventlog.StreamConflict
	for _, e := range req.Expected {
		if v := w.version(e.Stream); v != e.Version {
			conflicts = append(conflicts, eventlog.StreamConflict{Stream: e.Stream, Expected: e.Version, Actual: v})
		}
	}
	if len(conflicts) > 0 {
		return eventlog.AppendResult{}, &eventlog.ConflictError{Conflicts: conflicts}
	}
	recorded := 0
	for _, rs := range w.streams {
		recorded += len(rs)
	}
	var res eventlog.AppendResult
	for _, e := range req.Events {
		md := e.Metadata
		md.CommandID = req.CommandID
		r := eventlog.Record{
			Position: eventlog.Position(100_000 + recorded + len(res.Records)),
			Stream:   e.Stream, Version: w.version(e.Stream) + 1, Type: e.Type, Data: e.Data, Metadata: md,
		}
		w.add(r)
		res.Records = append(res.Records, r)
	}
	return res, nil
}

// saveSnapshot keeps snap unless the snapshot under its key covers more
// events.
func (w *world) saveSnapshot(snap eventlog.Snapshot) {
	total := func(s eventlog.Snapshot) (n eventlog.Version) {
		for _, e := range s.Streams {
			n += e.Version
		}
		return n
	}
	if w.snapshots == nil {
		w.snapshots = map[string]eventlog.Snapshot{}
	}
	if old, ok := w.snapshots[snap.Key]; !ok || total(snap) > total(old) {
		w.snapshots[snap.Key] = snap
	}
}

func (w *world) wantTrace(want ...string) {
	w.t.Helper()
	if !slices.Equal(w.trace, want) {
		w.t.Errorf("effects:\n got %s\nwant %s", strings.Join(w.trace, ", "), strings.Join(want, ", "))
	}
}

func expectedString(ev []eventlog.ExpectedVersion) string {
	parts := make([]string, len(ev))
	for i, e := range ev {
		parts[i] = fmt.Sprintf("%s@%d", e.Stream, e.Version)
	}
	return strings.Join(parts, " ")
}

// accept records the request's events as a store would.
func accept(req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	versions := map[eventlog.StreamID]eventlog.Version{}
	for _, e := range req.Expected {
		versions[e.Stream] = e.Version
	}
	var res eventlog.AppendResult
	for i, e := range req.Events {
		versions[e.Stream]++
		md := e.Metadata
		md.CommandID = req.CommandID
		res.Records = append(res.Records, eventlog.Record{
			Position: eventlog.Position(500 + i), Stream: e.Stream, Version: versions[e.Stream],
			Type: e.Type, Data: e.Data, Metadata: md,
		})
	}
	return res, nil
}

func conflict(stream string, expected, actual eventlog.Version) *eventlog.ConflictError {
	return &eventlog.ConflictError{Conflicts: []eventlog.StreamConflict{{Stream: sid(stream), Expected: expected, Actual: actual}}}
}

func failWith(err error) func(eventlog.AppendRequest) (eventlog.AppendResult, error) {
	return func(eventlog.AppendRequest) (eventlog.AppendResult, error) { return eventlog.AppendResult{}, err }
}

func incA(counterState) ([]Emit[counterEvent], error) {
	return []Emit[counterEvent]{emitInc("A", 1)}, nil
}

func TestAttemptStepByStep(t *testing.T) {
	var seen []counterState
	cmd := namedProbe{probe{streams: sids("A", "B"), seen: &seen, handle: incA}}
	w := newWorld(t, incs(t, "A", 2))
	var res eventlog.AppendResult
	w.appends = append(w.appends, func(req eventlog.AppendRequest) (eventlog.AppendResult, error) {
		res, _ = accept(req)
		return res, nil
	})
	got, err := w.drive(newTestExecution(cmd, Options{Metadata: eventlog.Metadata{CorrelationID: "corr"}}))
	if err != nil {
		t.Fatal(err)
	}
	w.wantTrace("read A", "read B", "append A@2 B@0", "done")
	want := eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: sid("A"), Version: 2}, {Stream: sid("B"), Version: 0}},
		Events: []eventlog.Event{{
			Stream: sid("A"), Type: "Incremented", Data: json.RawMessage(`{"by":1}`),
			Metadata: eventlog.Metadata{Command: "Probe", CorrelationID: "corr"},
		}},
	}
	if !reflect.DeepEqual(w.requests[0], want) {
		t.Fatalf("append %+v, want %+v", w.requests[0], want)
	}
	if len(seen) != 1 || seen[0].Total != 2 || seen[0].Folds != 2 {
		t.Fatalf("Handle saw %+v", seen)
	}
	if !reflect.DeepEqual(got, Result{Attempts: 1, Events: res.Records, Replayed: 2, Folded: 2}) {
		t.Fatalf("result %+v", got)
	}
}

func TestAttemptReadsDeclaredStreamsInOrderOnce(t *testing.T) {
	var seen []counterState
	w := newWorld(t, incs(t, "C", 1), incs(t, "A", 2))
	w.appends = append(w.appends, accept)
	cmd := probe{streams: sids("C", "A", "B"), seen: &seen, handle: incA}
	if _, err := w.drive(newTestExecution(cmd, Options{})); err != nil {
		t.Fatal(err)
	}
	w.wantTrace("read C", "read A", "read B", "append C@1 A@2 B@0", "done")
	if got, want := seen[0].Applied, []string{"C@1", "A@1", "A@2"}; !slices.Equal(got, want) {
		t.Errorf("folded %v, want %v", got, want)
	}
}

func TestAttemptDiscoversBreadthFirst(t *testing.T) {
	w := newWorld(t,
		[]eventlog.Record{rec(t, "A", 1, pointed{To: "B"}), rec(t, "A", 2, pointed{To: "C"})},
		[]eventlog.Record{rec(t, "B", 1, pointed{To: "D"})},
		incs(t, "C", 1), incs(t, "D", 4),
	)
	w.appends = append(w.appends, accept)
	if _, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{})); err != nil {
		t.Fatal(err)
	}
	w.wantTrace("read A", "read B", "read C", "read D", "append A@2 B@1 C@1 D@4", "done")
}

func TestAttemptReadsRediscoveredStreamsOnce(t *testing.T) {
	// A and X are declared. A points to B and C; B points to D, again to C
	// (queued, not read yet) and to A (read); C points to B (read) and to
	// X (declared). Five streams in all, so MaxStreams 5 is enough.
	w := newWorld(t,
		[]eventlog.Record{rec(t, "A", 1, pointed{To: "B"}), rec(t, "A", 2, pointed{To: "C"})},
		incs(t, "X", 1),
		[]eventlog.Record{rec(t, "B", 1, pointed{To: "D"}), rec(t, "B", 2, pointed{To: "C"}), rec(t, "B", 3, pointed{To: "A"})},
		[]eventlog.Record{rec(t, "C", 1, pointed{To: "B"}), rec(t, "C", 2, pointed{To: "X"})},
	)
	w.appends = append(w.appends, accept)
	var seen []counterState
	cmd := probe{streams: sids("A", "X"), seen: &seen, handle: incA}
	if _, err := w.drive(newTestExecution(cmd, Options{MaxStreams: 5})); err != nil {
		t.Fatal(err)
	}
	w.wantTrace("read A", "read X", "read B", "read C", "read D", "append A@2 X@1 B@3 C@2 D@0", "done")
	if seen[0].Folds != 8 {
		t.Errorf("folded %d events, want 8: %v", seen[0].Folds, seen[0].Applied)
	}
}

// TestAttemptDiscoveryMatchesBFS checks random pointer graphs against a
// reference breadth-first search, and MaxStreams at and below the number
// of reachable streams.
func TestAttemptDiscoveryMatchesBFS(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		n := 1 + rng.IntN(9)
		name := func(k int) string { return fmt.Sprintf("s%d", k) }
		graph := make([][]int, n)
		var records [][]eventlog.Record
		for k := range n {
			var rs []eventlog.Record
			for j := range rng.IntN(4) {
				to := rng.IntN(n)
				graph[k] = append(graph[k], to)
				rs = append(rs, rec(t, name(k), eventlog.Version(j+1), pointed{To: name(to)}))
			}
			records = append(records, rs)
		}
		declared := []int{0}
		for k := 1; k < n; k++ {
			if rng.IntN(4) == 0 {
				declared = append(declared, k)
			}
		}
		// Reference: declared streams in order, then breadth first.
		visited := map[int]bool{}
		var order []int
		queue := slices.Clone(declared)
		for _, d := range declared {
			visited[d] = true
		}
		for len(queue) > 0 {
			k := queue[0]
			queue = queue[1:]
			order = append(order, k)
			for _, to := range graph[k] {
				if !visited[to] {
					visited[to] = true
					queue = append(queue, to)
				}
			}
		}
		var want []string
		var expected []string
		for _, k := range order {
			want = append(want, "read "+name(k))
			expected = append(expected, fmt.Sprintf("%s@%d", name(k), len(graph[k])))
		}
		want = append(want, "append "+strings.Join(expected, " "), "done")

		var names []string
		for _, d := range declared {
			names = append(names, name(d))
		}
		handle := func(counterState) ([]Emit[counterEvent], error) {
			return []Emit[counterEvent]{emitInc(name(declared[0]), 1)}, nil
		}
		cmd := probe{streams: sids(names...), handle: handle}

		w := newWorld(t, records...)
		w.appends = append(w.appends, accept)
		if _, err := w.drive(newTestExecution(cmd, Options{MaxStreams: len(order)})); err != nil {
			t.Fatalf("graph %d %v declared %v: %v", i, graph, declared, err)
		}
		if !slices.Equal(w.trace, want) {
			t.Fatalf("graph %d %v declared %v:\n got %v\nwant %v", i, graph, declared, w.trace, want)
		}

		if len(order) > len(declared) {
			w := newWorld(t, records...)
			_, err := w.drive(newTestExecution(cmd, Options{MaxStreams: len(order) - 1}))
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("graph %d %v declared %v, MaxStreams %d: %v, want ErrInvalidCommand", i, graph, declared, len(order)-1, err)
			}
			if len(w.requests) != 0 {
				t.Fatalf("graph %d: appended with too many streams", i)
			}
		}
	}
}

func TestAttemptAppendRequest(t *testing.T) {
	w := newWorld(t,
		[]eventlog.Record{rec(t, "A", 1, incremented{By: 1}), rec(t, "A", 2, pointed{To: "C"})},
		incs(t, "C", 3),
	)
	w.lookup = func() ([]eventlog.Record, bool, error) { return nil, false, nil }
	w.appends = append(w.appends, accept)
	cmd := namedProbe{probe{streams: sids("A", "B"), handle: func(counterState) ([]Emit[counterEvent], error) {
		return []Emit[counterEvent]{emitInc("A", 1), emitInc("C", 2), emitInc("A", 3)}, nil
	}}}
	opts := Options{
		CommandID: "cmd-1",
		Metadata:  eventlog.Metadata{CorrelationID: "corr-1", CausationID: "cause-1"},
	}
	res, err := w.drive(newTestExecution(cmd, opts))
	if err != nil {
		t.Fatal(err)
	}
	w.wantTrace("lookup", "read A", "read B", "read C", "append A@2 B@0 C@3", "done")
	md := eventlog.Metadata{Command: "Probe", CorrelationID: "corr-1", CausationID: "cause-1"}
	want := eventlog.AppendRequest{
		CommandID: "cmd-1",
		Expected: []eventlog.ExpectedVersion{
			{Stream: sid("A"), Version: 2}, {Stream: sid("B"), Version: 0}, {Stream: sid("C"), Version: 3},
		},
		Events: []eventlog.Event{
			{Stream: sid("A"), Type: "Incremented", Data: json.RawMessage(`{"by":1}`), Metadata: md},
			{Stream: sid("C"), Type: "Incremented", Data: json.RawMessage(`{"by":2}`), Metadata: md},
			{Stream: sid("A"), Type: "Incremented", Data: json.RawMessage(`{"by":3}`), Metadata: md},
		},
	}
	if !reflect.DeepEqual(w.requests[0], want) {
		t.Errorf("request:\n got %+v\nwant %+v", w.requests[0], want)
	}
	if err := w.requests[0].Validate(); err != nil {
		t.Errorf("the request is not valid: %v", err)
	}
	recorded, _ := accept(want)
	if !reflect.DeepEqual(res, Result{Attempts: 1, Events: recorded.Records, Replayed: 5, Folded: 5}) {
		t.Errorf("result %+v", res)
	}
}

func TestAttemptCommandName(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command[counterState, counterEvent]
		opts string
		want string
	}{
		{"named", namedProbe{probe{streams: sids("A"), handle: incA}}, "", "Probe"},
		{"options override the name", namedProbe{probe{streams: sids("A"), handle: incA}}, "Override", "Override"},
		{"unnamed with options", plainCmd{streams: sids("A"), emit: []Emit[counterEvent]{emitInc("A", 1)}}, "FromOptions", "FromOptions"},
		{"unnamed", plainCmd{streams: sids("A"), emit: []Emit[counterEvent]{emitInc("A", 1)}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.appends = append(w.appends, accept)
			if _, err := w.drive(newTestExecution(tt.cmd, Options{Metadata: eventlog.Metadata{Command: tt.opts}})); err != nil {
				t.Fatal(err)
			}
			if got := w.requests[0].Events[0].Metadata.Command; got != tt.want {
				t.Errorf("Command %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAttemptEventForUnreadStream(t *testing.T) {
	w := newWorld(t, incs(t, "A", 1))
	cmd := probe{streams: sids("A"), handle: func(counterState) ([]Emit[counterEvent], error) {
		return []Emit[counterEvent]{emitInc("A", 1), emitInc("Z", 1)}, nil
	}}
	res, err := w.drive(newTestExecution(cmd, Options{}))
	var invalid *InvalidCommandError
	if !errors.As(err, &invalid) || !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), `"Z"`) {
		t.Fatalf("err %v, want an InvalidCommandError naming Z", err)
	}
	w.wantTrace("read A", "done")
	if res.Attempts != 1 || res.Events != nil {
		t.Errorf("result %+v", res)
	}
}

func TestAttemptInvalidCommands(t *testing.T) {
	many := func(n int) []eventlog.StreamID {
		out := make([]eventlog.StreamID, n)
		for i := range out {
			out[i] = sid(fmt.Sprintf("s%d", i))
		}
		return out
	}
	tests := []struct {
		name      string
		cmd       probe
		opts      Options
		records   [][]eventlog.Record
		wantTrace []string
	}{
		{name: "no streams", cmd: probe{}, wantTrace: []string{"done"}},
		{name: "empty streams", cmd: probe{streams: []eventlog.StreamID{}}, wantTrace: []string{"done"}},
		{name: "duplicate", cmd: probe{streams: sids("A", "B", "A")}, wantTrace: []string{"done"}},
		{name: "zero stream", cmd: probe{streams: []eventlog.StreamID{sid("A"), {}}}, wantTrace: []string{"done"}},
		{name: "zero stream with a command id", cmd: probe{streams: []eventlog.StreamID{{}}}, opts: Options{CommandID: "c"}, wantTrace: []string{"done"}},
		{name: "too many declared", cmd: probe{streams: sids("A", "B", "C")}, opts: Options{MaxStreams: 2}, wantTrace: []string{"done"}},
		{name: "more than DefaultMaxStreams declared", cmd: probe{streams: many(DefaultMaxStreams + 1)}, wantTrace: []string{"done"}},
		{
			name:      "too many discovered at once",
			cmd:       probe{streams: sids("A")},
			opts:      Options{MaxStreams: 3},
			records:   [][]eventlog.Record{{rec(t, "A", 1, pointed{To: "B"}), rec(t, "A", 2, pointed{To: "C"}), rec(t, "A", 3, pointed{To: "D"})}},
			wantTrace: []string{"read A", "done"},
		},
		{
			name: "too many discovered in a chain",
			cmd:  probe{streams: sids("A")},
			opts: Options{MaxStreams: 3},
			records: [][]eventlog.Record{
				{rec(t, "A", 1, pointed{To: "B"})}, {rec(t, "B", 1, pointed{To: "C"})}, {rec(t, "C", 1, pointed{To: "D"})},
			},
			wantTrace: []string{"read A", "read B", "read C", "done"},
		},
		{
			name: "discovered beyond the declared",
			cmd:  probe{streams: sids("A", "B")},
			opts: Options{MaxStreams: 2},
			records: [][]eventlog.Record{
				{rec(t, "B", 1, pointed{To: "C"})},
			},
			wantTrace: []string{"read A", "read B", "done"},
		},
		{
			name: "discovered zero stream",
			cmd: probe{streams: sids("A"), discover: func(counterState) []eventlog.StreamID {
				return []eventlog.StreamID{{}}
			}},
			wantTrace: []string{"read A", "done"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen []counterState
			tt.cmd.seen = &seen
			tt.cmd.handle = incA
			w := newWorld(t, tt.records...)
			w.lookup = func() ([]eventlog.Record, bool, error) { return nil, false, nil }
			_, err := w.drive(newTestExecution(tt.cmd, tt.opts))
			var invalid *InvalidCommandError
			if !errors.As(err, &invalid) || !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("err %v, want an InvalidCommandError", err)
			}
			w.wantTrace(tt.wantTrace...)
			if len(seen) != 0 {
				t.Errorf("Handle was called")
			}
		})
	}
}

func TestAttemptStreamLimits(t *testing.T) {
	names := make([]string, DefaultMaxStreams)
	for i := range names {
		names[i] = fmt.Sprintf("s%d", i)
	}
	w := newWorld(t)
	if _, err := w.drive(newTestExecution(probe{streams: sids(names...)}, Options{})); err != nil {
		t.Fatalf("DefaultMaxStreams streams: %v", err)
	}
	if len(w.trace) != DefaultMaxStreams+1 {
		t.Errorf("%d effects, want %d reads and done", len(w.trace), DefaultMaxStreams)
	}

	// Declared and discovered streams together exactly at the limit.
	w = newWorld(t, []eventlog.Record{rec(t, "A", 1, pointed{To: "C"}), rec(t, "A", 2, pointed{To: "B"})})
	if _, err := w.drive(newTestExecution(probe{streams: sids("A", "B")}, Options{MaxStreams: 3})); err != nil {
		t.Fatalf("three streams with MaxStreams 3: %v", err)
	}
	w.wantTrace("read A", "read B", "read C", "done")
}

func TestAttemptBusinessError(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3))
	cmd := probe{streams: sids("A"), handle: func(counterState) ([]Emit[counterEvent], error) { return nil, errLimit }}
	res, err := w.drive(newTestExecution(cmd, Options{}))
	if err != errLimit || !errors.Is(err, errLimit) {
		t.Fatalf("err %v, want errLimit as it is", err)
	}
	w.wantTrace("read A", "done")
	if !reflect.DeepEqual(res, Result{Attempts: 1, Replayed: 3, Folded: 3}) {
		t.Errorf("result %+v", res)
	}
}

func TestAttemptNothingToAppend(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3))
	var seen []counterState
	res, err := w.drive(newTestExecution(probe{streams: sids("A", "B"), seen: &seen}, Options{}))
	if err != nil {
		t.Fatal(err)
	}
	w.wantTrace("read A", "read B", "done")
	if !reflect.DeepEqual(res, Result{Attempts: 1, Replayed: 3, Folded: 3}) {
		t.Errorf("result %+v, want Attempts 1 and the 3 events replayed", res)
	}
	if len(seen) != 1 || seen[0].Total != 3 {
		t.Errorf("Handle saw %+v", seen)
	}
}

func TestAttemptRetriesWithFreshState(t *testing.T) {
	w := newWorld(t,
		[]eventlog.Record{rec(t, "A", 1, incremented{By: 1}), rec(t, "A", 2, pointed{To: "B"})},
		incs(t, "B", 1),
	)
	first := conflict("A", 2, 3)
	w.appends = append(w.appends,
		func(eventlog.AppendRequest) (eventlog.AppendResult, error) {
			w.add(rec(t, "A", 3, incremented{By: 5}))
			return eventlog.AppendResult{}, first
		},
		accept,
	)
	var seen []counterState
	var infos []RetryInfo
	opts := Options{
		Retry: FixedDelay{MaxRetries: 3, Wait: 7 * time.Millisecond},
		OnRetry: func(info RetryInfo) {
			infos = append(infos, info)
			w.trace = append(w.trace, "onRetry")
		},
	}
	res, err := w.drive(newTestExecution(probe{streams: sids("A"), seen: &seen, handle: incA}, opts))
	if err != nil {
		t.Fatal(err)
	}
	w.wantTrace(
		"read A", "read B", "append A@2 B@1", "onRetry", "sleep 7ms",
		"read A", "read B", "append A@3 B@1", "done",
	)
	if res.Attempts != 2 || len(res.Events) != 1 || res.Events[0].Version != 4 {
		t.Errorf("result %+v", res)
	}
	if len(infos) != 1 || infos[0].Attempt != 1 || infos[0].Delay != 7*time.Millisecond || infos[0].Conflict != first {
		t.Errorf("OnRetry got %+v", infos)
	}
	if len(seen) != 2 {
		t.Fatalf("Handle called %d times", len(seen))
	}
	if seen[0].Folds != 3 || seen[0].Total != 2 {
		t.Errorf("first attempt state %+v", seen[0])
	}
	if seen[1].Folds != 4 || seen[1].Total != 7 || len(seen[1].Pointers) != 1 {
		t.Errorf("second attempt state %+v, want a fresh fold of 4 events", seen[1])
	}
	if want := []string{"A@1", "A@2", "A@3", "B@1"}; !slices.Equal(seen[1].Applied, want) {
		t.Errorf("second attempt folded %v, want %v", seen[1].Applied, want)
	}
}

func TestAttemptRetriesRunOut(t *testing.T) {
	policy := ExponentialBackoff{MaxRetries: 3, Initial: 10 * time.Millisecond, Max: time.Second, Jitter: 0.2, Rand: func() float64 { return 0.5 }}
	conflicts := []*eventlog.ConflictError{conflict("A", 0, 1), conflict("A", 0, 2), conflict("A", 0, 3), conflict("A", 0, 4)}
	w := newWorld(t)
	for _, c := range conflicts {
		w.appends = append(w.appends, failWith(c))
	}
	var infos []RetryInfo
	opts := Options{Retry: policy, OnRetry: func(i RetryInfo) { infos = append(infos, i) }}
	res, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, opts))
	w.wantTrace(
		"read A", "append A@0", "sleep 10ms",
		"read A", "append A@0", "sleep 20ms",
		"read A", "append A@0", "sleep 40ms",
		"read A", "append A@0", "done",
	)
	var ce *ConcurrencyError
	if !errors.As(err, &ce) {
		t.Fatalf("err %v, want a ConcurrencyError", err)
	}
	if ce.Attempts != 4 || ce.Last != conflicts[3] {
		t.Errorf("ConcurrencyError %+v, want 4 attempts and the last conflict", ce)
	}
	if !errors.Is(err, ErrConcurrency) || !errors.Is(err, eventlog.ErrConflict) {
		t.Errorf("err %v does not match ErrConcurrency and eventlog.ErrConflict", err)
	}
	if res.Attempts != 4 {
		t.Errorf("result %+v", res)
	}
	for i, info := range infos {
		if info.Attempt != i+1 || info.Conflict != conflicts[i] || info.Delay != 10*time.Millisecond<<i {
			t.Errorf("OnRetry %d: %+v", i, info)
		}
	}
	if len(infos) != 3 {
		t.Errorf("OnRetry called %d times, want 3", len(infos))
	}
}

func TestAttemptNoRetry(t *testing.T) {
	w := newWorld(t)
	w.appends = append(w.appends, failWith(conflict("A", 0, 1)))
	called := false
	res, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{Retry: NoRetry{}, OnRetry: func(RetryInfo) { called = true }}))
	var ce *ConcurrencyError
	if !errors.As(err, &ce) || ce.Attempts != 1 || res.Attempts != 1 {
		t.Fatalf("err %v, result %+v, want a ConcurrencyError after 1 attempt", err, res)
	}
	if called {
		t.Error("OnRetry called without a retry")
	}
	w.wantTrace("read A", "append A@0", "done")
}

func TestAttemptDefaultRetryPolicy(t *testing.T) {
	w := newWorld(t)
	for range DefaultMaxRetries + 1 {
		w.appends = append(w.appends, failWith(conflict("A", 0, 1)))
	}
	var delays []time.Duration
	_, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{OnRetry: func(i RetryInfo) { delays = append(delays, i.Delay) }}))
	var ce *ConcurrencyError
	if !errors.As(err, &ce) || ce.Attempts != DefaultMaxRetries+1 {
		t.Fatalf("err %v, want a ConcurrencyError after %d attempts", err, DefaultMaxRetries+1)
	}
	if len(delays) != DefaultMaxRetries {
		t.Fatalf("%d retries, want %d", len(delays), DefaultMaxRetries)
	}
	for i, d := range delays {
		base := DefaultInitialDelay << i
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("retry %d waited %v, want %v ±20%%", i+1, d, base)
		}
	}
}

func TestAttemptAppendErrorIsNotRetried(t *testing.T) {
	diskFull := errors.New("disk full")
	for _, injected := range []error{
		diskFull,
		fmt.Errorf("store: %w", diskFull),
		&eventlog.InvalidError{What: "event 0", Reason: "is bad"},
		eventlog.ErrClosed,
		context.DeadlineExceeded,
	} {
		w := newWorld(t)
		w.appends = append(w.appends, failWith(injected))
		called := false
		res, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{OnRetry: func(RetryInfo) { called = true }}))
		if !errors.Is(err, injected) || err == injected {
			t.Errorf("err %v, want %v wrapped", err, injected)
		}
		if errors.Is(err, ErrConcurrency) || called {
			t.Errorf("%v was treated as a conflict", injected)
		}
		if res.Attempts != 1 {
			t.Errorf("result %+v", res)
		}
		w.wantTrace("read A", "append A@0", "done")
	}
}

func TestAttemptReadErrorIsNotRetried(t *testing.T) {
	injected := errors.New("connection reset")
	w := newWorld(t, incs(t, "A", 1), incs(t, "B", 2))
	w.readErr[sid("B")] = injected
	var seen []counterState
	res, err := w.drive(newTestExecution(probe{streams: sids("A", "B", "C"), seen: &seen, handle: incA}, Options{}))
	if !errors.Is(err, injected) || err == injected || !strings.Contains(err.Error(), `"B"`) {
		t.Fatalf("err %v, want %v wrapped and naming stream B", err, injected)
	}
	w.wantTrace("read A", "read B", "done")
	if res.Attempts != 1 || len(seen) != 0 {
		t.Errorf("result %+v, Handle calls %d", res, len(seen))
	}
}

func TestAttemptLookupError(t *testing.T) {
	injected := errors.New("connection reset")
	w := newWorld(t)
	w.lookup = func() ([]eventlog.Record, bool, error) { return nil, false, injected }
	_, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{CommandID: "c"}))
	if !errors.Is(err, injected) || err == injected {
		t.Fatalf("err %v, want %v wrapped", err, injected)
	}
	w.wantTrace("lookup", "done")
}

func TestAttemptDecodeError(t *testing.T) {
	tests := []struct {
		name    string
		bad     eventlog.Record
		wantErr func(error) bool
	}{
		{"unknown type", rawRec("B", 2, "Mystery", `{}`), func(err error) bool { return errors.Is(err, ErrUnknownEventType) }},
		{"bad JSON", rawRec("B", 2, "Incremented", `{"by":`), func(err error) bool {
			var syntax *json.SyntaxError
			return errors.As(err, &syntax) || strings.Contains(err.Error(), "JSON")
		}},
		{"wrong JSON type", rawRec("B", 2, "Incremented", `{"by":"two"}`), func(err error) bool {
			var typ *json.UnmarshalTypeError
			return errors.As(err, &typ)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, incs(t, "A", 1), []eventlog.Record{rec(t, "B", 1, incremented{By: 1}), tt.bad})
			called := false
			res, err := w.drive(newTestExecution(probe{streams: sids("A", "B"), handle: incA}, Options{OnRetry: func(RetryInfo) { called = true }}))
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err %v, want a DecodeError", err)
			}
			if de.Stream != sid("B") || de.Version != 2 || de.Type != tt.bad.Type {
				t.Errorf("DecodeError %+v, want stream B version 2 type %s", de, tt.bad.Type)
			}
			for _, part := range []string{`"B"`, "version 2", tt.bad.Type} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("%q does not mention %s", err, part)
				}
			}
			if !tt.wantErr(err) {
				t.Errorf("err %v does not wrap the cause", err)
			}
			w.wantTrace("read A", "read B", "done")
			if called || res.Attempts != 1 {
				t.Errorf("retried: result %+v", res)
			}
		})
	}
}

func TestAttemptEncodeError(t *testing.T) {
	w := newWorld(t)
	cmd := probe{streams: sids("A"), handle: func(counterState) ([]Emit[counterEvent], error) {
		return []Emit[counterEvent]{{Stream: sid("A"), Event: unregistered{}}}, nil
	}}
	_, err := w.drive(newTestExecution(cmd, Options{}))
	if !errors.Is(err, ErrUnknownEventType) {
		t.Fatalf("err %v, want ErrUnknownEventType", err)
	}
	w.wantTrace("read A", "done")
}

func TestAttemptCommandIDFound(t *testing.T) {
	recorded := []eventlog.Record{rec(t, "A", 4, incremented{By: 1}), rec(t, "B", 1, incremented{By: 1})}
	recorded[0].Metadata.CommandID = "cmd-1"
	recorded[1].Metadata.CommandID = "cmd-1"
	w := newWorld(t, incs(t, "A", 7))
	w.lookup = func() ([]eventlog.Record, bool, error) { return recorded, true, nil }
	var seen []counterState
	res, err := w.drive(newTestExecution(probe{streams: sids("A", "B"), seen: &seen, handle: incA}, Options{CommandID: "cmd-1"}))
	if err != nil {
		t.Fatal(err)
	}
	w.wantTrace("lookup", "done")
	if !reflect.DeepEqual(res, Result{Events: recorded, Duplicate: true}) {
		t.Errorf("result %+v", res)
	}
	if len(seen) != 0 {
		t.Error("Handle was called")
	}
}

func TestAttemptCommandIDNotFound(t *testing.T) {
	w := newWorld(t)
	w.lookup = func() ([]eventlog.Record, bool, error) { return nil, false, nil }
	w.appends = append(w.appends, accept)
	res, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{CommandID: "cmd-1"}))
	if err != nil {
		t.Fatal(err)
	}
	w.wantTrace("lookup", "read A", "append A@0", "done")
	if w.requests[0].CommandID != "cmd-1" || res.Duplicate || res.Attempts != 1 {
		t.Errorf("request %+v, result %+v", w.requests[0], res)
	}
}

func TestAttemptDuplicateOnAppend(t *testing.T) {
	recorded := []eventlog.Record{rec(t, "A", 1, incremented{By: 1})}
	w := newWorld(t)
	w.lookup = func() ([]eventlog.Record, bool, error) { return nil, false, nil }
	w.appends = append(w.appends, func(eventlog.AppendRequest) (eventlog.AppendResult, error) {
		return eventlog.AppendResult{Records: recorded, Duplicate: true}, nil
	})
	res, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{CommandID: "cmd-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res, Result{Attempts: 0, Events: recorded, Duplicate: true}) {
		t.Errorf("result %+v, want the first execution's events and 0 attempts", res)
	}
}

// A keyed execution that loses the race to another with the same key sees
// that execution's events in its state, so Handle refuses; the key is then
// looked up again and the first execution's events answer.
func TestAttemptFailedDecisionLooksTheKeyUpAgain(t *testing.T) {
	recorded := []eventlog.Record{rec(t, "A", 1, incremented{By: 1})}
	for _, committedMeanwhile := range []bool{true, false} {
		w := newWorld(t, incs(t, "A", 1))
		lookups := 0
		w.lookup = func() ([]eventlog.Record, bool, error) {
			lookups++
			if lookups == 2 && committedMeanwhile {
				return recorded, true, nil
			}
			return nil, false, nil
		}
		refuse := errors.New("refused: already done")
		cmd := probe{streams: sids("A"), handle: func(counterState) ([]Emit[counterEvent], error) { return nil, refuse }}
		res, err := w.drive(newTestExecution(cmd, Options{CommandID: "cmd-1"}))
		w.wantTrace("lookup", "read A", "lookup", "done")
		if committedMeanwhile {
			if err != nil || !res.Duplicate || res.Attempts != 0 || !reflect.DeepEqual(res.Events, recorded) {
				t.Errorf("committed meanwhile: %+v, %v; want the first execution's events", res, err)
			}
		} else if !errors.Is(err, refuse) || res.Duplicate {
			t.Errorf("not committed: %+v, %v; want Handle's error", res, err)
		}
	}
}

// Without a key a refusal is final at once: no second look-up.
func TestAttemptFailedDecisionWithoutKey(t *testing.T) {
	w := newWorld(t, incs(t, "A", 1))
	refuse := errors.New("refused")
	cmd := probe{streams: sids("A"), handle: func(counterState) ([]Emit[counterEvent], error) { return nil, refuse }}
	if _, err := w.drive(newTestExecution(cmd, Options{})); !errors.Is(err, refuse) {
		t.Fatal(err)
	}
	w.wantTrace("read A", "done")
}

func TestAttemptInvalidCommandID(t *testing.T) {
	w := newWorld(t)
	_, err := w.drive(newTestExecution(probe{streams: sids("A"), handle: incA}, Options{CommandID: strings.Repeat("x", eventlog.MaxCommandIDLength+1)}))
	if !errors.Is(err, eventlog.ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
	w.wantTrace("done")
}
