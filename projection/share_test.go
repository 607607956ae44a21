package projection_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/projection"
)

// feedCounter counts the feed reads of a store.
type feedCounter struct {
	eventlog.Store
	reads atomic.Int64
}

func (f *feedCounter) ReadFeed(ctx context.Context, q eventlog.FeedQuery) ([]eventlog.Record, error) {
	f.reads.Add(1)
	return f.Store.ReadFeed(ctx, q)
}

// CatchUpAll reads each page of the feed once for all its projections,
// with the union of their types, and each projection applies exactly its
// own events of it and reaches the head.
func TestCatchUpAllSharesFeedPages(t *testing.T) {
	store := openStore(t, t.TempDir()+"/events.db")
	kinds := []string{"A", "B", "C"}
	recs := appendEvents(t, store, streamNames("s", 7), 1000, func(i int) string { return kinds[i%7%3] })
	counted := &feedCounter{Store: store}
	db, _ := newReadDB(t)
	all, a := newCounter("all"), newCounter("a")
	ab, c := newCounter("ab"), newCounter("c")
	r := newRunner(t, db, counted, projection.Options{BatchSize: 64}, all, filtered{a, []string{"A"}},
		filtered{ab, []string{"A", "B"}}, filtered{c, []string{"C"}})
	reports, err := r.CatchUpAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	of := func(types ...string) func(eventlog.Record) bool {
		return func(r eventlog.Record) bool {
			for _, t := range types {
				if r.Type == t {
					return true
				}
			}
			return false
		}
	}
	for i, keep := range []func(eventlog.Record) bool{nil, of("A"), of("A", "B"), of("C")} {
		name := r.Names()[i]
		if reports[i].Checkpoint != 1000 {
			t.Errorf("%s: report %+v, want checkpoint 1000", name, reports[i])
		}
		checkModel(t, db, name, expectModel(recs, keep))
	}
	// 16 pages of 64 (the last short) for four projections: one read of
	// each page when shared, 64 when not; a few more when a projection
	// runs so far ahead that its page was pushed out before the others
	// took it.
	if n := counted.reads.Load(); n > 32 {
		t.Errorf("%d feed reads for 16 pages", n)
	}
	t.Logf("%d feed reads", counted.reads.Load())
}
