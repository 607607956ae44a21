package projection_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/internal/testproc"
	"github.com/eventcore-go/eventcore/projection"
)

// The test binary runs itself as a second process, told by these
// environment variables what to do and where the files are.
const (
	childModeEnv   = "PROJECTION_TEST_CHILD"
	childEventsEnv = "PROJECTION_TEST_EVENTS"
	childReadEnv   = "PROJECTION_TEST_READ"
	// childDialectEnv is "postgres" when the events and read variables
	// hold the URL of one PostgreSQL database instead of file paths.
	childDialectEnv = "PROJECTION_TEST_DIALECT"
	crashPosition   = 1234
	crashExitCode   = 3
)

// TestChildProcess is the second process's entry point; it does nothing in
// an ordinary run.
func TestChildProcess(t *testing.T) {
	mode := os.Getenv(childModeEnv)
	if mode == "" {
		t.Skip("runs only as a child process")
	}
	var store eventlog.Store
	var db *sql.DB
	dialect := projection.SQLite
	if os.Getenv(childDialectEnv) == "postgres" {
		dialect = projection.Postgres
		store, db = openPostgres(t, os.Getenv(childEventsEnv))
	} else {
		store, db = openStore(t, os.Getenv(childEventsEnv)), openReadDB(t, os.Getenv(childReadEnv))
	}
	switch mode {
	case "crash":
		c := newCounter("counts")
		c.setHook(func(_ context.Context, _ *sql.Tx, r eventlog.Record) error {
			if r.Position == crashPosition {
				os.Exit(crashExitCode) // no rollback, no lease release
			}
			return nil
		})
		r := newRunner(t, db, store, projection.Options{BatchSize: 100, LeaseTTL: time.Minute, Owner: "crashed", Dialect: dialect}, c)
		_, err := r.CatchUp(context.Background(), "counts", 0)
		t.Fatalf("the child did not crash: %v", err)
	case "loop":
		r := newRunner(t, db, store, projection.Options{BatchSize: 25, Owner: "child", Dialect: dialect}, newCounter("counts"))
		stop := make(chan struct{})
		fmt.Println("READY")
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stop)
		}()
		applied, locked, runs, err := catchUpLoop(r, stop)
		fmt.Println("APPLIED", applied)
		fmt.Println("LOCKED", locked)
		fmt.Println("RUNS", runs)
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("unknown child mode %q", mode)
	}
}

// catchUpLoop runs CatchUp until stop is closed and adds up what it did.
func catchUpLoop(r *projection.Runner, stop <-chan struct{}) (applied, locked, runs int, err error) {
	for {
		select {
		case <-stop:
			return applied, locked, runs, nil
		default:
		}
		rep, err := r.CatchUp(context.Background(), "counts", 0)
		applied += rep.Applied
		runs++
		switch {
		case errors.Is(err, projection.ErrLocked):
			locked++
		case err != nil:
			return applied, locked, runs, err
		}
		time.Sleep(time.Millisecond)
	}
}

func childCommand(mode, eventsPath, readPath string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv(mode, eventsPath, readPath)...)
	return cmd
}

func childEnv(mode, eventsPath, readPath string) []string {
	return []string{childModeEnv + "=" + mode, childEventsEnv + "=" + eventsPath, childReadEnv + "=" + readPath}
}

// A process dies in the middle of a batch: its batch is lost, its lease
// blocks the projection until it expires, and the next runner applies
// every event exactly once.
func TestCrashedProcess(t *testing.T) {
	t.Parallel()
	store, recs := sharedLog(t)
	readPath := filepath.Join(t.TempDir(), "read.db")

	cmd := childCommand("crash", filepath.Join(shared.dir, "events.db"), readPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != crashExitCode {
		t.Fatalf("child: %v, want exit code %d\n%s", err, crashExitCode, out.String())
	}

	db := openReadDB(t, readPath)
	survive(t, db, store, projection.Options{BatchSize: 100, Owner: "survivor"}, recs)
}

// survive checks what a runner finds after a child process died in the
// middle of the batch after position 1200 (TestChildProcess, mode
// "crash"): the checkpoint and the read model at 1200, the dead process's
// lease in force, and once it has expired every event applied exactly
// once, the one at crashPosition by this runner once.
func survive(t *testing.T, db *sql.DB, store eventlog.Store, opts projection.Options, recs []eventlog.Record) {
	t.Helper()
	c := newCounter("counts")
	r := newRunner(t, db, store, opts, c)
	if got := checkpoint(t, r, "counts"); got != 1200 {
		t.Errorf("checkpoint after the crash %d, want 1200", got)
	}
	checkModel(t, db, "counts", expectModel(recs, upTo(1200)))

	_, err := r.CatchUp(context.Background(), "counts", 0)
	if !errors.Is(err, projection.ErrLocked) {
		t.Errorf("CatchUp right after the crash: %v, want ErrLocked (the dead process's lease)", err)
	}
	// The lease lasts a minute, so that the check above meets it however
	// slow the machine; it is made to run out here, as time would.
	if _, err := db.Exec(`UPDATE projection_leases SET expires_at = $1 WHERE name = 'counts'`, time.Now().Add(-time.Millisecond).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	_, err = r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatalf("CatchUp after the lease expired: %v", err)
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
	if got, want := checkpoint(t, r, "counts"), recs[len(recs)-1].Position; got != want {
		t.Errorf("checkpoint %d, want %d", got, want)
	}
	if c.triesAt(crashPosition) != 1 {
		t.Errorf("position %d applied %d times by the survivor", crashPosition, c.triesAt(crashPosition))
	}
}

// Two processes run CatchUp in a loop on the same files while events are
// appended: every event is applied exactly once, and the reports of both
// add up to the events.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	eventsPath, readPath := filepath.Join(dir, "events.db"), filepath.Join(dir, "read.db")
	store := openStore(t, eventsPath)
	db := openReadDB(t, readPath)
	r := newRunner(t, db, store, projection.Options{BatchSize: 25, Owner: "parent"}, newCounter("counts"))
	streams := streamNames("s", 7)
	recs := appendEvents(t, store, streams, 100, nil)

	proc := testproc.Start(t, "TestChildProcess", childEnv("loop", eventsPath, readPath))
	stdin, lines := proc.Stdin, proc.Lines
	for lines.Scan() && lines.Text() != "READY" {
	}
	if lines.Err() != nil {
		t.Fatal(lines.Err())
	}

	type loopResult struct{ applied, locked, runs int }
	stop := make(chan struct{})
	parentDone := make(chan loopResult, 1)
	parentErr := make(chan error, 1)
	go func() {
		applied, locked, runs, err := catchUpLoop(r, stop)
		parentDone <- loopResult{applied, locked, runs}
		parentErr <- err
	}()
	for range 30 {
		recs = append(recs, appendEvents(t, store, streams, 10, nil)...)
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	_ = stdin.Close()

	parent := <-parentDone
	if err := <-parentErr; err != nil {
		t.Errorf("parent loop: %v", err)
	}
	child := loopResult{applied: -1}
	var other []string
	for lines.Scan() {
		word, arg, _ := strings.Cut(lines.Text(), " ")
		n, _ := strconv.Atoi(arg)
		switch word {
		case "APPLIED":
			child.applied = n
		case "LOCKED":
			child.locked = n
		case "RUNS":
			child.runs = n
		default:
			other = append(other, lines.Text())
		}
	}
	if err := proc.Cmd.Wait(); err != nil {
		t.Fatalf("child: %v\nstdout: %s\nstderr: %s", err, strings.Join(other, "\n"), proc.Stderr())
	}
	if child.applied < 0 {
		t.Fatalf("child reported nothing\n%s", strings.Join(other, "\n"))
	}

	final, err := r.CatchUp(context.Background(), "counts", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("parent: %d runs, %d applied, %d locked; child: %d runs, %d applied, %d locked; final run: %d applied",
		parent.runs, parent.applied, parent.locked, child.runs, child.applied, child.locked, final.Applied)
	if total := parent.applied + child.applied + final.Applied; total != len(recs) {
		t.Errorf("the runs applied %d events in all, want %d", total, len(recs))
	}
	checkModel(t, db, "counts", expectModel(recs, nil))
	if got := checkpoint(t, r, "counts"); got != eventlog.Position(len(recs)) {
		t.Errorf("checkpoint %d, want %d", got, len(recs))
	}
}
