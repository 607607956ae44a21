package projection_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/projection"
)

// storeOptions are the event log's options in tests: commits need not
// survive power loss.
var storeOptions = sqlite.Options{Synchronous: sqlite.SyncNormal}

// openStore opens (creating) the event log at path, closed when the test
// ends.
func openStore(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, storeOptions)
	if err != nil {
		t.Fatalf("open event log: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openReadDB opens the read-model database at path as an application
// would, closed when the test ends.
func openReadDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", sqlite.Options{}.DSN(path, "immediate"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PingContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newReadDB(t testing.TB) (*sql.DB, string) {
	path := filepath.Join(t.TempDir(), "read.db")
	return openReadDB(t, path), path
}

func newRunner(t testing.TB, db *sql.DB, store eventlog.Store, opts projection.Options, ps ...projection.Projector) *projection.Runner {
	t.Helper()
	r, err := projection.NewRunner(context.Background(), db, store, opts, ps...)
	if err != nil {
		t.Fatalf("NewRunner: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// appendEvents appends n events round-robin over streams, in appends of up
// to 50 events; typeOf names the type of the i-th event (0-based) of this
// call. It returns the records in position order.
func appendEvents(t testing.TB, s eventlog.Store, streams []string, n int, typeOf func(i int) string) []eventlog.Record {
	t.Helper()
	if typeOf == nil {
		typeOf = func(int) string { return "Counted" }
	}
	ids := make([]eventlog.StreamID, len(streams))
	for i, st := range streams {
		ids[i] = eventlog.MustStreamID(st)
	}
	ctx := context.Background()
	versions, err := s.StreamVersions(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	var out []eventlog.Record
	for start := 0; start < n; start += 50 {
		var req eventlog.AppendRequest
		used := map[int]bool{}
		for i := start; i < min(start+50, n); i++ {
			k := i % len(ids)
			used[k] = true
			req.Events = append(req.Events, eventlog.Event{
				Stream: ids[k], Type: typeOf(i), Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
			})
		}
		for k := range ids {
			if used[k] {
				req.Expected = append(req.Expected, eventlog.ExpectedVersion{Stream: ids[k], Version: versions[k]})
			}
		}
		res, err := s.Append(ctx, req)
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		for _, r := range res.Records {
			versions[slices.Index(ids, r.Stream)] = r.Version
		}
		out = append(out, res.Records...)
	}
	return out
}

func streamNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

var errBoom = errors.New("boom")

// counter counts events per stream in <name>_counts and records every
// applied position in <name>_applied, whose primary key turns a second
// application of an event into an error. It writes before it fails, so a
// failing event also tests the savepoint rollback.
type counter struct {
	name   string
	policy projection.FailurePolicy

	mu      sync.Mutex
	fail    map[eventlog.Position]int // failures left per position; < 0: always
	tries   map[eventlog.Position]int
	hook    func(ctx context.Context, tx *sql.Tx, r eventlog.Record) error // runs first in Apply
	lastTx  *sql.Tx
	batches []int // events seen per transaction, in order
}

func newCounter(name string) *counter {
	return &counter{name: name, fail: map[eventlog.Position]int{}, tries: map[eventlog.Position]int{}}
}

func (c *counter) Name() string { return c.name }

func (c *counter) FailurePolicy() projection.FailurePolicy { return c.policy }

func (c *counter) Setup(ctx context.Context, tx *sql.Tx) error {
	// Portable SQL (see projection.Dialect): one statement per Exec.
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS "%[1]s_counts" (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS "%[1]s_applied" (position BIGINT PRIMARY KEY, stream TEXT NOT NULL, type TEXT NOT NULL)`,
	} {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(q, c.name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *counter) Reset(ctx context.Context, tx *sql.Tx) error {
	for _, q := range []string{`DELETE FROM "%[1]s_counts"`, `DELETE FROM "%[1]s_applied"`} {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(q, c.name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *counter) failAt(pos eventlog.Position, times int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail[pos] = times
}

func (c *counter) setHook(h func(ctx context.Context, tx *sql.Tx, r eventlog.Record) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hook = h
}

func (c *counter) triesAt(pos eventlog.Position) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tries[pos]
}

func (c *counter) batchSizes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.batches)
}

func (c *counter) Apply(ctx context.Context, tx *sql.Tx, r eventlog.Record) error {
	c.mu.Lock()
	if tx != c.lastTx {
		c.lastTx = tx
		c.batches = append(c.batches, 0)
	}
	c.batches[len(c.batches)-1]++
	c.tries[r.Position]++
	hook := c.hook
	c.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, tx, r); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO "%s_applied" (position, stream, type) VALUES ($1, $2, $3)`, c.name),
		int64(r.Position), r.Stream.String(), r.Type); err != nil {
		return fmt.Errorf("record position %d: %w", r.Position, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO "%[1]s_counts" (stream, n) VALUES ($1, 1)
		ON CONFLICT (stream) DO UPDATE SET n = "%[1]s_counts".n + 1`, c.name), r.Stream.String()); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if left, ok := c.fail[r.Position]; ok && left != 0 {
		if left > 0 {
			c.fail[r.Position] = left - 1
		}
		return fmt.Errorf("position %d: %w", r.Position, errBoom)
	}
	return nil
}

// filtered is a counter that asks for some event types only.
type filtered struct {
	*counter
	types []string
}

func (f filtered) EventTypes() []string { return f.types }

// readModel is a counter's tables: the count per stream and the applied
// positions.
type readModel struct {
	counts  map[string]int
	applied []eventlog.Position
}

func readCounter(t testing.TB, db *sql.DB, name string) readModel {
	t.Helper()
	ctx := context.Background()
	m := readModel{counts: map[string]int{}}
	rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT stream, n FROM "%s_counts"`, name))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		m.counts[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	prow, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT position FROM "%s_applied" ORDER BY position`, name))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = prow.Close() }()
	for prow.Next() {
		var p int64
		if err := prow.Scan(&p); err != nil {
			t.Fatal(err)
		}
		m.applied = append(m.applied, eventlog.Position(p))
	}
	if err := prow.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// expectModel is the read model of a counter that applied exactly the
// records for which keep returns true.
func expectModel(recs []eventlog.Record, keep func(eventlog.Record) bool) readModel {
	m := readModel{counts: map[string]int{}}
	for _, r := range recs {
		if keep == nil || keep(r) {
			m.counts[r.Stream.String()]++
			m.applied = append(m.applied, r.Position)
		}
	}
	return m
}

// checkModel fails the test unless the counter's tables hold exactly want.
func checkModel(t testing.TB, db *sql.DB, name string, want readModel) {
	t.Helper()
	got := readCounter(t, db, name)
	if !slices.Equal(got.applied, want.applied) {
		t.Errorf("%s applied %d positions, want %d; first difference: %s", name, len(got.applied), len(want.applied),
			firstDiff(got.applied, want.applied))
	}
	if len(got.counts) != len(want.counts) {
		t.Errorf("%s counts %d streams, want %d", name, len(got.counts), len(want.counts))
	}
	for s, n := range want.counts {
		if got.counts[s] != n {
			t.Errorf("%s: stream %s counted %d, want %d", name, s, got.counts[s], n)
		}
	}
}

func firstDiff(got, want []eventlog.Position) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("index %d: got position %d, want %d", i, got[i], want[i])
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("extra position %d", got[len(want)])
	}
	if len(want) > len(got) {
		return fmt.Sprintf("missing position %d", want[len(got)])
	}
	return "none"
}

func upTo(p eventlog.Position) func(eventlog.Record) bool {
	return func(r eventlog.Record) bool { return r.Position <= p }
}

func checkpoint(t testing.TB, r *projection.Runner, name string) eventlog.Position {
	t.Helper()
	cp, err := r.Checkpoint(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func statusOf(t testing.TB, r *projection.Runner, name string) projection.Status {
	t.Helper()
	all, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s", name)
	return projection.Status{}
}

// batchCounter is a counter that is a BatchProjector: ApplyBatch runs the
// counter's Apply on each event (so it writes before a failing event
// fails) and counts its calls and the events they carried.
type batchCounter struct {
	*counter
	bmu         sync.Mutex
	batchCalls  int
	batchEvents int
}

func (b *batchCounter) ApplyBatch(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	b.bmu.Lock()
	b.batchCalls++
	b.batchEvents += len(recs)
	b.bmu.Unlock()
	for _, r := range recs {
		if err := b.Apply(ctx, tx, r); err != nil {
			return err
		}
	}
	return nil
}

func (b *batchCounter) calls() (calls, events int) {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	return b.batchCalls, b.batchEvents
}
