package projection_test

import (
	"context"
	"errors"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/projection"
)

// A BatchProjector sees each batch once in one call while nothing fails.
func TestBatchProjectorWholeBatches(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 3), 250, nil)
	db, _ := newReadDB(t)
	b := &batchCounter{counter: newCounter("counts")}
	r := newRunner(t, db, store, projection.Options{BatchSize: 100}, b)
	rep, err := r.CatchUp(context.Background(), "counts", 0)
	if err != nil || rep.Applied != 250 || rep.Checkpoint != 250 {
		t.Fatalf("CatchUp %+v, %v", rep, err)
	}
	if calls, events := b.calls(); calls != 3 || events != 250 {
		t.Errorf("ApplyBatch called %d times with %d events, want 3 with 250", calls, events)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
}

// A failing batch is rolled back whole (ApplyBatch wrote the events before
// the failing one) and applied one event at a time with Apply, so each
// strategy meets the failing event alone.
func TestBatchProjectorFailure(t *testing.T) {
	t.Parallel()
	store, recs := sharedLog(t) // sharedEvents events
	for _, tc := range []struct {
		name     string
		policy   projection.FailurePolicy
		failures int // failures of position 150; < 0: always
		// what the first CatchUp must end with
		stopped    bool
		checkpoint eventlog.Position
		tries      int // Apply calls on position 150: the batch's and the isolated ones
		keep       func(eventlog.Record) bool
	}{
		{name: "stop", failures: -1, stopped: true, checkpoint: 149, tries: 2, keep: upTo(149)},
		{name: "skip", policy: projection.FailurePolicy{Strategy: projection.Skip}, failures: -1, checkpoint: sharedEvents, tries: 2,
			keep: func(r eventlog.Record) bool { return r.Position != 150 }},
		{name: "retry", policy: projection.FailurePolicy{Strategy: projection.Retry, Retries: 3, Backoff: 1}, failures: 2,
			checkpoint: sharedEvents, tries: 3, keep: nil},
		// The batch's failure is not a try: one isolated failure stops.
		{name: "stop transient", failures: 2, stopped: true, checkpoint: 149, tries: 2, keep: upTo(149)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, _ := newReadDB(t)
			b := &batchCounter{counter: newCounter("counts")}
			b.policy = tc.policy
			b.failAt(150, tc.failures)
			r := newRunner(t, db, store, projection.Options{BatchSize: 100}, b)
			rep, err := r.CatchUp(context.Background(), "counts", 0)
			var stopped *projection.StoppedError
			if got := errors.As(err, &stopped); got != tc.stopped || (!got && err != nil) {
				t.Fatalf("err %v, stopped %v", err, tc.stopped)
			}
			if tc.stopped && (stopped.Position != 150 || stopped.Tries != 1) {
				t.Errorf("stopped %+v, want at 150 after 1 isolated try", stopped)
			}
			if rep.Checkpoint != tc.checkpoint {
				t.Errorf("report %+v, want checkpoint %d", rep, tc.checkpoint)
			}
			if got := b.triesAt(150); got != tc.tries {
				t.Errorf("position 150 applied %d times, want %d", got, tc.tries)
			}
			checkModel(t, db, "counts", expectModel(recs, tc.keep))
		})
	}
}
