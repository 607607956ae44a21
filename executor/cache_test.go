package executor

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
)

// spec describes a probe command; cmd builds it with its own record of the
// states Handle saw, so that a warm and a cold run can be compared.
type spec struct {
	streams []string
	handle  func(counterState) ([]Emit[counterEvent], error)
	schema  string // when set, the command is a Snapshotter
}

// snapProbe is a named probe that may be started from a snapshot.
type snapProbe struct {
	namedProbe
	schema string
}

func (s snapProbe) SnapshotSchema() string { return s.schema }

func (sp spec) cmd(seen *[]counterState) Command[counterState, counterEvent] {
	p := namedProbe{probe{streams: sids(sp.streams...), handle: sp.handle, seen: seen}}
	if sp.schema != "" {
		return snapProbe{namedProbe: p, schema: sp.schema}
	}
	return p
}

// countFolds decides an increment of A by the number of events folded, so
// that the event written shows how much state the decision was made on.
func countFolds(s counterState) ([]Emit[counterEvent], error) {
	return []Emit[counterEvent]{emitInc("A", s.Folds)}, nil
}

// run is the outcome of one execution in a world.
type run struct {
	res   Result
	err   error
	req   *eventlog.AppendRequest // the last append request, nil without one
	seen  []counterState
	trace []string
	reads []readCall
}

// execute runs the command sp describes in w, every append committed.
func (w *world) execute(sp spec, opts Options, snapshots bool) run {
	w.t.Helper()
	w.autoCommit = true
	w.trace, w.reads = nil, nil
	before := len(w.requests)
	var seen []counterState
	res, err := w.drive(newTestExecution(sp.cmd(&seen), opts), snapshots)
	r := run{res: res, err: err, seen: seen, trace: w.trace, reads: w.reads}
	if len(w.requests) > before {
		r.req = &w.requests[len(w.requests)-1]
	}
	return r
}

// clone returns a world with the same records and snapshots and no script.
func (w *world) clone() *world {
	c := newWorld(w.t)
	for s, rs := range w.streams {
		c.streams[s] = slices.Clone(rs)
	}
	c.snapshots = maps.Clone(w.snapshots)
	c.requests = slices.Clone(w.requests)
	return c
}

// cold runs sp on a copy of w without a cache or snapshots: the reference
// every warm execution must decide like.
func (w *world) cold(sp spec, opts Options) run {
	w.t.Helper()
	opts.Cache = nil
	return w.clone().execute(sp, opts, false)
}

func keyOf(sp spec) string {
	return newTestExecution(sp.cmd(nil), Options{Cache: cache.New(0, 0).AdmitEveryKey()}).key
}

func at(stream string, v eventlog.Version) eventlog.ExpectedVersion {
	return eventlog.ExpectedVersion{Stream: sid(stream), Version: v}
}

// foldAt folds the records of each stream up to its version, stream after
// stream, as a cold start reads them.
func foldAt(t *testing.T, w *world, versions ...eventlog.ExpectedVersion) counterState {
	t.Helper()
	codec := newCounterCodec()
	var s counterState
	for _, e := range versions {
		for _, r := range w.streams[e.Stream] {
			if r.Version > e.Version {
				break
			}
			ev, err := codec.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			applyCounter(&s, ev)
		}
	}
	return s
}

// entryAt is an entry at versions whose state is consistent with them.
func entryAt(t *testing.T, w *world, versions ...eventlog.ExpectedVersion) cache.Entry {
	t.Helper()
	return cache.Entry{Streams: versions, State: encodeState(t, foldAt(t, w, versions...))}
}

func encodeState(t *testing.T, s counterState) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// normal is s with its lists sorted: states folded in another stream order
// are equal when they folded the same events.
func normal(s counterState) counterState {
	s.Applied = slices.Sorted(slices.Values(s.Applied))
	s.Pointers = slices.SortedFunc(slices.Values(s.Pointers), func(a, b eventlog.StreamID) int {
		return strings.Compare(a.String(), b.String())
	})
	return s
}

func sortedExpected(ev []eventlog.ExpectedVersion) []eventlog.ExpectedVersion {
	return slices.SortedFunc(slices.Values(ev), func(a, b eventlog.ExpectedVersion) int {
		return strings.Compare(a.Stream.String(), b.Stream.String())
	})
}

// sameDecision checks that a warm run decided as the cold run did: on the
// same state, with the same events, expecting the same stream versions.
func sameDecision(t *testing.T, warm, cold run) {
	t.Helper()
	if fmt.Sprint(warm.err) != fmt.Sprint(cold.err) {
		t.Fatalf("warm err %v, cold err %v", warm.err, cold.err)
	}
	if len(warm.seen) == 0 || len(cold.seen) == 0 {
		t.Fatalf("Handle calls: warm %d, cold %d", len(warm.seen), len(cold.seen))
	}
	if w, c := normal(warm.seen[len(warm.seen)-1]), normal(cold.seen[len(cold.seen)-1]); !reflect.DeepEqual(w, c) {
		t.Errorf("Handle saw\n%+v warm\n%+v cold", w, c)
	}
	if (warm.req == nil) != (cold.req == nil) {
		t.Fatalf("warm request %v, cold request %v", warm.req, cold.req)
	}
	if warm.req != nil {
		if !reflect.DeepEqual(warm.req.Events, cold.req.Events) {
			t.Errorf("events\n%+v warm\n%+v cold", warm.req.Events, cold.req.Events)
		}
		if w, c := sortedExpected(warm.req.Expected), sortedExpected(cold.req.Expected); !reflect.DeepEqual(w, c) {
			t.Errorf("expected versions %s warm, %s cold", expectedString(w), expectedString(c))
		}
	}
	if !reflect.DeepEqual(warm.res.Events, cold.res.Events) {
		t.Errorf("recorded\n%+v warm\n%+v cold", warm.res.Events, cold.res.Events)
	}
}

// wantEntry checks that c holds under key an entry at versions (in any
// order) whose state folded exactly the events of w up to them.
func wantEntry(t *testing.T, c *cache.Cache, key string, w *world, versions ...eventlog.ExpectedVersion) {
	t.Helper()
	e, ok := c.Get(key)
	if !ok {
		t.Fatal("no entry")
	}
	if got, want := sortedExpected(e.Streams), sortedExpected(versions); !reflect.DeepEqual(got, want) {
		t.Errorf("entry at %s, want %s", expectedString(got), expectedString(want))
	}
	var got counterState
	if err := json.Unmarshal(e.State, &got); err != nil {
		t.Fatalf("entry state %q: %v", e.State, err)
	}
	if want := foldAt(t, w, versions...); !reflect.DeepEqual(normal(got), normal(want)) {
		t.Errorf("entry state\n%+v\nwant\n%+v", got, want)
	}
}

func wantStats(t *testing.T, c *cache.Cache, hits, partial, caughtUp, misses, invalidations uint64) {
	t.Helper()
	st := c.Stats()
	got := [5]uint64{st.Hits, st.PartialHits, st.CaughtUp, st.Misses, st.Invalidations}
	if want := [5]uint64{hits, partial, caughtUp, misses, invalidations}; got != want {
		t.Errorf("hits, partial hits, caught up, misses, invalidations = %v, want %v", got, want)
	}
}

func wantRun(t *testing.T, r run, outcome string, replayed int, trace ...string) {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.res.Cache.String() != outcome || r.res.Replayed != replayed {
		t.Errorf("Cache %q, Replayed %d; want %q, %d", r.res.Cache, r.res.Replayed, outcome, replayed)
	}
	if !slices.Equal(r.trace, trace) {
		t.Errorf("effects:\n got %s\nwant %s", strings.Join(r.trace, ", "), strings.Join(trace, ", "))
	}
}

func TestCacheMissThenHit(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}

	first := w.execute(sp, opts, false)
	wantRun(t, first, "miss", 5, "read A", "read B", "append A@3 B@2", "done")
	wantStats(t, c, 0, 0, 0, 1, 0)
	// Write-through: the entry holds the event just appended.
	wantEntry(t, c, keyOf(sp), w, at("A", 4), at("B", 2))

	for i := range 2 {
		cold := w.cold(sp, Options{})
		warm := w.execute(sp, opts, false)
		wantRun(t, warm, "hit", 0, "probe A B", fmt.Sprintf("append A@%d B@2", 4+i), "done")
		if len(warm.reads) != 0 {
			t.Errorf("a hit read %+v", warm.reads)
		}
		sameDecision(t, warm, cold)
		wantStats(t, c, uint64(i+1), 0, 0, 1, 0)
		wantEntry(t, c, keyOf(sp), w, at("A", eventlog.Version(5+i)), at("B", 2))
	}
}

func TestCachePartialHitReadsOnlyMovedStreams(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(sp, opts, false) // miss; the entry is at A@4 B@2

	w.add(rec(t, "B", 3, incremented{By: 7}), rec(t, "B", 4, incremented{By: 8}), rec(t, "B", 5, incremented{By: 9}))
	cold := w.cold(sp, Options{})
	warm := w.execute(sp, opts, false)
	wantRun(t, warm, "partial", 3, "probe A B", "read B after 2", "append A@4 B@5", "done")
	if len(warm.reads) != 1 || warm.reads[0].stream != sid("B") || warm.reads[0].after != 2 {
		t.Errorf("reads %+v, want B after 2 only", warm.reads)
	}
	sameDecision(t, warm, cold)
	wantStats(t, c, 0, 1, 3, 1, 0)
	wantEntry(t, c, keyOf(sp), w, at("A", 5), at("B", 5))

	again := w.execute(sp, opts, false)
	wantRun(t, again, "hit", 0, "probe A B", "append A@5 B@5", "done")
	wantStats(t, c, 1, 1, 3, 1, 0)
}

func TestCacheRetryAfterConflictRefreshesEntry(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c, Retry: FixedDelay{MaxRetries: 3, Wait: time.Millisecond}}
	w.execute(sp, opts, false) // the entry is at A@4 B@2

	// Another writer appends to B between the probe and the append.
	w.appends = append(w.appends, func(req eventlog.AppendRequest) (eventlog.AppendResult, error) {
		w.add(rec(t, "B", 3, incremented{By: 5}))
		return w.commit(req)
	})
	// The reference decides on the store as the retry finds it.
	ref := w.clone()
	ref.add(rec(t, "B", 3, incremented{By: 5}))
	cold := ref.cold(sp, Options{})

	warm := w.execute(sp, opts, false)
	wantRun(t, warm, "partial", 1,
		"probe A B", "append A@4 B@2", "sleep 1ms",
		"probe A B", "read B after 2", "append A@4 B@3", "done")
	if warm.res.Attempts != 2 {
		t.Errorf("Attempts %d, want 2", warm.res.Attempts)
	}
	sameDecision(t, warm, cold)
	// The first attempt was a hit, the retry a partial one.
	wantStats(t, c, 1, 1, 1, 1, 0)
	wantEntry(t, c, keyOf(sp), w, at("A", 5), at("B", 3))

	again := w.execute(sp, opts, false)
	wantRun(t, again, "hit", 0, "probe A B", "append A@5 B@3", "done")
}

func TestCacheDiscoveryAfterCatchUp(t *testing.T) {
	w := newWorld(t, incs(t, "A", 1), incs(t, "C", 3))
	sp := spec{streams: []string{"A"}, handle: countFolds}
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(sp, opts, false) // the entry is at A@2

	w.add(rec(t, "A", 3, pointed{To: "C"}))
	cold := w.cold(sp, Options{})
	warm := w.execute(sp, opts, false)
	wantRun(t, warm, "partial", 4, "probe A", "read A after 2", "read C", "append A@3 C@3", "done")
	if len(warm.reads) != 2 || warm.reads[1].stream != sid("C") || warm.reads[1].after != 0 {
		t.Errorf("reads %+v, want C read from its first event", warm.reads)
	}
	if !slices.Contains(warm.req.Expected, at("C", 3)) {
		t.Errorf("the append expects %s, not C@3", expectedString(warm.req.Expected))
	}
	sameDecision(t, warm, cold)
	wantStats(t, c, 0, 1, 4, 1, 0)
	wantEntry(t, c, keyOf(sp), w, at("A", 4), at("C", 3))

	again := w.execute(sp, opts, false)
	wantRun(t, again, "hit", 0, "probe A C", "append A@4 C@3", "done")
}

// TestCacheHitDiscoversWhatItsOwnEventsPointTo: the entry written through
// after an append folds the appended events, which may point to a stream
// the execution did not read. A later hit must read that stream, as a cold
// start would, and expect its version.
func TestCacheHitDiscoversWhatItsOwnEventsPointTo(t *testing.T) {
	w := newWorld(t, incs(t, "A", 1), incs(t, "C", 2))
	sp := spec{streams: []string{"A"}, handle: func(s counterState) ([]Emit[counterEvent], error) {
		if len(s.Pointers) == 0 {
			return []Emit[counterEvent]{{Stream: sid("A"), Event: pointed{To: "C"}}}, nil
		}
		return countFolds(s)
	}}
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	first := w.execute(sp, opts, false)
	wantRun(t, first, "miss", 1, "read A", "append A@1", "done")
	wantEntry(t, c, keyOf(sp), w, at("A", 2))

	cold := w.cold(sp, Options{})
	warm := w.execute(sp, opts, false)
	wantRun(t, warm, "partial", 2, "probe A", "read C", "append A@2 C@2", "done")
	sameDecision(t, warm, cold)
	wantStats(t, c, 0, 1, 2, 1, 0)
	wantEntry(t, c, keyOf(sp), w, at("A", 3), at("C", 2))
}

// TestCacheDamagedEntries puts entries into the cache that are damaged,
// stale or inconsistent with the command, and checks that each decides
// exactly as a cold start on the same store.
func TestCacheDamagedEntries(t *testing.T) {
	// A points to C on its fourth event; X is no stream of the command.
	// A cold start reads A, B and C: 9 events.
	records := [][]eventlog.Record{
		append(incs(t, "A", 3), rec(t, "A", 4, pointed{To: "C"})),
		incs(t, "B", 3), incs(t, "C", 2), incs(t, "X", 2),
	}
	type damage struct {
		name       string
		entry      func(w *world) cache.Entry
		maxStreams int
		outcome    string   // Result.Cache
		replayed   int      // Result.Replayed
		trace      []string // up to the append
		invalid    bool     // the entry is dropped and counted
	}
	current := []eventlog.ExpectedVersion{at("A", 4), at("B", 3), at("C", 2)}
	cold := []string{"read A", "read B", "read C"}
	probeCold := append([]string{"probe A B C"}, cold...)
	tests := []damage{
		{
			name:    "current (control)",
			entry:   func(w *world) cache.Entry { return entryAt(t, w, current...) },
			outcome: "hit", trace: []string{"probe A B C"},
		},
		{
			name:    "garbage state",
			entry:   func(*world) cache.Entry { return cache.Entry{Streams: current, State: []byte("\x00not json")} },
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name:    "state of the wrong shape",
			entry:   func(*world) cache.Entry { return cache.Entry{Streams: current, State: []byte(`{"Folds":"many"}`)} },
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name:    "state with an invalid stream id",
			entry:   func(*world) cache.Entry { return cache.Entry{Streams: current, State: []byte(`{"Pointers":["a*"]}`)} },
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name: "versions ahead of the store",
			entry: func(w *world) cache.Entry {
				e := entryAt(t, w, current...)
				e.Streams = []eventlog.ExpectedVersion{at("A", 4), at("B", 7), at("C", 2)}
				return e
			},
			outcome: "miss", replayed: 9, trace: probeCold, invalid: true,
		},
		{
			name: "one stream ahead, another behind",
			entry: func(w *world) cache.Entry {
				e := entryAt(t, w, at("A", 2), at("B", 3))
				e.Streams = []eventlog.ExpectedVersion{at("A", 2), at("B", 4)}
				return e
			},
			outcome: "miss", replayed: 9, trace: append([]string{"probe A B"}, cold...), invalid: true,
		},
		{
			name:    "aged",
			entry:   func(w *world) cache.Entry { return entryAt(t, w, at("A", 2), at("B", 1)) },
			outcome: "partial", replayed: 6, trace: []string{"probe A B", "read A after 2", "read B after 1", "read C"},
		},
		{
			name:    "missing a declared stream",
			entry:   func(w *world) cache.Entry { return entryAt(t, w, at("A", 4), at("C", 2)) },
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name:    "missing a discovered stream",
			entry:   func(w *world) cache.Entry { return entryAt(t, w, at("A", 4), at("B", 3)) },
			outcome: "partial", replayed: 2, trace: []string{"probe A B", "read C"},
		},
		{
			name:    "an extra stream",
			entry:   func(w *world) cache.Entry { return entryAt(t, w, append(current, at("X", 2))...) },
			outcome: "miss", replayed: 9, trace: append([]string{"probe A B C X"}, cold...), invalid: true,
		},
		{
			name:    "an extra stream that moved",
			entry:   func(w *world) cache.Entry { return entryAt(t, w, append(current, at("X", 1))...) },
			outcome: "miss", replayed: 9, trace: append([]string{"probe A B C X", "read X after 1"}, cold...), invalid: true,
		},
		{
			name:       "more streams than MaxStreams",
			entry:      func(w *world) cache.Entry { return entryAt(t, w, append(current, at("X", 2))...) },
			maxStreams: 3,
			outcome:    "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name: "a stream twice",
			entry: func(w *world) cache.Entry {
				e := entryAt(t, w, at("A", 2), at("B", 3), at("C", 2))
				e.Streams = []eventlog.ExpectedVersion{at("A", 2), at("B", 3), at("A", 2), at("C", 2)}
				return e
			},
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name: "an empty stream id",
			entry: func(w *world) cache.Entry {
				e := entryAt(t, w, current...)
				e.Streams = append(slices.Clone(current), eventlog.ExpectedVersion{})
				return e
			},
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
		{
			name:    "no streams",
			entry:   func(w *world) cache.Entry { return cache.Entry{State: entryAt(t, w, current...).State} },
			outcome: "miss", replayed: 9, trace: cold, invalid: true,
		},
	}
	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, records...)
			c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
			c.Put(keyOf(sp), tt.entry(w))
			opts := Options{Cache: c, MaxStreams: tt.maxStreams}

			reference := w.cold(sp, opts)
			if reference.err != nil || reference.req == nil || expectedString(reference.req.Expected) != "A@4 B@3 C@2" {
				t.Fatalf("cold run: %v, %+v", reference.err, reference.req)
			}
			warm := w.execute(sp, opts, false)
			wantRun(t, warm, tt.outcome, tt.replayed, slices.Concat(tt.trace, []string{"append " + expectedString(warm.req.Expected), "done"})...)
			sameDecision(t, warm, reference)

			st := c.Stats()
			if tt.invalid != (st.Invalidations == 1) || st.Invalidations > 1 {
				t.Errorf("%d invalidations, want the entry dropped: %v", st.Invalidations, tt.invalid)
			}
			if tt.invalid && st.Hits+st.PartialHits != 0 {
				t.Errorf("a dropped entry counted as a hit: %+v", st)
			}
			// Replaced: the entry now is the state after the append.
			wantEntry(t, c, keyOf(sp), w, at("A", 5), at("B", 3), at("C", 2))
			again := w.execute(sp, opts, false)
			wantRun(t, again, "hit", 0, "probe A B C", "append A@5 B@3 C@2", "done")
		})
	}
}

// TestCacheReplaysExactlyTheEventsBehind: an entry consistent with older
// versions costs exactly the events it is behind.
func TestCacheReplaysExactlyTheEventsBehind(t *testing.T) {
	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	for behindA := range 4 {
		for behindB := range 4 {
			t.Run(fmt.Sprintf("A-%d,B-%d", behindA, behindB), func(t *testing.T) {
				w := newWorld(t, incs(t, "A", 6), incs(t, "B", 5))
				c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
				c.Put(keyOf(sp), entryAt(t, w, at("A", eventlog.Version(6-behindA)), at("B", eventlog.Version(5-behindB))))
				reference := w.cold(sp, Options{})
				warm := w.execute(sp, Options{Cache: c}, false)
				n := behindA + behindB
				if warm.err != nil || warm.res.Replayed != n {
					t.Fatalf("replayed %d, want %d (err %v)", warm.res.Replayed, n, warm.err)
				}
				sameDecision(t, warm, reference)
				st := c.Stats()
				if n == 0 && (warm.res.Cache.String() != "hit" || st.Hits != 1) || n > 0 && (warm.res.Cache.String() != "partial" || st.PartialHits != 1 || st.CaughtUp != uint64(n)) {
					t.Errorf("Cache %q, stats %+v", warm.res.Cache, st)
				}
				for _, r := range warm.reads {
					if want := map[string]int{"A": 6 - behindA, "B": 5 - behindB}[r.stream.String()]; int(r.after) != want {
						t.Errorf("read %s after %d, want after %d", r.stream, r.after, want)
					}
				}
			})
		}
	}
}

// TestCacheSnapshotOnMiss: a command that is a Snapshotter, on a store that
// keeps snapshots, saves one after a long replay, and a new instance (an
// empty cache) starts from it.
func TestCacheSnapshotOnMiss(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	sp := spec{streams: []string{"A", "B"}, handle: countFolds, schema: "counter/v1"}
	first := w.execute(sp, Options{Cache: cache.New(time.Minute, 1<<20).AdmitEveryKey(), SnapshotThreshold: 5}, true)
	wantRun(t, first, "miss", 5, "load snapshot", "read A", "read B", "append A@3 B@2", "save snapshot A@4 B@2", "done")
	if !first.res.SnapshotSaved {
		t.Error("SnapshotSaved false")
	}

	w.add(rec(t, "B", 3, incremented{By: 1}))
	reference := w.cold(sp, Options{})
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	warm := w.execute(sp, Options{Cache: c, SnapshotThreshold: 5}, true)
	wantRun(t, warm, "snapshot", 1, "load snapshot", "probe A B", "read B after 2", "append A@4 B@3", "done")
	sameDecision(t, warm, reference)
	if warm.res.SnapshotSaved {
		t.Error("saved a snapshot after a replay of 1")
	}
	wantStats(t, c, 0, 0, 0, 1, 0)
	wantEntry(t, c, keyOf(sp), w, at("A", 5), at("B", 3))

	// A snapshot of another schema is never loaded.
	other := sp
	other.schema = "counter/v2"
	w.trace = nil
	fresh := w.execute(other, Options{SnapshotThreshold: -1}, true)
	wantRun(t, fresh, "", 8, "read A", "read B", "append A@5 B@3", "done")
	v2 := w.execute(other, Options{SnapshotThreshold: 100}, true)
	wantRun(t, v2, "", 9, "load snapshot", "read A", "read B", "append A@6 B@3", "done")
}

// TestCacheDroppedEntryIsDeleted: a damaged entry is deleted when it is
// found, even when the execution then writes no entry of its own.
func TestCacheDroppedEntryIsDeleted(t *testing.T) {
	sp := spec{streams: []string{"A", "B"}, handle: func(counterState) ([]Emit[counterEvent], error) { return nil, errLimit }}
	for name, entry := range map[string]func(w *world) cache.Entry{
		"garbage state": func(*world) cache.Entry {
			return cache.Entry{Streams: []eventlog.ExpectedVersion{at("A", 2), at("B", 1)}, State: []byte("garbage")}
		},
		"ahead of the store":        func(w *world) cache.Entry { return entryAt(t, w, at("A", 3), at("B", 1)) },
		"missing a declared stream": func(w *world) cache.Entry { return entryAt(t, w, at("A", 2)) },
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, incs(t, "A", 2), incs(t, "B", 1))
			c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
			c.Put(keyOf(sp), entry(w))
			reference := w.cold(sp, Options{})
			warm := w.execute(sp, Options{Cache: c}, false)
			if warm.err != errLimit {
				t.Fatalf("err %v, want errLimit", warm.err)
			}
			sameDecision(t, warm, reference)
			if _, ok := c.Get(keyOf(sp)); ok {
				t.Error("the damaged entry is still cached")
			}
			// What is left are the streams' events the cold read kept.
			if st := c.Stats(); st.Invalidations != 1 || st.Entries != 2 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestCacheIsCollected: a cache that is no longer referenced is garbage
// collected with its entries, and the item store's janitor goroutine ends.
func TestCacheIsCollected(t *testing.T) {
	runtime.GC()
	before := runtime.NumGoroutine()
	for i := range 50 {
		c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
		c.Put(fmt.Sprint(i), cache.Entry{Streams: []eventlog.ExpectedVersion{at("A", 1)}, State: []byte(`{}`)})
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before 50 caches were made and dropped", runtime.NumGoroutine(), before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
