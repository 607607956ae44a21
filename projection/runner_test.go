package projection_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/projection"
)

// The shared log: 2,000 events over 20 streams, written once and only read
// by the tests that use it.
const sharedEvents = 2000

var shared struct {
	once sync.Once
	dir  string
	recs []eventlog.Record
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// sharedLog returns the shared event log, opened for this test.
func sharedLog(t *testing.T) (*sqlite.Store, []eventlog.Record) {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "projection-test-"); shared.err != nil {
			return
		}
		s, err := sqlite.Open(context.Background(), filepath.Join(shared.dir, "events.db"), storeOptions)
		if err != nil {
			shared.err = err
			return
		}
		defer func() { _ = s.Close() }()
		shared.recs = appendEvents(t, s, streamNames("acct", 20), sharedEvents, nil)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return openStore(t, filepath.Join(shared.dir, "events.db")), shared.recs
}

func newLog(t *testing.T) *sqlite.Store {
	return openStore(t, filepath.Join(t.TempDir(), "events.db"))
}

func TestExactlyOnceAcrossBatches(t *testing.T) {
	t.Parallel()
	store, recs := sharedLog(t)
	db, _ := newReadDB(t)
	c := newCounter("counts")
	r := newRunner(t, db, store, projection.Options{BatchSize: 100}, c)

	rep, err := r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := projection.Report{Name: "counts", Applied: sharedEvents, Checkpoint: sharedEvents, Head: sharedEvents}
	if rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
	if got := checkpoint(t, r, "counts"); got != sharedEvents {
		t.Errorf("checkpoint %d, want %d", got, sharedEvents)
	}
	// Batch size: 20 transactions of 100 events each.
	sizes := c.batchSizes()
	if len(sizes) != 20 || slices.ContainsFunc(sizes, func(n int) bool { return n != 100 }) {
		t.Errorf("events per transaction: %v, want 20 × 100", sizes)
	}

	// Caught up: a second run does nothing.
	rep, err = r.CatchUp(context.Background(), "counts", 0)
	if err != nil || rep.Applied != 0 || rep.Checkpoint != sharedEvents {
		t.Errorf("second run: %+v, %v", rep, err)
	}
	if len(c.batchSizes()) != 20 {
		t.Errorf("second run opened a batch")
	}
}

// Without a BatchSize, transactions take DefaultBatchSize events: a log
// of two and a half of them takes three.
func TestBatchSizeDefault(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("acct", 20), 2*projection.DefaultBatchSize+projection.DefaultBatchSize/2, nil)
	db, _ := newReadDB(t)
	c := newCounter("counts")
	r := newRunner(t, db, store, projection.Options{}, c)
	if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
		t.Fatal(err)
	}
	if got, want := c.batchSizes(), []int{projection.DefaultBatchSize, projection.DefaultBatchSize, projection.DefaultBatchSize / 2}; !slices.Equal(got, want) {
		t.Errorf("events per transaction: %v, want %v", got, want)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
}

// A run that ends in the middle of batch 13 (positions 1,201 to 1,300),
// then a second run: every event is applied exactly once.
func TestCrashMidBatch(t *testing.T) {
	t.Parallel()
	const crashAt = 1234
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		store, recs := sharedLog(t)
		db, _ := newReadDB(t)
		c := newCounter("counts")
		c.setHook(func(_ context.Context, _ *sql.Tx, r eventlog.Record) error {
			if r.Position == crashAt {
				panic("crash")
			}
			return nil
		})
		r := newRunner(t, db, store, projection.Options{BatchSize: 100, Owner: "first"}, c)
		func() {
			defer func() {
				if p := recover(); p != "crash" {
					t.Fatalf("recovered %v, want the projector's panic", p)
				}
			}()
			_, _ = r.CatchUp(context.Background(), "counts", 0)
		}()
		if got := checkpoint(t, r, "counts"); got != 1200 {
			t.Errorf("checkpoint after the panic %d, want 1200", got)
		}
		checkModel(t, db, "counts", expectModel(recs, upTo(1200)))

		// The lease was given back: another runner goes on at once.
		c2 := newCounter("counts")
		r2 := newRunner(t, db, store, projection.Options{BatchSize: 100, Owner: "second"}, c2)
		rep, err := r2.CatchUp(context.Background(), "counts", 0)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Applied != sharedEvents-1200 || rep.Checkpoint != sharedEvents {
			t.Errorf("second run %+v", rep)
		}
		checkModel(t, db, "counts", expectModel(recs, nil))
	})
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		store, recs := sharedLog(t)
		db, _ := newReadDB(t)
		c := newCounter("counts")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c.setHook(func(_ context.Context, _ *sql.Tx, r eventlog.Record) error {
			if r.Position == crashAt {
				cancel()
			}
			return nil
		})
		r := newRunner(t, db, store, projection.Options{BatchSize: 100}, c)
		rep, err := r.CatchUp(ctx, "counts", 0)
		if err != nil {
			t.Fatalf("cancelled after progress: %v, want nil", err)
		}
		if rep.Applied != 1200 || rep.Checkpoint != 1200 || rep.Head != sharedEvents {
			t.Errorf("report %+v, want 1,200 applied", rep)
		}
		checkModel(t, db, "counts", expectModel(recs, upTo(1200)))
		c.setHook(nil)
		if rep, err = r.CatchUp(context.Background(), "counts", 0); err != nil || rep.Applied != 800 {
			t.Fatalf("second run %+v, %v", rep, err)
		}
		checkModel(t, db, "counts", expectModel(recs, nil))
	})
	t.Run("stop", func(t *testing.T) {
		t.Parallel()
		store, recs := sharedLog(t)
		db, _ := newReadDB(t)
		c := newCounter("counts")
		c.failAt(crashAt, 1)
		r := newRunner(t, db, store, projection.Options{BatchSize: 100}, c)
		rep, err := r.CatchUp(context.Background(), "counts", 0)
		if !errors.Is(err, projection.ErrProjectionStopped) {
			t.Fatalf("err %v, want ErrProjectionStopped", err)
		}
		if rep.Applied != crashAt-1 || rep.Checkpoint != crashAt-1 {
			t.Errorf("report %+v", rep)
		}
		checkModel(t, db, "counts", expectModel(recs, upTo(crashAt-1)))
		if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
			t.Fatal(err)
		}
		checkModel(t, db, "counts", expectModel(recs, nil))
		if got := checkpoint(t, r, "counts"); got != sharedEvents {
			t.Errorf("checkpoint %d, want %d", got, sharedEvents)
		}
	})
}

func TestRetry(t *testing.T) {
	t.Parallel()
	t.Run("transient", func(t *testing.T) {
		t.Parallel()
		store := newLog(t)
		recs := appendEvents(t, store, streamNames("s", 3), 120, nil)
		db, _ := newReadDB(t)
		c := newCounter("counts")
		c.policy = projection.FailurePolicy{Strategy: projection.Retry, Retries: 3, Backoff: time.Millisecond}
		c.failAt(50, 2)
		r := newRunner(t, db, store, projection.Options{BatchSize: 40}, c)
		rep, err := r.CatchUp(context.Background(), "counts", 0)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Applied != 120 || rep.Skipped != 0 || rep.Checkpoint != 120 {
			t.Errorf("report %+v", rep)
		}
		if got := c.triesAt(50); got != 3 {
			t.Errorf("position 50 tried %d times, want 3", got)
		}
		checkModel(t, db, "counts", expectModel(recs, nil))
	})
	t.Run("exhausted", func(t *testing.T) {
		t.Parallel()
		store := newLog(t)
		recs := appendEvents(t, store, streamNames("s", 3), 120, nil)
		db, _ := newReadDB(t)
		c := newCounter("counts")
		c.policy = projection.FailurePolicy{Strategy: projection.Retry, Retries: 2, Backoff: 10 * time.Millisecond}
		c.failAt(50, -1)
		r := newRunner(t, db, store, projection.Options{BatchSize: 40}, c)
		start := time.Now()
		rep, err := r.CatchUp(context.Background(), "counts", 0)
		elapsed := time.Since(start)
		var stopped *projection.StoppedError
		if !errors.As(err, &stopped) || !errors.Is(err, projection.ErrProjectionStopped) || !errors.Is(err, errBoom) {
			t.Fatalf("err %v, want a StoppedError wrapping ErrProjectionStopped and the event's error", err)
		}
		if stopped.Position != 50 || stopped.Tries != 3 || stopped.Type != "Counted" || stopped.Projection != "counts" ||
			stopped.Stream != recs[49].Stream {
			t.Errorf("stopped %+v", stopped)
		}
		for _, s := range []string{"position 50", `"Counted"`, "boom"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not name %s", err, s)
			}
		}
		if elapsed < 30*time.Millisecond {
			t.Errorf("three tries took %v; the waits (10ms, 20ms) were not doubled", elapsed)
		}
		if got := c.triesAt(50); got != 3 {
			t.Errorf("position 50 tried %d times, want 3", got)
		}
		if rep.Checkpoint != 49 || rep.Applied != 49 {
			t.Errorf("report %+v", rep)
		}
		checkModel(t, db, "counts", expectModel(recs, upTo(49)))
	})
}

func TestSkip(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 4), 300, nil)
	db, _ := newReadDB(t)
	c := newCounter("counts")
	c.policy = projection.FailurePolicy{Strategy: projection.Skip}
	c.failAt(10, -1)
	c.failAt(220, -1)
	r := newRunner(t, db, store, projection.Options{BatchSize: 50}, c)
	before := time.Now()
	rep, err := r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Applied != 298 || rep.Skipped != 2 || rep.Checkpoint != 300 {
		t.Errorf("report %+v", rep)
	}
	notSkipped := func(r eventlog.Record) bool { return r.Position != 10 && r.Position != 220 }
	checkModel(t, db, "counts", expectModel(recs, notSkipped))

	dead, err := r.DeadLetters(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dead))
	}
	for i, pos := range []eventlog.Position{10, 220} {
		d, rec := dead[i], recs[pos-1]
		if d.Projection != "counts" || d.Position != pos || d.Stream != rec.Stream.String() || d.Version != rec.Version ||
			d.Type != "Counted" || !strings.Contains(d.Error, "boom") || d.At.Before(before.Add(-time.Second)) {
			t.Errorf("dead letter %d: %+v", i, d)
		}
	}
	if one, err := r.DeadLetters(context.Background(), "counts", 1); err != nil || len(one) != 1 || one[0].Position != 10 {
		t.Errorf("DeadLetters(limit 1) = %+v, %v", one, err)
	}
	st := statusOf(t, r, "counts")
	if st.DeadLetters != 2 || st.Lag != 0 || st.Checkpoint != 300 {
		t.Errorf("status %+v", st)
	}

	// New events: the skipped ones are not tried again.
	more := appendEvents(t, store, streamNames("s", 4), 20, nil)
	if rep, err = r.CatchUp(context.Background(), "counts", 0); err != nil || rep.Applied != 20 || rep.Skipped != 0 {
		t.Fatalf("second run %+v, %v", rep, err)
	}
	if got := c.triesAt(10); got != 1 {
		t.Errorf("skipped event tried %d times", got)
	}
	checkModel(t, db, "counts", expectModel(append(recs, more...), notSkipped))
}

func TestStop(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 4), 300, nil)
	db, _ := newReadDB(t)
	c := newCounter("counts") // no PolicyProvider default: Stop
	c.failAt(150, 1)
	r := newRunner(t, db, store, projection.Options{BatchSize: 100}, c)
	rep, err := r.CatchUp(context.Background(), "counts", 0)
	var stopped *projection.StoppedError
	if !errors.As(err, &stopped) || stopped.Position != 150 || stopped.Tries != 1 || !errors.Is(err, errBoom) {
		t.Fatalf("err %v, want a stop at position 150 after 1 try", err)
	}
	if rep.Checkpoint != 149 || rep.Applied != 149 {
		t.Errorf("report %+v", rep)
	}
	if got := checkpoint(t, r, "counts"); got != 149 {
		t.Errorf("checkpoint %d, want 149", got)
	}
	// The failed event's own writes were rolled back with its savepoint.
	checkModel(t, db, "counts", expectModel(recs, upTo(149)))
	if st := statusOf(t, r, "counts"); st.DeadLetters != 0 || st.Lag != 151 {
		t.Errorf("status %+v", st)
	}

	rep, err = r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Applied != 151 || rep.Checkpoint != 300 {
		t.Errorf("second run %+v", rep)
	}
	if got := c.triesAt(150); got != 2 {
		t.Errorf("position 150 tried %d times, want 2", got)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
}

func TestTypeFilter(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	// 400 events of which every third is a Deposit, then 100 Withdrawals.
	recs := appendEvents(t, store, streamNames("s", 5), 500, func(i int) string {
		if i < 400 && i%3 == 0 {
			return "Deposit"
		}
		return "Withdrawal"
	})
	isDeposit := func(r eventlog.Record) bool { return r.Type == "Deposit" }
	db, _ := newReadDB(t)
	c := newCounter("deposits")
	f := filtered{counter: c, types: []string{"Deposit"}}
	r := newRunner(t, db, store, projection.Options{BatchSize: 50}, f)

	// Up to a position between two deposits: the checkpoint stops there.
	rep, err := r.CatchUp(context.Background(), "deposits", 251)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint != 251 {
		t.Errorf("checkpoint %d, want 251", rep.Checkpoint)
	}
	checkModel(t, db, "deposits", expectModel(recs, func(r eventlog.Record) bool { return isDeposit(r) && r.Position <= 251 }))

	rep, err = r.CatchUp(context.Background(), "deposits", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint != 500 {
		t.Errorf("checkpoint %d, want 500 (the head)", rep.Checkpoint)
	}
	checkModel(t, db, "deposits", expectModel(recs, isDeposit))
	if st := statusOf(t, r, "deposits"); st.Lag != 0 || st.Head != 500 {
		t.Errorf("status %+v, want lag 0", st)
	}
	// Only deposits reached the projector, in full batches of 50 while
	// there were more than 50 left.
	if got := c.batchSizes(); got[0] != 50 {
		t.Errorf("events per transaction %v", got)
	}

	// Only events of other types since: the lag still reaches 0.
	appendEvents(t, store, streamNames("s", 5), 30, func(int) string { return "Withdrawal" })
	if rep, err = r.CatchUp(context.Background(), "deposits", 0); err != nil || rep.Applied != 0 || rep.Checkpoint != 530 {
		t.Errorf("run over other types only: %+v, %v", rep, err)
	}
	if st := statusOf(t, r, "deposits"); st.Lag != 0 {
		t.Errorf("status %+v, want lag 0", st)
	}
}

func TestUntilAndStatus(t *testing.T) {
	t.Parallel()
	store, recs := sharedLog(t)
	db, _ := newReadDB(t)
	a, b := newCounter("a"), newCounter("b")
	r := newRunner(t, db, store, projection.Options{BatchSize: 100}, a, b)
	if got := r.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Names() = %v", got)
	}
	if r.DB() != db {
		t.Error("DB() is not the database given")
	}

	all, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []projection.Status{
		{Name: "a", Head: sharedEvents, Lag: sharedEvents},
		{Name: "b", Head: sharedEvents, Lag: sharedEvents},
	}
	if !slices.Equal(all, want) {
		t.Errorf("status %+v, want %+v", all, want)
	}

	rep, err := r.CatchUp(context.Background(), "a", 777)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint != 777 || rep.Applied != 777 || rep.Head != sharedEvents {
		t.Errorf("report %+v", rep)
	}
	checkModel(t, db, "a", expectModel(recs, upTo(777)))
	if st := statusOf(t, r, "a"); st.Checkpoint != 777 || st.Lag != sharedEvents-777 {
		t.Errorf("status %+v", st)
	}
	// Already there: nothing to do, even for an earlier position.
	if rep, err := r.CatchUp(context.Background(), "a", 500); err != nil || rep.Applied != 0 || rep.Checkpoint != 777 {
		t.Errorf("CatchUp(500) = %+v, %v", rep, err)
	}
	// Beyond the head: up to the head.
	if rep, err := r.CatchUp(context.Background(), "a", sharedEvents+100); err != nil || rep.Checkpoint != sharedEvents {
		t.Errorf("CatchUp(beyond head) = %+v, %v", rep, err)
	}

	reports, err := r.CatchUpAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 || reports[0].Applied != 0 || reports[1].Applied != sharedEvents {
		t.Errorf("CatchUpAll reports %+v", reports)
	}
	all, err = r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.Checkpoint != sharedEvents || s.Lag != 0 {
			t.Errorf("status %+v", s)
		}
	}
	checkModel(t, db, "b", expectModel(recs, nil))
}

func TestLeaseHeldByAnotherRunner(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 3), 200, nil)
	_, path := newReadDB(t)

	holder := newCounter("counts")
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	holder.setHook(func(context.Context, *sql.Tx, eventlog.Record) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		return nil
	})
	rA := newRunner(t, openReadDB(t, path), store, projection.Options{BatchSize: 50, Owner: "runner-a"}, holder)
	other := newCounter("counts")
	rB := newRunner(t, openReadDB(t, path), store, projection.Options{BatchSize: 50, Owner: "runner-b"}, other)

	done := make(chan error, 1)
	go func() {
		_, err := rA.CatchUp(context.Background(), "counts", 0)
		done <- err
	}()
	<-entered

	start := time.Now()
	_, err := rB.CatchUp(context.Background(), "counts", 0)
	if !errors.Is(err, projection.ErrLocked) {
		t.Errorf("CatchUp while another runner works: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "runner-a") {
		t.Errorf("error %q does not name the holder", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("ErrLocked took %v; it should not wait for the holder's transaction", elapsed)
	}
	if err := rB.Rebuild(context.Background(), "counts"); !errors.Is(err, projection.ErrLocked) {
		t.Errorf("Rebuild while another runner works: %v, want ErrLocked", err)
	}
	if _, err := rB.CatchUpAll(context.Background()); !errors.Is(err, projection.ErrLocked) {
		t.Errorf("CatchUpAll while another runner works: %v, want ErrLocked", err)
	}
	// Status and reads do not need the lease.
	if _, err := rB.Status(context.Background()); err != nil {
		t.Errorf("Status: %v", err)
	}

	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkModel(t, rB.DB(), "counts", expectModel(recs, nil))

	// The holder gave the lease back: the other runner takes new events.
	more := appendEvents(t, store, streamNames("s", 3), 60, nil)
	rep, err := rB.CatchUp(context.Background(), "counts", 0)
	if err != nil || rep.Applied != 60 {
		t.Fatalf("after release: %+v, %v", rep, err)
	}
	checkModel(t, rB.DB(), "counts", expectModel(append(recs, more...), nil))
	if n := leaseRows(t, rB.DB()); n != 0 {
		t.Errorf("%d lease rows left after the runs", n)
	}
}

func leaseRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM projection_leases`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A lease row left by a runner that is gone blocks the projection until it
// expires, then is taken over.
func TestLeaseExpiredTakeover(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 3), 100, nil)
	db, _ := newReadDB(t)
	a, b := newCounter("a"), newCounter("b")
	r := newRunner(t, db, store, projection.Options{BatchSize: 30}, a, b)
	if _, err := db.Exec(`INSERT INTO projection_leases (name, owner, expires_at) VALUES ('a', 'gone', ?)`,
		time.Now().Add(time.Hour).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CatchUp(context.Background(), "a", 0); !errors.Is(err, projection.ErrLocked) {
		t.Fatalf("CatchUp under another's lease: %v, want ErrLocked", err)
	}
	// One locked projection does not stop the others.
	reports, err := r.CatchUpAll(context.Background())
	if !errors.Is(err, projection.ErrLocked) {
		t.Errorf("CatchUpAll: %v, want ErrLocked joined", err)
	}
	if len(reports) != 2 || reports[0].Checkpoint != 0 || reports[1].Checkpoint != 100 {
		t.Errorf("CatchUpAll reports %+v", reports)
	}
	checkModel(t, db, "b", expectModel(recs, nil))

	if _, err := db.Exec(`UPDATE projection_leases SET expires_at = ? WHERE name = 'a'`, time.Now().Add(-time.Millisecond).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	rep, err := r.CatchUp(context.Background(), "a", 0)
	if err != nil || rep.Checkpoint != 100 {
		t.Fatalf("CatchUp over an expired lease: %+v, %v", rep, err)
	}
	checkModel(t, db, "a", expectModel(recs, nil))
	if n := leaseRows(t, db); n != 0 {
		t.Errorf("%d lease rows left", n)
	}

}

// A default owner id names the machine and the process. The lease of a
// process of this machine that no longer runs (a runner killed without
// giving it back) is taken over at once, as is that of an earlier process
// whose PID a live one reuses (told apart by the start time, where Linux
// gives it); that of a live process, of another machine, or of an owner
// id of another form waits for its expiry.
func TestLeaseOfADeadProcessTakenOverAtOnce(t *testing.T) {
	t.Parallel()
	if runtime.GOOS == "windows" {
		t.Skip("no process liveness check here: every lease waits for its expiry")
	}
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 3), 100, nil)
	db, _ := newReadDB(t)
	probe := newRunner(t, db, store, projection.Options{}, newCounter("probe"))
	host, rest, _ := strings.Cut(probe.Owner(), "/")
	process, _, _ := strings.Cut(rest, "/")
	pid, start, ok := strings.Cut(process, "@")
	if !ok || pid != strconv.Itoa(os.Getpid()) {
		t.Fatalf("default owner %q is not HOST/PID@START/UUID of this process", probe.Owner())
	}
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	dead := strconv.Itoa(exited.ProcessState.Pid())
	parent := strconv.Itoa(os.Getppid()) // the go command, alive
	parentStart := projection.ProcessStart(os.Getppid())
	if runtime.GOOS == "linux" && (start == "" || parentStart == "") {
		t.Fatalf("no start time on Linux: own %q, parent's %q", start, parentStart)
	}
	// Without start times (outside Linux) the cases that tell processes
	// apart by them are left out.
	known := func(start string) bool { return start != "" }
	cases := []struct {
		owner    string
		takeover bool
		run      bool
	}{
		{host + "/" + parent + "@" + parentStart + "/live", false, true},
		{host + "/" + parent + "@/live", false, true},
		{"another-host/" + dead + "@1/gone", false, true},
		{"gone", false, true},
		{host + "/" + dead + "@1/gone", true, true},
		{host + "/" + dead + "@/gone", true, true},
		{host + "/" + parent + "@1/reused", true, known(parentStart)},
		{host + "/" + pid + "@1/earlier", true, known(start)},
	}
	var counters []projection.Projector
	for i := range cases {
		counters = append(counters, newCounter(fmt.Sprintf("c%d", i)))
	}
	r := newRunner(t, db, store, projection.Options{BatchSize: 30}, counters...)
	for i, c := range cases {
		if !c.run {
			continue
		}
		name := fmt.Sprintf("c%d", i)
		if _, err := db.Exec(`INSERT INTO projection_leases (name, owner, expires_at) VALUES (?, ?, ?)`,
			name, c.owner, time.Now().Add(time.Hour).UnixMilli()); err != nil {
			t.Fatal(err)
		}
		rep, err := r.CatchUp(context.Background(), name, 0)
		switch {
		case !c.takeover && !errors.Is(err, projection.ErrLocked):
			t.Errorf("CatchUp under %q's lease: %+v, %v; want ErrLocked", c.owner, rep, err)
		case c.takeover && (err != nil || rep.Checkpoint != 100):
			t.Errorf("CatchUp over the lease of %q: %+v, %v; want it taken over", c.owner, rep, err)
		case c.takeover:
			checkModel(t, db, name, expectModel(recs, nil))
		}
	}
}

// Another runner takes the lease while this one works: this one stops
// with ErrLocked after the batches it committed, and nothing is lost.
func TestLeaseLostMidRun(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 3), 100, nil)
	db, _ := newReadDB(t)
	c := newCounter("counts")
	c.setHook(func(ctx context.Context, tx *sql.Tx, r eventlog.Record) error {
		if r.Position == 35 { // in the second batch: the lease changes hands when it commits
			_, err := tx.ExecContext(ctx, `UPDATE projection_leases SET owner = 'thief', expires_at = ? WHERE name = 'counts'`,
				time.Now().Add(time.Hour).UnixMilli())
			return err
		}
		return nil
	})
	r := newRunner(t, db, store, projection.Options{BatchSize: 30}, c)
	rep, err := r.CatchUp(context.Background(), "counts", 0)
	if !errors.Is(err, projection.ErrLocked) {
		t.Fatalf("err %v, want ErrLocked", err)
	}
	if rep.Checkpoint != 60 || rep.Applied != 60 {
		t.Errorf("report %+v, want the two batches committed", rep)
	}
	c.setHook(nil)
	if _, err := db.Exec(`UPDATE projection_leases SET expires_at = 0 WHERE name = 'counts'`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
		t.Fatal(err)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
}

// Goroutines of one runner take turns on a projection instead of failing
// with ErrLocked.
func TestConcurrentCallsOneRunner(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	db, _ := newReadDB(t)
	c := newCounter("counts")
	r := newRunner(t, db, store, projection.Options{BatchSize: 20}, c)
	var recs []eventlog.Record
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for round := range 5 {
		recs = append(recs, appendEvents(t, store, streamNames("s", 3), 40, nil)...)
		for range 4 {
			wg.Go(func() {
				if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
					errs <- err
				}
			})
		}
		if round%2 == 0 {
			wg.Go(func() {
				if _, err := r.CatchUpAll(context.Background()); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent CatchUp: %v", err)
	}
	if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
		t.Fatal(err)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
}

func TestRebuild(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	recs := appendEvents(t, store, streamNames("s", 6), 400, nil)
	db, _ := newReadDB(t)
	c := newCounter("counts")
	c.policy = projection.FailurePolicy{Strategy: projection.Skip}
	c.failAt(77, -1)
	r := newRunner(t, db, store, projection.Options{BatchSize: 64}, c)
	if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
		t.Fatal(err)
	}
	before := readCounter(t, db, "counts")
	checkModel(t, db, "counts", expectModel(recs, func(r eventlog.Record) bool { return r.Position != 77 }))

	if err := r.Rebuild(context.Background(), "counts"); err != nil {
		t.Fatal(err)
	}
	if got := readCounter(t, db, "counts"); len(got.counts) != 0 || len(got.applied) != 0 {
		t.Errorf("after Rebuild the read model holds %d streams, %d positions", len(got.counts), len(got.applied))
	}
	st := statusOf(t, r, "counts")
	if st.Checkpoint != 0 || st.Lag != 400 || st.DeadLetters != 0 {
		t.Errorf("status after Rebuild %+v", st)
	}
	if n := leaseRows(t, db); n != 0 {
		t.Errorf("%d lease rows after Rebuild", n)
	}

	rep, err := r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Applied != 399 || rep.Skipped != 1 || rep.Checkpoint != 400 {
		t.Errorf("replay %+v", rep)
	}
	checkModel(t, db, "counts", before)
	if st := statusOf(t, r, "counts"); st.DeadLetters != 1 {
		t.Errorf("status after replay %+v", st)
	}
}

// A Reset that fails leaves everything as it was.
func TestRebuildFailure(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	appendEvents(t, store, streamNames("s", 2), 20, nil)
	db, _ := newReadDB(t)
	r := newRunner(t, db, store, projection.Options{}, failingReset{newCounter("counts")})
	if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Rebuild(context.Background(), "counts"); !errors.Is(err, errBoom) {
		t.Fatalf("Rebuild: %v, want the Reset error", err)
	}
	if got := checkpoint(t, r, "counts"); got != 20 {
		t.Errorf("checkpoint %d after a failed Rebuild", got)
	}
	if got := readCounter(t, db, "counts"); len(got.applied) != 20 {
		t.Errorf("read model lost rows in a failed Rebuild: %d", len(got.applied))
	}
}

type failingReset struct{ *counter }

func (f failingReset) Reset(ctx context.Context, tx *sql.Tx) error {
	if err := f.counter.Reset(ctx, tx); err != nil {
		return err
	}
	return errBoom
}

func TestContextEnd(t *testing.T) {
	t.Parallel()
	store, recs := sharedLog(t)

	t.Run("deadline after progress", func(t *testing.T) {
		t.Parallel()
		db, _ := newReadDB(t)
		// Two batches commit, then the third waits for the deadline: the
		// same outcome however slow the machine.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c := newCounter("counts")
		c.setHook(func(_ context.Context, _ *sql.Tx, r eventlog.Record) error {
			if r.Position > 20 {
				<-ctx.Done()
			}
			return nil
		})
		r := newRunner(t, db, store, projection.Options{BatchSize: 10}, c)
		rep, err := r.CatchUp(ctx, "counts", 0)
		if err != nil {
			t.Fatalf("deadline after progress: %v, want nil", err)
		}
		if rep.Checkpoint != 20 || rep.Applied != 20 {
			t.Errorf("report %+v, want the two whole batches before the deadline", rep)
		}
		checkModel(t, db, "counts", expectModel(recs, upTo(rep.Checkpoint)))
		if n := leaseRows(t, db); n != 0 {
			t.Errorf("lease not released after the deadline")
		}
	})
	t.Run("no progress", func(t *testing.T) {
		t.Parallel()
		db, _ := newReadDB(t)
		r := newRunner(t, db, store, projection.Options{}, newCounter("counts"))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := r.CatchUp(ctx, "counts", 0); !errors.Is(err, context.Canceled) {
			t.Errorf("CatchUp with an ended context: %v, want context.Canceled", err)
		}
		if _, err := r.CatchUpAll(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("CatchUpAll with an ended context: %v, want context.Canceled", err)
		}
		if got := checkpoint(t, r, "counts"); got != 0 {
			t.Errorf("checkpoint %d", got)
		}
	})
	t.Run("retry wait", func(t *testing.T) {
		t.Parallel()
		db, _ := newReadDB(t)
		c := newCounter("counts")
		c.policy = projection.FailurePolicy{Strategy: projection.Retry, Retries: 5, Backoff: time.Hour}
		c.failAt(5, -1)
		r := newRunner(t, db, store, projection.Options{BatchSize: 100}, c)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := r.CatchUp(ctx, "counts", 0)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, projection.ErrProjectionStopped) {
			t.Errorf("deadline in a retry wait of the first batch: %v, want DeadlineExceeded", err)
		}
		if got := checkpoint(t, r, "counts"); got != 0 {
			t.Errorf("checkpoint %d, want the batch rolled back", got)
		}
		if dead, _ := r.DeadLetters(context.Background(), "counts", 0); len(dead) != 0 {
			t.Errorf("dead letters %v", dead)
		}
	})
}

func TestNewRunnerValidation(t *testing.T) {
	t.Parallel()
	store := newLog(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts projection.Options
		ps   []projection.Projector
	}{
		{"empty name", projection.Options{}, []projection.Projector{newCounter("")}},
		{"upper case", projection.Options{}, []projection.Projector{newCounter("Counts")}},
		{"space", projection.Options{}, []projection.Projector{newCounter("a b")}},
		{"dot", projection.Options{}, []projection.Projector{newCounter("a.b")}},
		{"too long", projection.Options{}, []projection.Projector{newCounter(strings.Repeat("x", 65))}},
		{"duplicate", projection.Options{}, []projection.Projector{newCounter("a"), newCounter("a")}},
		{"nil projector", projection.Options{}, []projection.Projector{nil}},
		{"empty type", projection.Options{}, []projection.Projector{filtered{newCounter("a"), []string{""}}}},
		{"batch too big", projection.Options{BatchSize: eventlog.MaxFeedLimit + 1}, nil},
		{"negative batch", projection.Options{BatchSize: -1}, nil},
		{"negative TTL", projection.Options{LeaseTTL: -time.Second}, nil},
	} {
		db, _ := newReadDB(t)
		if _, err := projection.NewRunner(ctx, db, store, tc.opts, tc.ps...); err == nil {
			t.Errorf("%s: NewRunner succeeded", tc.name)
		}
	}
	for _, name := range []string{"a", "z9", "read_model-2", strings.Repeat("x", 64)} {
		if err := projection.ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q): %v", name, err)
		}
	}

	// Zero projectors are fine.
	db, _ := newReadDB(t)
	r := newRunner(t, db, store, projection.Options{})
	if other := newRunner(t, db, store, projection.Options{}); r.Owner() == "" || r.Owner() == other.Owner() {
		t.Errorf("default owners %q and %q: want distinct random ids", r.Owner(), other.Owner())
	}
	if o := newRunner(t, db, store, projection.Options{Owner: "worker-7"}).Owner(); o != "worker-7" {
		t.Errorf("Owner() = %q, want the option", o)
	}
	if reports, err := r.CatchUpAll(ctx); err != nil || len(reports) != 0 {
		t.Errorf("CatchUpAll with no projectors: %v, %v", reports, err)
	}
	if st, err := r.Status(ctx); err != nil || len(st) != 0 {
		t.Errorf("Status with no projectors: %v, %v", st, err)
	}
	for what, err := range map[string]error{
		"CatchUp":     func() error { _, err := r.CatchUp(ctx, "nope", 0); return err }(),
		"Checkpoint":  func() error { _, err := r.Checkpoint(ctx, "nope"); return err }(),
		"DeadLetters": func() error { _, err := r.DeadLetters(ctx, "nope", 1); return err }(),
		"Rebuild":     r.Rebuild(ctx, "nope"),
	} {
		if !errors.Is(err, projection.ErrUnknownProjection) {
			t.Errorf("%s of an unknown projection: %v", what, err)
		}
	}

	// Setup runs in the runner's transaction: a failure creates nothing.
	db, _ = newReadDB(t)
	if _, err := projection.NewRunner(ctx, db, store, projection.Options{}, newCounter("a"), failingSetup{newCounter("b")}); !errors.Is(err, errBoom) {
		t.Fatalf("NewRunner with a failing Setup: %v", err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d tables after a failed setup (%v)", n, err)
	}

	// Setup is idempotent: a second runner on the same database works on.
	db, _ = newReadDB(t)
	newRunner(t, db, store, projection.Options{}, newCounter("a"))
	newRunner(t, db, store, projection.Options{}, newCounter("a"))
}

type failingSetup struct{ *counter }

func (f failingSetup) Setup(ctx context.Context, tx *sql.Tx) error {
	if err := f.counter.Setup(ctx, tx); err != nil {
		return err
	}
	return errBoom
}

// Close releases the Runner's prepared checkpoint read: a Checkpoint after
// it fails, a second Close is harmless, and the database stays open for a
// Runner that replaces it.
func TestCloseReleasesTheCheckpointRead(t *testing.T) {
	t.Parallel()
	store, _ := sharedLog(t)
	db, _ := newReadDB(t)
	r := newRunner(t, db, store, projection.Options{}, newCounter("counts"))
	if _, err := r.CatchUp(context.Background(), "counts", 0); err != nil {
		t.Fatal(err)
	}
	want, err := r.Checkpoint(context.Background(), "counts")
	if err != nil || want == 0 {
		t.Fatalf("checkpoint %d, %v", want, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if _, err := r.Checkpoint(context.Background(), "counts"); err == nil {
		t.Fatal("Checkpoint after Close answered")
	}
	next := newRunner(t, db, store, projection.Options{}, newCounter("counts"))
	if got, err := next.Checkpoint(context.Background(), "counts"); err != nil || got != want {
		t.Fatalf("the next Runner's checkpoint %d, %v; want %d", got, err, want)
	}
}
