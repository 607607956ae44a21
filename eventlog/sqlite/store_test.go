package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/eventlogtest"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/internal/testproc"
)

func TestConformance(t *testing.T) {
	configs := []struct {
		name string
		opts sqlite.Options
	}{
		{"WAL", sqlite.Options{Journal: sqlite.JournalWAL}},
		{"Truncate", sqlite.Options{Journal: sqlite.JournalTruncate}},
		{"WALSyncNormal", sqlite.Options{Journal: sqlite.JournalWAL, Synchronous: sqlite.SyncNormal}},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			eventlogtest.Run(t, func(t *testing.T) eventlog.Store {
				return openStore(t, newPath(t), c.opts)
			})
		})
	}
}

func newPath(t *testing.T) string { return filepath.Join(t.TempDir(), "events.db") }

// openStore opens path and closes the store when the test ends.
func openStore(t *testing.T, path string, opts sqlite.Options) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func sid(s string) eventlog.StreamID { return eventlog.MustStreamID(s) }

func appendOne(t *testing.T, s eventlog.Store, st eventlog.StreamID, v eventlog.Version, typ, data, commandID string) eventlog.AppendResult {
	t.Helper()
	res, err := s.Append(context.Background(), eventlog.AppendRequest{
		Expected:  []eventlog.ExpectedVersion{{Stream: st, Version: v}},
		Events:    []eventlog.Event{{Stream: st, Type: typ, Data: json.RawMessage(data)}},
		CommandID: commandID,
	})
	if err != nil {
		t.Fatalf("Append to %s at %d: %v", st, v, err)
	}
	return res
}

func readAll(t *testing.T, s eventlog.Store) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	q := eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit}
	for {
		page, err := s.ReadFeed(context.Background(), q)
		if err != nil {
			t.Fatalf("ReadFeed: %v", err)
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out
		}
		q.After = page[len(page)-1].Position
	}
}

func TestEventsAreImmutable(t *testing.T) {
	path := newPath(t)
	s := openStore(t, path, sqlite.Options{})
	st := sid("order-1")
	appendOne(t, s, st, 0, "OrderPlaced", `{"total":12}`, "cmd-1")

	db, err := sql.Open("sqlite", sqlite.Options{}.DSN(path, "immediate"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()

	type row struct {
		position, version, recordedAt int64
		stream, typ, data, metadata   string
	}
	readRows := func() []row {
		t.Helper()
		rows, err := db.Query(`SELECT position, stream_id, version, type, data, metadata, recorded_at FROM events ORDER BY position`)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = rows.Close() }()
		var out []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.position, &r.stream, &r.version, &r.typ, &r.data, &r.metadata, &r.recordedAt); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	commandRow := func() string {
		t.Helper()
		var id string
		var first, last int64
		if err := db.QueryRow(`SELECT command_id, first_position, last_position FROM commands`).Scan(&id, &first, &last); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s %d %d", id, first, last)
	}

	beforeRows, beforeCommand := readRows(), commandRow()
	if len(beforeRows) != 1 {
		t.Fatalf("%d rows, want 1", len(beforeRows))
	}
	for _, stmt := range []string{
		`UPDATE events SET data = '{"total":0}' WHERE position = 1`,
		`UPDATE events SET stream_id = 'other', version = 7`,
		`DELETE FROM events WHERE position = 1`,
		`DELETE FROM events`,
		`UPDATE commands SET last_position = 99`,
		`DELETE FROM commands`,
	} {
		if _, err := db.Exec(stmt); err == nil {
			t.Errorf("%s: succeeded, want an error", stmt)
		}
	}
	if after := readRows(); len(after) != 1 || after[0] != beforeRows[0] {
		t.Errorf("rows changed: before %+v, after %+v", beforeRows, after)
	}
	if after := commandRow(); after != beforeCommand {
		t.Errorf("command row changed: before %s, after %s", beforeCommand, after)
	}

	// The store's own read pool refuses writes too.
	if _, err := s.DB().Exec(`INSERT INTO events (stream_id, version, type, data, metadata, recorded_at) VALUES ('x', 1, 'E', '{}', '{}', 0)`); err == nil {
		t.Errorf("insert through Store.DB succeeded, want an error")
	}
	if len(readAll(t, s)) != 1 {
		t.Errorf("the store does not read exactly one event")
	}
}

func TestReopenKeepsEvents(t *testing.T) {
	for _, journal := range []sqlite.Journal{sqlite.JournalWAL, sqlite.JournalTruncate} {
		t.Run(string(journal), func(t *testing.T) {
			path := newPath(t)
			opts := sqlite.Options{Journal: journal}
			st := sid("account-1")

			s, err := sqlite.Open(context.Background(), path, opts)
			if err != nil {
				t.Fatal(err)
			}
			first := appendOne(t, s, st, 0, "Opened", `{}`, "open-1")
			appendOne(t, s, st, 1, "Deposited", `{"amount":5}`, "")
			written := readAll(t, s)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			s = openStore(t, path, opts)
			got := readAll(t, s)
			if len(got) != len(written) {
				t.Fatalf("after reopening: %d events, want %d", len(got), len(written))
			}
			for i := range got {
				if got[i].Metadata != written[i].Metadata || got[i].Position != written[i].Position || got[i].Version != written[i].Version || !got[i].RecordedAt.Equal(written[i].RecordedAt) || string(got[i].Data) != string(written[i].Data) {
					t.Errorf("event %d after reopening: %+v, want %+v", i, got[i], written[i])
				}
			}
			// Idempotency keys survive too, and the stream goes on.
			res, err := s.Append(context.Background(), eventlog.AppendRequest{
				Expected:  []eventlog.ExpectedVersion{{Stream: st, Version: 0}},
				Events:    []eventlog.Event{{Stream: st, Type: "Opened", Data: json.RawMessage(`{}`)}},
				CommandID: "open-1",
			})
			if err != nil || !res.Duplicate || len(res.Records) != 1 || res.Records[0].Metadata != first.Records[0].Metadata {
				t.Errorf("repeat after reopening: %+v, %v; want the first append's record as a duplicate", res, err)
			}
			if r := appendOne(t, s, st, 2, "Deposited", `{"amount":1}`, ""); r.Records[0].Position != 3 || r.Records[0].Version != 3 {
				t.Errorf("append after reopening: position %d version %d, want 3 and 3", r.Records[0].Position, r.Records[0].Version)
			}
			requireSchemaVersion(t, s.DB())
		})
	}
}

// requireSchemaVersion checks that schema_version holds exactly one row, the
// number of migrations.
func requireSchemaVersion(t *testing.T, db *sql.DB) {
	t.Helper()
	migrations, err := filepath.Glob(filepath.Join("migrations", "*.sql"))
	if err != nil || len(migrations) == 0 {
		t.Fatalf("no migrations found: %v", err)
	}
	var n, v int
	if err := db.QueryRow(`SELECT COUNT(*), COALESCE(MAX(version), 0) FROM schema_version`).Scan(&n, &v); err != nil {
		t.Fatalf("schema_version: %v", err)
	}
	if n != 1 || v != len(migrations) {
		t.Errorf("schema_version has %d rows, version %d; want one row, version %d", n, v, len(migrations))
	}
}

func TestConcurrentOpenOfNewFile(t *testing.T) {
	const (
		rounds = 5
		opens  = 3
	)
	for _, journal := range []sqlite.Journal{sqlite.JournalWAL, sqlite.JournalTruncate} {
		t.Run(string(journal), func(t *testing.T) {
			for round := range rounds {
				path := newPath(t)
				opts := sqlite.Options{Journal: journal}
				stores := make([]*sqlite.Store, opens)
				errs := make([]error, opens)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for i := range stores {
					wg.Go(func() {
						<-start
						stores[i], errs[i] = sqlite.Open(context.Background(), path, opts)
					})
				}
				close(start)
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("round %d: Open %d: %v", round, i, err)
					}
					t.Cleanup(func() { _ = stores[i].Close() })
				}
				streams := make([]eventlog.StreamID, opens)
				want := make([]eventlog.Version, opens)
				for i, s := range stores {
					streams[i] = sid(fmt.Sprintf("from-%d", i))
					want[i] = 1
					appendOne(t, s, streams[i], 0, "E", `{}`, "")
				}
				for i, s := range stores {
					vs, err := s.StreamVersions(context.Background(), streams)
					if err != nil || !slices.Equal(vs, want) {
						t.Errorf("round %d: store %d sees versions %v, %v; want %v", round, i, vs, err, want)
					}
				}
				requireSchemaVersion(t, stores[0].DB())
			}
		})
	}
}

// TestOpenWhileFileIsLocked opens a new file while another connection holds
// its write lock, as another process migrating it at the same moment does:
// Open waits for the lock instead of failing.
func TestOpenWhileFileIsLocked(t *testing.T) {
	for _, journal := range []sqlite.Journal{sqlite.JournalWAL, sqlite.JournalTruncate} {
		t.Run(string(journal), func(t *testing.T) {
			path := newPath(t)
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			conn, err := db.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
				t.Fatal(err)
			}

			type result struct {
				s   *sqlite.Store
				err error
			}
			opened := make(chan result, 1)
			go func() {
				s, err := sqlite.Open(context.Background(), path, sqlite.Options{Journal: journal, BusyTimeout: 30 * time.Second})
				opened <- result{s, err}
			}()
			select {
			case r := <-opened:
				if r.err == nil {
					_ = r.s.Close()
				}
				t.Fatalf("Open returned while the file was locked: %v", r.err)
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
				t.Fatal(err)
			}
			r := <-opened
			if r.err != nil {
				t.Fatalf("Open after the lock was released: %v", r.err)
			}
			t.Cleanup(func() { _ = r.s.Close() })
			appendOne(t, r.s, sid("s"), 0, "E", `{}`, "")
		})
	}
}

func TestOpenRejects(t *testing.T) {
	tests := []struct {
		name string
		path func(dir string) string
		opts sqlite.Options
	}{
		{"empty path", func(string) string { return "" }, sqlite.Options{}},
		{"path with ?", func(dir string) string { return filepath.Join(dir, "events.db?mode=ro") }, sqlite.Options{}},
		{"path with #", func(dir string) string { return filepath.Join(dir, "events#1.db") }, sqlite.Options{}},
		{"file: URI", func(dir string) string { return "file:" + filepath.Join(dir, "events.db") }, sqlite.Options{}},
		{"in-memory", func(string) string { return ":memory:" }, sqlite.Options{}},
		{"bad synchronous", nil, sqlite.Options{Synchronous: "off"}},
		{"bad journal", nil, sqlite.Options{Journal: "delete"}},
		{"negative busy timeout", nil, sqlite.Options{BusyTimeout: -time.Second}},
		{"negative readers", nil, sqlite.Options{Readers: -1}},
		{"negative max batch", nil, sqlite.Options{MaxBatch: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "events.db")
			if tc.path != nil {
				path = tc.path(dir)
			}
			s, err := sqlite.Open(context.Background(), path, tc.opts)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q, %+v) succeeded, want an error", path, tc.opts)
			}
			if entries, _ := os.ReadDir(dir); len(entries) > 0 {
				t.Errorf("Open(%q) failed but left %s in the directory", path, entries[0].Name())
			}
		})
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want sqlite.Synchronous
		ok   bool
	}{
		{"full", sqlite.SyncFull, true}, {"FULL", sqlite.SyncFull, true}, {"Normal", sqlite.SyncNormal, true},
		{"off", "", false}, {"", "", false},
	} {
		got, err := sqlite.ParseSynchronous(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseSynchronous(%q) = %q, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		in   string
		want sqlite.Journal
		ok   bool
	}{
		{"wal", sqlite.JournalWAL, true}, {"WAL", sqlite.JournalWAL, true}, {"Truncate", sqlite.JournalTruncate, true},
		{"delete", "", false}, {"", "", false},
	} {
		got, err := sqlite.ParseJournal(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseJournal(%q) = %q, %v", tc.in, got, err)
		}
	}
}

// Two processes appending to one file. The test binary runs itself as the
// second process, told by these environment variables.
const (
	childDBEnv      = "EVENTLOG_SQLITE_TEST_CHILD_DB"
	childJournalEnv = "EVENTLOG_SQLITE_TEST_CHILD_JOURNAL"
	appendsEach     = 300
)

var sharedStreams = []eventlog.StreamID{sid("shared-0"), sid("shared-1"), sid("shared-2"), sid("shared-3")}

func TestTwoProcesses(t *testing.T) {
	if path := os.Getenv(childDBEnv); path != "" {
		runChild(t, path, sqlite.Journal(os.Getenv(childJournalEnv)))
		return
	}
	for _, journal := range []sqlite.Journal{sqlite.JournalWAL, sqlite.JournalTruncate} {
		t.Run(string(journal), func(t *testing.T) {
			t.Parallel()
			testTwoProcesses(t, journal)
		})
	}
}

// runChild appends, once the parent closes stdin, and prints what it
// appended.
func runChild(t *testing.T, path string, journal sqlite.Journal) {
	s := openStore(t, path, sqlite.Options{Journal: journal})
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	ids, conflicts, err := appendShared(s, "child")
	for _, id := range ids {
		fmt.Println("EVENT", id)
	}
	fmt.Println("CONFLICTS", conflicts)
	fmt.Println("ACKED", len(ids))
	if err != nil {
		t.Fatal(err)
	}
}

func testTwoProcesses(t *testing.T, journal sqlite.Journal) {
	path := newPath(t)
	s := openStore(t, path, sqlite.Options{Journal: journal})

	child := testproc.Start(t, "TestTwoProcesses", []string{childDBEnv + "=" + path, childJournalEnv + "=" + string(journal)})
	lines := child.Lines
	if !lines.Scan() || lines.Text() != "READY" {
		_ = child.CloseAndWait()
		t.Fatalf("child did not start: %q\n%s", lines.Text(), child.Stderr())
	}
	_ = child.Stdin.Close() // both go

	parentIDs, parentConflicts, parentErr := appendShared(s, "parent")

	var childIDs []uuid.UUID
	childAcked, childConflicts := -1, 0
	var other []string
	for lines.Scan() {
		word, arg, _ := strings.Cut(lines.Text(), " ")
		switch word {
		case "EVENT":
			childIDs = append(childIDs, uuid.MustParse(arg))
		case "ACKED":
			childAcked, _ = strconv.Atoi(arg)
		case "CONFLICTS":
			childConflicts, _ = strconv.Atoi(arg)
		default:
			other = append(other, lines.Text())
		}
	}
	if err := child.Cmd.Wait(); err != nil {
		t.Fatalf("child: %v\nstdout: %s\nstderr: %s", err, strings.Join(other, "\n"), child.Stderr())
	}
	if parentErr != nil {
		t.Fatalf("parent: %v", parentErr)
	}
	if childAcked != len(childIDs) {
		t.Fatalf("child reported %d acknowledged appends and %d events", childAcked, len(childIDs))
	}
	t.Logf("parent: %d appends, %d conflicts; child: %d appends, %d conflicts", len(parentIDs), parentConflicts, childAcked, childConflicts)

	acked := map[uuid.UUID]string{}
	for _, id := range parentIDs {
		acked[id] = "parent"
	}
	for _, id := range childIDs {
		acked[id] = "child"
	}
	if len(acked) != 2*appendsEach {
		t.Fatalf("%d distinct acknowledged events, want %d", len(acked), 2*appendsEach)
	}

	feed := readAll(t, s)
	if len(feed) != len(acked) {
		t.Errorf("feed has %d events, the processes acknowledged %d", len(feed), len(acked))
	}
	next := eventlogtest.CheckLog(t, feed)
	for _, r := range feed {
		if _, ok := acked[r.Metadata.EventID]; !ok {
			t.Errorf("position %d: event %s was acknowledged to neither process", r.Position, r.Metadata.EventID)
		}
		delete(acked, r.Metadata.EventID)
	}
	if len(acked) > 0 {
		t.Errorf("%d acknowledged events are missing from the feed", len(acked))
	}
	vs, err := s.StreamVersions(context.Background(), sharedStreams)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range sharedStreams {
		if vs[i] != next[st] {
			t.Errorf("%s: StreamVersions %d, feed has %d events", st, vs[i], next[st])
		}
	}
}

// appendShared appends appendsEach single events to the shared streams,
// each at the stream's current version, retrying after a conflict. It
// returns the ids of the acknowledged events and the number of conflicts.
func appendShared(s eventlog.Store, who string) ([]uuid.UUID, int, error) {
	ctx := context.Background()
	var ids []uuid.UUID
	conflicts := 0
	for i := range appendsEach {
		st := sharedStreams[i%len(sharedStreams)]
		for attempt := 0; ; attempt++ {
			if attempt == 10_000 {
				return ids, conflicts, fmt.Errorf("%s append %d: still conflicting", who, i)
			}
			vs, err := s.StreamVersions(ctx, []eventlog.StreamID{st})
			if err != nil {
				return ids, conflicts, fmt.Errorf("%s append %d: %w", who, i, err)
			}
			res, err := s.Append(ctx, eventlog.AppendRequest{
				Expected: []eventlog.ExpectedVersion{{Stream: st, Version: vs[0]}},
				Events:   []eventlog.Event{{Stream: st, Type: "Tick", Data: json.RawMessage(fmt.Sprintf(`{"who":%q,"i":%d}`, who, i))}},
			})
			if errors.Is(err, eventlog.ErrConflict) {
				conflicts++
				continue
			}
			if err != nil {
				return ids, conflicts, fmt.Errorf("%s append %d: %w", who, i, err)
			}
			ids = append(ids, res.Records[0].Metadata.EventID)
			break
		}
	}
	return ids, conflicts, nil
}
