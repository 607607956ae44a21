package executor

import (
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cache"
)

// TestStreamEventsNewCombinationReadsNothing: once A and B were read by
// commands of their own, a command over both folds them from memory: it
// probes their versions and reads nothing, and decides as a cold start.
func TestStreamEventsNewCombinationReadsNothing(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	wantRun(t, w.execute(spec{streams: []string{"A"}, handle: countFolds}, opts, false), "miss", 3, "read A", "append A@3", "done")
	wantRun(t, w.execute(spec{streams: []string{"B"}, handle: noEvents}, opts, false), "miss", 2, "read B", "done")

	both := spec{streams: []string{"B", "A"}, handle: countFolds}
	cold := w.cold(both, Options{})
	warm := w.execute(both, opts, false)
	// A has the event the first command appended (written through).
	wantRun(t, warm, "miss", 0, "probe B A", "append B@2 A@4", "done")
	if warm.res.Recalled != 6 || warm.res.Folded != 6 {
		t.Errorf("recalled %d, folded %d; want 6 from memory", warm.res.Recalled, warm.res.Folded)
	}
	sameDecision(t, warm, cold)
}

// TestStreamEventsCatchUpWhatMoved: a stream another writer moved is folded
// from memory up to the cached version and read from the store after it;
// the events read are kept too.
func TestStreamEventsCatchUpWhatMoved(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(spec{streams: []string{"A"}, handle: noEvents}, opts, false)
	w.execute(spec{streams: []string{"B"}, handle: noEvents}, opts, false)
	w.add(rec(t, "A", 4, incremented{By: 5}), rec(t, "A", 5, incremented{By: 6}))

	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	cold := w.cold(sp, Options{})
	warm := w.execute(sp, opts, false)
	wantRun(t, warm, "miss", 2, "probe A B", "read A after 3", "append A@5 B@2", "done")
	if warm.res.Recalled != 5 {
		t.Errorf("recalled %d, want 5", warm.res.Recalled)
	}
	sameDecision(t, warm, cold)

	// A's log now ends at 6 (read, then written through): another
	// combination reads nothing.
	other := spec{streams: []string{"B", "A"}, handle: noEvents}
	cold = w.cold(other, Options{})
	warm = w.execute(other, opts, false)
	wantRun(t, warm, "miss", 0, "probe B A", "done")
	sameDecision(t, warm, cold)
}

// TestStreamEventsAheadOfTheStoreAreDropped: cached events beyond the
// store's version are not from this log: they are forgotten and the stream
// is read from the store.
func TestStreamEventsAheadOfTheStoreAreDropped(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3))
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(spec{streams: []string{"A"}, handle: noEvents}, opts, false)
	w.streams[sid("A")] = w.streams[sid("A")][:2] // the log was replaced by a shorter history

	sp := spec{streams: []string{"A", "C"}, handle: countFolds}
	cold := w.cold(sp, Options{})
	warm := w.execute(sp, opts, false)
	// The first probe, for the declared streams, is checked again before the
	// events are dropped.
	wantRun(t, warm, "miss", 2, "probe A", "probe A", "read A", "read C", "append A@2 C@0", "done")
	sameDecision(t, warm, cold)
	if st := c.Stats(); st.Invalidations != 1 {
		t.Errorf("invalidations %d, want 1", st.Invalidations)
	}
}

// TestStreamEventsGrownSinceTheProbe: when another command extends a
// stream's cached events between an attempt's probe and its fold, the
// attempt probes that stream again and folds them all; the events are not
// taken for another log's and dropped.
func TestStreamEventsGrownSinceTheProbe(t *testing.T) {
	w := newWorld(t, incs(t, "A", 3), incs(t, "B", 2))
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(spec{streams: []string{"A"}, handle: noEvents}, opts, false)
	w.execute(spec{streams: []string{"B"}, handle: noEvents}, opts, false)
	w.afterProbe = func() {
		// Another command appends to A and writes its event through.
		inner := newWorld(t)
		inner.streams, inner.autoCommit = w.streams, true
		if _, err := inner.drive(newTestExecution(spec{streams: []string{"A"}, handle: incA}.cmd(nil), opts)); err != nil {
			t.Fatal(err)
		}
	}
	sp := spec{streams: []string{"A", "B"}, handle: countFolds}
	opts.Retry = ExponentialBackoff{MaxRetries: 1, Initial: time.Millisecond, Max: time.Millisecond}
	warm := w.execute(sp, opts, false)
	wantRun(t, warm, "miss", 0, "probe A B", "probe A", "append A@4 B@2", "done")
	if st := c.Stats(); st.Invalidations != 0 {
		t.Errorf("%d invalidations: the grown events were dropped", st.Invalidations)
	}
	if warm.res.Recalled != 6 {
		t.Errorf("recalled %d events, want 6", warm.res.Recalled)
	}
}

// TestStreamEventsOnlyShortStreams: a stream longer than
// MaxCachedStreamEvents is not kept; it is read from the store each time.
func TestStreamEventsOnlyShortStreams(t *testing.T) {
	w := newWorld(t, incs(t, "A", MaxCachedStreamEvents+1), incs(t, "B", 1))
	c := cache.New(time.Minute, 64<<20).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(spec{streams: []string{"A"}, handle: noEvents}, opts, false)
	w.execute(spec{streams: []string{"B"}, handle: noEvents}, opts, false)
	warm := w.execute(spec{streams: []string{"A", "B"}, handle: noEvents}, opts, false)
	wantRun(t, warm, "miss", MaxCachedStreamEvents+1, "probe B", "read A", "done")
}

// TestStreamEventsCostAgainstTheCap: kept events count against the cap,
// and are evicted like states.
func TestStreamEventsCostAgainstTheCap(t *testing.T) {
	w := newWorld(t, incs(t, "A", 10), incs(t, "B", 10))
	c := cache.New(time.Minute, 4<<10).AdmitEveryKey()
	opts := Options{Cache: c}
	w.execute(spec{streams: []string{"A"}, handle: noEvents}, opts, false)
	if st := c.Stats(); st.Bytes < 10*eventOverhead {
		t.Fatalf("10 events cost %d bytes", st.Bytes)
	}
	w.execute(spec{streams: []string{"B"}, handle: noEvents}, opts, false)
	if st := c.Stats(); st.Bytes > 4<<10 || st.Evictions == 0 {
		t.Fatalf("stats %+v: over the cap, or nothing evicted", st)
	}
}

func noEvents(counterState) ([]Emit[counterEvent], error) { return nil, nil }

// TestSnapshotsWaitForTheDoorkeeper: with a cache, a long replay saves a
// snapshot only once its stream set was seen before (a snapshot is a
// write); without a cache, at once.
func TestSnapshotsWaitForTheDoorkeeper(t *testing.T) {
	sp := spec{streams: []string{"A"}, handle: noEvents, schema: "v1"}
	w := newWorld(t, incs(t, "A", DefaultSnapshotThreshold+5))
	c := cache.New(time.Minute, 64<<20)
	first := w.execute(sp, Options{Cache: c}, true)
	wantRun(t, first, "miss", DefaultSnapshotThreshold+5, "load snapshot", "read A", "done")
	second := w.execute(sp, Options{Cache: c}, true)
	wantRun(t, second, "miss", DefaultSnapshotThreshold+5, "load snapshot", "read A", "save snapshot A@105", "done")

	w = newWorld(t, incs(t, "A", DefaultSnapshotThreshold+5))
	alone := w.execute(sp, Options{}, true)
	wantRun(t, alone, "", DefaultSnapshotThreshold+5, "load snapshot", "read A", "save snapshot A@105", "done")
}
