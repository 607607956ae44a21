package projection_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/internal/testproc"
	"github.com/eventcore-go/eventcore/projection"
)

// The PostgreSQL tests run the Runner with the event log and the read
// models in one fresh database each (pgtest), as the applications do.

// openPostgres opens the store and the read-model database at url, closed
// when the test ends.
func openPostgres(t testing.TB, url string) (*postgres.Store, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	store, err := postgres.Open(ctx, url, postgres.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	db, err := postgres.OpenDB(ctx, url, postgres.DBOptions{})
	if err != nil {
		t.Fatalf("open read models: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return store, db
}

func newPostgres(t *testing.T) (string, *postgres.Store, *sql.DB) {
	url := pgtest.NewDatabase(t)
	store, db := openPostgres(t, url)
	return url, store, db
}

func pgOptions(opts projection.Options) projection.Options {
	opts.Dialect = projection.Postgres
	return opts
}

// dialectSeen records the dialect its Setup, Apply and Reset were given.
type dialectSeen struct {
	*counter
	seen []projection.Dialect
}

func (d *dialectSeen) Setup(ctx context.Context, tx *sql.Tx) error {
	d.seen = append(d.seen, projection.DialectOf(ctx))
	return d.counter.Setup(ctx, tx)
}

func (d *dialectSeen) Apply(ctx context.Context, tx *sql.Tx, r eventlog.Record) error {
	d.seen = append(d.seen, projection.DialectOf(ctx))
	return d.counter.Apply(ctx, tx, r)
}

func (d *dialectSeen) Reset(ctx context.Context, tx *sql.Tx) error {
	d.seen = append(d.seen, projection.DialectOf(ctx))
	return d.counter.Reset(ctx, tx)
}

func TestPostgresExactlyOnceAcrossBatches(t *testing.T) {
	t.Parallel()
	_, store, db := newPostgres(t)
	recs := appendEvents(t, store, streamNames("acct", 7), 1000, nil)
	c := &dialectSeen{counter: newCounter("counts")}
	r := newRunner(t, db, store, pgOptions(projection.Options{BatchSize: 100}), c)
	ctx := context.Background()

	rep, err := r.CatchUp(ctx, "counts", 400)
	if err != nil || rep.Applied != 400 || rep.Checkpoint != 400 {
		t.Fatalf("catch-up to 400: %+v, %v", rep, err)
	}
	checkModel(t, db, "counts", expectModel(recs, upTo(400)))
	rep, err = r.CatchUp(ctx, "counts", 0)
	if err != nil || rep.Applied != 600 || rep.Checkpoint != 1000 {
		t.Fatalf("catch-up to the head: %+v, %v", rep, err)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
	if sizes := c.batchSizes(); len(sizes) != 10 {
		t.Errorf("events per transaction %v, want 10 batches of 100", sizes)
	}
	st := statusOf(t, r, "counts")
	if st.Checkpoint != 1000 || st.Head != 1000 || st.Lag != 0 {
		t.Errorf("status %+v", st)
	}
	for i, d := range c.seen {
		if d != projection.Postgres {
			t.Fatalf("call %d saw dialect %v, want postgres", i, d)
		}
	}
	// The lease was given back with the last batch.
	var leases int
	if err := db.QueryRow(`SELECT COUNT(*) FROM projection_leases`).Scan(&leases); err != nil || leases != 0 {
		t.Errorf("%d leases left (%v), want 0", leases, err)
	}
}

func TestPostgresFailurePolicies(t *testing.T) {
	t.Parallel()
	_, store, db := newPostgres(t)
	recs := appendEvents(t, store, streamNames("acct", 3), 60, nil)
	ctx := context.Background()

	skip := newCounter("skipping")
	skip.policy = projection.FailurePolicy{Strategy: projection.Skip}
	skip.failAt(10, -1)
	skip.failAt(20, -1)
	stop := newCounter("stopping")
	stop.failAt(30, -1)
	r := newRunner(t, db, store, pgOptions(projection.Options{BatchSize: 25}), skip, stop)

	if _, err := r.CatchUp(ctx, "skipping", 0); err != nil {
		t.Fatal(err)
	}
	checkModel(t, db, "skipping", expectModel(recs, func(r eventlog.Record) bool { return r.Position != 10 && r.Position != 20 }))
	letters, err := r.DeadLetters(ctx, "skipping", 0)
	if err != nil || len(letters) != 2 || letters[0].Position != 10 || letters[1].Position != 20 || !strings.Contains(letters[0].Error, "boom") {
		t.Fatalf("dead letters %+v, %v", letters, err)
	}
	if one, err := r.DeadLetters(ctx, "skipping", 1); err != nil || len(one) != 1 {
		t.Errorf("dead letters with limit 1: %+v, %v", one, err)
	}
	if st := statusOf(t, r, "skipping"); st.DeadLetters != 2 {
		t.Errorf("status %+v, want 2 dead letters", st)
	}

	_, err = r.CatchUp(ctx, "stopping", 0)
	var stopped *projection.StoppedError
	if !errors.As(err, &stopped) || stopped.Position != 30 {
		t.Fatalf("stopping: %v, want a StoppedError at 30", err)
	}
	if got := checkpoint(t, r, "stopping"); got != 29 {
		t.Errorf("checkpoint after the stop %d, want 29", got)
	}
	checkModel(t, db, "stopping", expectModel(recs, upTo(29)))

	// A rebuild empties the read model, its checkpoint and dead letters.
	skip.failAt(10, 0)
	skip.failAt(20, 0)
	if err := r.Rebuild(ctx, "skipping"); err != nil {
		t.Fatal(err)
	}
	if got := checkpoint(t, r, "skipping"); got != 0 {
		t.Errorf("checkpoint after the rebuild %d", got)
	}
	if _, err := r.CatchUp(ctx, "skipping", 0); err != nil {
		t.Fatal(err)
	}
	checkModel(t, db, "skipping", expectModel(recs, nil))
	if letters, _ := r.DeadLetters(ctx, "skipping", 0); len(letters) != 0 {
		t.Errorf("dead letters after the rebuild: %+v", letters)
	}
}

// A lease held by a runner that is still working is respected by another
// process's runner. When it expires in the middle of a batch, the other
// runner's takeover waits for that batch's lock on the lease row and comes
// after its commit: no event is applied twice.
func TestPostgresLease(t *testing.T) {
	t.Parallel()
	url, store, db := newPostgres(t)
	appendEvents(t, store, streamNames("acct", 3), 50, nil)
	ctx := context.Background()

	holder := newCounter("counts")
	entered, release := make(chan struct{}), make(chan struct{})
	holder.setHook(func(_ context.Context, _ *sql.Tx, r eventlog.Record) error {
		if r.Position == 30 {
			close(entered)
			<-release
		}
		return nil
	})
	// A's lease must outlast B's first try below however slow the
	// machine, and then expire while A's batch is still open.
	const ttl = 2 * time.Second
	rA := newRunner(t, db, store, pgOptions(projection.Options{BatchSize: 20, Owner: "a", LeaseTTL: ttl}), holder)
	store2, db2 := openPostgres(t, url)
	other := newCounter("counts")
	rB := newRunner(t, db2, store2, pgOptions(projection.Options{BatchSize: 20, Owner: "b"}), other)

	done := make(chan error, 1)
	go func() {
		_, err := rA.CatchUp(ctx, "counts", 0)
		done <- err
	}()
	<-entered
	tryCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if _, err := rB.CatchUp(tryCtx, "counts", 0); !errors.Is(err, projection.ErrLocked) {
		t.Errorf("B while A works: %v, want ErrLocked", err)
	}
	cancel()
	// A's lease expires while its batch is open (the batch holds the lease
	// row): B's takeover waits for that batch to commit.
	time.Sleep(ttl + 100*time.Millisecond)
	bDone := make(chan error, 1)
	go func() {
		_, err := rB.CatchUp(ctx, "counts", 0)
		bDone <- err
	}()
	// B's takeover is blocked behind the open batch's lease row.
	pgtest.WaitForLockWaiters(t, url, 1, "")
	close(release)
	if err := <-bDone; err != nil {
		t.Errorf("B, taking over the expired lease: %v", err)
	}
	if err := <-done; !errors.Is(err, projection.ErrLocked) {
		t.Errorf("A after its lease was taken over: %v, want ErrLocked", err)
	}
	got := readCounter(t, db, "counts")
	if len(got.applied) != 50 {
		t.Errorf("%d events applied, want 50", len(got.applied))
	}
	if holder.triesAt(40) != 1 || holder.triesAt(41) != 0 || other.triesAt(40) != 0 || other.triesAt(41) != 1 {
		t.Errorf("A's batch to 40 should commit before B takes over at 41: A tried 40 %d, 41 %d times; B 40 %d, 41 %d",
			holder.triesAt(40), holder.triesAt(41), other.triesAt(40), other.triesAt(41))
	}
	for pos := eventlog.Position(1); pos <= 50; pos++ {
		if n := holder.triesAt(pos) + other.triesAt(pos); n != 1 {
			t.Errorf("position %d applied %d times", pos, n)
		}
	}
}

// A process dies in the middle of a batch on PostgreSQL: its batch is
// rolled back by the server, its lease blocks the projection until it
// expires, and the next runner applies every event exactly once.
func TestPostgresCrashedProcess(t *testing.T) {
	t.Parallel()
	url, store, db := newPostgres(t)
	recs := appendEvents(t, store, streamNames("acct", 20), 2000, nil)

	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv("crash", url, url)...)
	cmd.Env = append(cmd.Env, childDialectEnv+"=postgres")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != crashExitCode {
		t.Fatalf("child: %v, want exit code %d\n%s", err, crashExitCode, out.String())
	}

	survive(t, db, store, pgOptions(projection.Options{BatchSize: 100, Owner: "survivor"}), recs)
}

// Two processes run CatchUp in a loop on one PostgreSQL database while
// events are appended: every event is applied exactly once.
func TestPostgresTwoProcesses(t *testing.T) {
	t.Parallel()
	url, store, db := newPostgres(t)
	r := newRunner(t, db, store, pgOptions(projection.Options{BatchSize: 25, Owner: "parent"}), newCounter("counts"))
	streams := streamNames("s", 7)
	recs := appendEvents(t, store, streams, 100, nil)

	proc := testproc.Start(t, "TestChildProcess", append(childEnv("loop", url, url), childDialectEnv+"=postgres"))
	for proc.Lines.Scan() && proc.Lines.Text() != "READY" {
	}
	stop := make(chan struct{})
	parentApplied := make(chan int, 1)
	go func() {
		applied, _, _, err := catchUpLoop(r, stop)
		if err != nil {
			t.Errorf("parent loop: %v", err)
		}
		parentApplied <- applied
	}()
	for range 30 {
		recs = append(recs, appendEvents(t, store, streams, 10, nil)...)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	_ = proc.Stdin.Close()
	parent := <-parentApplied
	child := -1
	for proc.Lines.Scan() {
		if word, arg, _ := strings.Cut(proc.Lines.Text(), " "); word == "APPLIED" {
			child, _ = strconv.Atoi(arg)
		}
	}
	if err := proc.Cmd.Wait(); err != nil || child < 0 {
		t.Fatalf("child: %v (applied %d)\n%s", err, child, proc.Stderr())
	}
	final, err := r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("parent applied %d, child %d, final run %d", parent, child, final.Applied)
	if total := parent + child + final.Applied; total != len(recs) {
		t.Errorf("the runs applied %d events in all, want %d", total, len(recs))
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
}

// Runners of several processes start at once on a new database: the
// tables are created once, without an error.
func TestPostgresConcurrentSetup(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			store, db := openPostgres(t, url)
			_, err := projection.NewRunner(context.Background(), db, store,
				pgOptions(projection.Options{Owner: strconv.Itoa(i)}), newCounter("counts"), newCounter("other"))
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
