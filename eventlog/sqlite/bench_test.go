package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// The benchmarks measure the store beside a raw ceiling: plain database/sql
// INSERTs into a file with the same schema, indexes and triggers (the
// store's own migration creates it) and the same pragmas. Run them with
// `make bench`; the ratio of store to raw is what to read, since absolute
// rates depend on the disk and on whatever else the machine is doing.

var benchData = json.RawMessage(`{"account":"alice","amount":1250}`)

func benchSyncs() []sqlite.Synchronous {
	return []sqlite.Synchronous{sqlite.SyncFull, sqlite.SyncNormal}
}

func openBenchStore(b *testing.B, opts sqlite.Options) *sqlite.Store {
	b.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "events.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// rawLog is the ceiling: the same file layout written with plain SQL.
type rawLog struct {
	db     *sql.DB
	insert *sql.Stmt
	next   map[string]int64
}

func openRaw(b *testing.B, opts sqlite.Options) *rawLog {
	b.Helper()
	path := filepath.Join(b.TempDir(), "raw.db")
	s, err := sqlite.Open(context.Background(), path, opts) // creates the schema
	if err != nil {
		b.Fatal(err)
	}
	_ = s.Close()
	db, err := sql.Open("sqlite", opts.DSN(path, "immediate"))
	if err != nil {
		b.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	insert, err := db.Prepare(`INSERT INTO events (stream_id, version, type, data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = insert.Close(); _ = db.Close() })
	return &rawLog{db: db, insert: insert, next: map[string]int64{}}
}

// write inserts rows rows in one transaction.
func (r *rawLog) write(b *testing.B, rows int) {
	tx, err := r.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	st := tx.Stmt(r.insert)
	for range rows {
		r.next["account-alice"]++
		if _, err := st.Exec("account-alice", r.next["account-alice"], "MoneyDeposited", string(benchData), `{"event_id":"`+uuid.NewString()+`"}`, time.Now().UnixMicro()); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// appender appends batches of events spread over streams, tracking versions.
type appender struct {
	store   eventlog.Store
	streams []eventlog.StreamID
	version []eventlog.Version
}

func newAppender(s eventlog.Store, streams int) *appender {
	a := &appender{store: s}
	for i := range streams {
		a.streams = append(a.streams, eventlog.MustStreamID(fmt.Sprintf("account-%d", i)))
		a.version = append(a.version, 0)
	}
	return a
}

func (a *appender) append(b *testing.B, events int) {
	req := eventlog.AppendRequest{}
	for i, s := range a.streams {
		req.Expected = append(req.Expected, eventlog.ExpectedVersion{Stream: s, Version: a.version[i]})
	}
	for i := range events {
		req.Events = append(req.Events, eventlog.Event{
			Stream: a.streams[i%len(a.streams)], Type: "MoneyDeposited", Data: benchData,
			Metadata: eventlog.Metadata{Command: "deposit"},
		})
	}
	if _, err := a.store.Append(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	for i := range events {
		a.version[i%len(a.streams)]++
	}
}

func reportRate(b *testing.B, perOp int, unit string) {
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), unit)
}

// BenchmarkAppend appends events/append events spread over streams/append
// streams, one append after another; every stream is in the consistency
// check (with 1 event and 3 streams, two are read-only).
func BenchmarkAppend(b *testing.B) {
	for _, sync := range benchSyncs() {
		for _, streams := range []int{1, 3} {
			for _, events := range []int{1, 10, 100} {
				b.Run(fmt.Sprintf("sync=%s/streams=%d/events=%d", sync, streams, events), func(b *testing.B) {
					a := newAppender(openBenchStore(b, sqlite.Options{Synchronous: sync}), streams)
					b.ResetTimer()
					for b.Loop() {
						a.append(b, events)
					}
					reportRate(b, events, "events/s")
				})
			}
		}
	}
}

// BenchmarkRaw is the ceiling: plain INSERTs, one row per transaction and
// 100 rows per transaction, with the store's schema and pragmas.
func BenchmarkRaw(b *testing.B) {
	for _, sync := range benchSyncs() {
		for _, rows := range []int{1, 100} {
			b.Run(fmt.Sprintf("sync=%s/rows_per_tx=%d", sync, rows), func(b *testing.B) {
				raw := openRaw(b, sqlite.Options{Synchronous: sync})
				b.ResetTimer()
				for b.Loop() {
					raw.write(b, rows)
				}
				reportRate(b, rows, "events/s")
			})
		}
	}
}

// BenchmarkAppendVsRaw alternates single-event appends and one-row raw
// transactions in rounds, so that both see the same machine at the same
// time, and reports the ratio of their rates (the target is 0.8 or more).
func BenchmarkAppendVsRaw(b *testing.B) {
	const round = 50
	for _, sync := range benchSyncs() {
		b.Run("sync="+string(sync), func(b *testing.B) {
			opts := sqlite.Options{Synchronous: sync}
			a := newAppender(openBenchStore(b, opts), 1)
			raw := openRaw(b, opts)
			var storeTime, rawTime time.Duration
			n := 0
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				for range round {
					a.append(b, 1)
				}
				storeTime += time.Since(start)
				start = time.Now()
				for range round {
					raw.write(b, 1)
				}
				rawTime += time.Since(start)
				n += round
			}
			storeRate := float64(n) / storeTime.Seconds()
			rawRate := float64(n) / rawTime.Seconds()
			b.ReportMetric(storeRate, "store-events/s")
			b.ReportMetric(rawRate, "raw-events/s")
			b.ReportMetric(storeRate/rawRate, "store/raw")
		})
	}
}

// BenchmarkReadStream reads a stream of 10,000 events from the start.
func BenchmarkReadStream(b *testing.B) {
	const events = 10_000
	s := openBenchStore(b, sqlite.Options{Synchronous: sqlite.SyncNormal})
	a := newAppender(s, 1)
	for range events / 100 {
		a.append(b, 100)
	}
	b.ResetTimer()
	for b.Loop() {
		n := 0
		for _, err := range s.ReadStream(context.Background(), a.streams[0], 0) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != events {
			b.Fatalf("read %d events, want %d", n, events)
		}
	}
	reportRate(b, events, "events/s")
}

// BenchmarkReadFeed reads a feed of 10,000 events over 10 streams in pages
// of 1,000, unfiltered and filtered by one of two types.
func BenchmarkReadFeed(b *testing.B) {
	const events = 10_000
	s := openBenchStore(b, sqlite.Options{Synchronous: sqlite.SyncNormal})
	a := newAppender(s, 10)
	for range events / 100 {
		a.append(b, 100)
	}
	for _, types := range [][]string{nil, {"MoneyDeposited"}} {
		b.Run(fmt.Sprintf("types=%d", len(types)), func(b *testing.B) {
			for b.Loop() {
				after, n := eventlog.Position(0), 0
				for {
					page, err := s.ReadFeed(context.Background(), eventlog.FeedQuery{After: after, Limit: 1000, Types: slices.Clone(types)})
					if err != nil {
						b.Fatal(err)
					}
					if len(page) == 0 {
						break
					}
					n += len(page)
					after = page[len(page)-1].Position
				}
				if n != events {
					b.Fatalf("read %d events, want %d", n, events)
				}
			}
			reportRate(b, events, "events/s")
		})
	}
}
