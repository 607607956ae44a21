package bank_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/projection"
)

// perEvent hides a projector's ApplyBatch: the Runner applies its events
// one at a time with Apply, the reference for the batch path.
type perEvent struct{ projection.Projector }

func (p perEvent) EventTypes() []string { return p.Projector.(projection.TypeFilter).EventTypes() }

// skipping gives a projector the Skip policy.
type skipping struct{ projection.BatchProjector }

func (s skipping) EventTypes() []string { return s.BatchProjector.(projection.TypeFilter).EventTypes() }
func (skipping) FailurePolicy() projection.FailurePolicy {
	return projection.FailurePolicy{Strategy: projection.Skip}
}

// openBank opens 12 accounts, two of them fee accounts of others.
func openBank(t *testing.T, s eventlog.Store) {
	t.Helper()
	mustExec(t, s, open("fees-a", "Bank"))
	mustExec(t, s, open("fees-b", "Bank"))
	for i := range 10 {
		fee := []string{"", "fees-a", "fees-b"}[i%3]
		mustExec(t, s, bank.OpenAccount{Account: fmt.Sprintf("a%d", i), Owner: "O", FeeAccount: fee})
	}
}

// randomBank runs n random commands over openBank's accounts through the
// executor; refused commands leave no events.
func randomBank(t *testing.T, s eventlog.Store, n int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	acct := func() string { return fmt.Sprintf("a%d", rng.IntN(10)) }
	for i := range n {
		var cmd bank.Command
		switch rng.IntN(4) {
		case 0:
			cmd = deposit(acct(), 1+rng.Int64N(1000))
		case 1:
			cmd = withdraw(acct(), 1+rng.Int64N(300))
		default:
			cmd = transfer(fmt.Sprintf("t%d", i), acct(), acct(), 1+rng.Int64N(400))
		}
		_, _ = bank.Execute(context.Background(), s, cmd, executor.Options{})
	}
}

// readModels is the content of both bank tables, in key order.
type readModels struct {
	balances [][3]any
	history  [][7]any
}

func dumpReadModels(t *testing.T, db *sql.DB) readModels {
	t.Helper()
	var m readModels
	rows, err := db.Query(`SELECT account, balance, position FROM bank_balances ORDER BY account`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		var b, p int64
		if err := rows.Scan(&a, &b, &p); err != nil {
			t.Fatal(err)
		}
		m.balances = append(m.balances, [3]any{a, b, p})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	_ = rows.Close()
	rows, err = db.Query(`SELECT account, position, type, amount, balance, counterparty, recorded_at FROM bank_history ORDER BY account, position`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a, typ string
		var p, amount, b, at int64
		var cp sql.NullString
		if err := rows.Scan(&a, &p, &typ, &amount, &b, &cp, &at); err != nil {
			t.Fatal(err)
		}
		m.history = append(m.history, [7]any{a, p, typ, amount, b, cp, at})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	_ = rows.Close()
	return m
}

// catchUpAll runs the runner to the head and fails the test on an error.
func catchUpAll(t *testing.T, r *projection.Runner) {
	t.Helper()
	if _, err := r.CatchUpAll(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func openSQLiteReadDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqlite.Options{Synchronous: sqlite.SyncNormal}.DSN(filepath.Join(t.TempDir(), "read.db"), "immediate"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestBatchProjectionsMatchPerEvent applies a random bank's log with
// ApplyBatch at several batch sizes, in several catch-ups, and one event at
// a time with Apply: the tables must be equal, and the balances those of a
// fold of the log.
func TestBatchProjectionsMatchPerEvent(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	openBank(t, store)
	// Enough accounts that a batch of 500 touches more than two statements'
	// worth of them (balances: 21 rows, the balance lookup: 64 accounts
	// per statement), so that the statements prepared once per batch run.
	for i := range 150 {
		mustExec(t, store, bank.OpenAccount{Account: fmt.Sprintf("m%d", i), Owner: "O"})
	}
	randomBank(t, store, 400, 1)
	check := func(t *testing.T, newDB func(t *testing.T) *sql.DB, dialect projection.Dialect, store eventlog.Store) {
		ctx := context.Background()
		refDB := newDB(t)
		ref, err := projection.NewRunner(ctx, refDB, store, projection.Options{BatchSize: 7, Dialect: dialect},
			perEvent{bank.Balances{}}, perEvent{bank.History{}})
		if err != nil {
			t.Fatal(err)
		}
		catchUpAll(t, ref)
		want := dumpReadModels(t, refDB)
		state := foldAll(t, readAll(t, store))
		if len(want.balances) != len(state.Accounts) {
			t.Fatalf("%d balances, want %d accounts", len(want.balances), len(state.Accounts))
		}
		for _, b := range want.balances {
			if state.Accounts[b[0].(string)].Balance != b[1].(int64) {
				t.Errorf("per-event balance %v, fold says %d", b, state.Accounts[b[0].(string)].Balance)
			}
		}
		for _, size := range []int{1, 3, 64, 500} {
			db := newDB(t)
			r, err := projection.NewRunner(ctx, db, store, projection.Options{BatchSize: size, Dialect: dialect}, bank.Balances{}, bank.History{})
			if err != nil {
				t.Fatal(err)
			}
			// Two catch-ups, so that the second batch path starts from
			// rows the first wrote.
			half := headOf(t, store) / 2
			for _, name := range r.Names() {
				if _, err := r.CatchUp(ctx, name, half); err != nil {
					t.Fatal(err)
				}
			}
			catchUpAll(t, r)
			if got := dumpReadModels(t, db); !reflect.DeepEqual(got, want) {
				t.Errorf("batch size %d: read models differ from the per-event ones", size)
			}
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		check(t, openSQLiteReadDB, projection.SQLite, store)
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		pg := openPostgres(t, url)
		for _, r := range readAll(t, store) {
			// The same events, at the same positions, in the PostgreSQL log.
			if _, err := pg.Append(context.Background(), eventlog.AppendRequest{
				Expected: []eventlog.ExpectedVersion{{Stream: r.Stream, Version: r.Version - 1}},
				Events:   []eventlog.Event{{Stream: r.Stream, Type: r.Type, Data: r.Data, Metadata: r.Metadata}},
			}); err != nil {
				t.Fatal(err)
			}
		}
		newDB := func(t *testing.T) *sql.DB {
			db, err := postgres.OpenDB(context.Background(), pgtest.NewDatabase(t), postgres.DBOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			return db
		}
		check(t, newDB, projection.Postgres, pg)
	})
}

// TestBatchProjectionFailureIsolated puts an event the projections cannot
// decode in the middle of a batch: the batch is rolled back and applied one
// event at a time, so that Skip records that event alone as a dead letter
// and every other event is applied once, as the per-event path does; under
// Stop (the bank's policy) the events before it are committed.
func TestBatchProjectionFailureIsolated(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	openBank(t, store)
	randomBank(t, store, 60, 2)
	bad := eventlog.MustStreamID(bank.StreamPrefix + "a1")
	versions, err := store.StreamVersions(context.Background(), []eventlog.StreamID{bad})
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.Append(context.Background(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: bad, Version: versions[0]}},
		Events:   []eventlog.Event{{Stream: bad, Type: bank.TypeMoneyDeposited, Data: json.RawMessage(`{"account":"a1","amount":"x"}`)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	badPos := res.Records[0].Position
	randomBank(t, store, 60, 3)
	ctx := context.Background()

	refDB := openSQLiteReadDB(t)
	ref, err := projection.NewRunner(ctx, refDB, store, projection.Options{BatchSize: 1},
		skipping{bank.Balances{}}, skipping{bank.History{}})
	if err != nil {
		t.Fatal(err)
	}
	catchUpAll(t, ref)
	want := dumpReadModels(t, refDB)

	db := openSQLiteReadDB(t)
	r, err := projection.NewRunner(ctx, db, store, projection.Options{BatchSize: 500},
		skipping{bank.Balances{}}, skipping{bank.History{}})
	if err != nil {
		t.Fatal(err)
	}
	reports, err := r.CatchUpAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	head := headOf(t, store)
	for _, rep := range reports {
		if rep.Skipped != 1 || rep.Checkpoint != head || rep.Applied != int(head)-1 {
			t.Errorf("report %+v, want %d applied and 1 skipped", rep, head-1)
		}
		dead, err := r.DeadLetters(ctx, rep.Name, 0)
		if err != nil || len(dead) != 1 || dead[0].Position != badPos {
			t.Errorf("%s dead letters %+v, %v; want position %d", rep.Name, dead, err, badPos)
		}
	}
	if got := dumpReadModels(t, db); !reflect.DeepEqual(got, want) {
		t.Errorf("read models after the isolated failure differ from the per-event ones")
	}

	// Stop: the batch commits up to the event before the failing one.
	stopDB := openSQLiteReadDB(t)
	stop, err := projection.NewRunner(ctx, stopDB, store, projection.Options{BatchSize: 500}, bank.Balances{}, bank.History{})
	if err != nil {
		t.Fatal(err)
	}
	reports, err = stop.CatchUpAll(ctx)
	var stopped *projection.StoppedError
	if !errors.As(err, &stopped) || stopped.Position != badPos || stopped.Tries != 1 {
		t.Fatalf("err %v, want a stop at position %d after 1 try", err, badPos)
	}
	for _, rep := range reports {
		if rep.Checkpoint != badPos-1 {
			t.Errorf("report %+v, want checkpoint %d", rep, badPos-1)
		}
	}
}
