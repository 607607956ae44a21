// Package lagprobe measures, for benchmarks, how far projections lag
// behind an SQLite event log: it samples the log's head and the
// projections' checkpoints straight from the files that a writer and a
// projection runner (of this process or another) share.
package lagprobe

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Figures is the worst lag a Probe saw.
type Figures struct {
	MaxEvents uint64        // events past the slowest projection's checkpoint
	MaxAge    time.Duration // how long ago the oldest of them was recorded
	Samples   int
}

// Probe samples the lag until Stop.
type Probe struct {
	cancel  context.CancelFunc
	done    chan struct{}
	figures Figures
	err     error
}

// Start samples, every every, the head of the event log at eventsDB and
// the checkpoints of projections in the read-model database at readDB,
// both opened read-only. Until the runner has created its tables or
// written every projection's first checkpoint, every event counts as
// behind. Errors: a file that cannot be opened.
func Start(eventsDB, readDB string, projections []string, every time.Duration) (*Probe, error) {
	logDB, err := sql.Open("sqlite", readOnlyDSN(eventsDB))
	if err != nil {
		return nil, fmt.Errorf("lagprobe: %w", err)
	}
	read, err := sql.Open("sqlite", readOnlyDSN(readDB))
	if err != nil {
		_ = logDB.Close()
		return nil, fmt.Errorf("lagprobe: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Probe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer func() { _ = logDB.Close(); _ = read.Close() }()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			last := false
			select {
			case <-ctx.Done():
				last = true
			case <-tick.C:
			}
			behind, age, err := sample(context.Background(), logDB, read, projections)
			if err != nil {
				p.err = fmt.Errorf("lagprobe: sample: %w", err)
				return
			}
			p.figures.Samples++
			p.figures.MaxEvents = max(p.figures.MaxEvents, behind)
			p.figures.MaxAge = max(p.figures.MaxAge, age)
			if last {
				return
			}
		}
	}()
	return p, nil
}

// readOnlyDSN opens path read-only: never created, never switched to
// another journal mode.
func readOnlyDSN(path string) string {
	return (&url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&_pragma=busy_timeout(10000)"}).String()
}

// Stop takes a last sample, ends the sampling and returns the worst lag
// seen. Errors: a sample failed (sampling stopped there).
func (p *Probe) Stop() (Figures, error) {
	p.cancel()
	<-p.done
	return p.figures, p.err
}

// sample reads the checkpoints first and the head after them, so that the
// lag is never under-counted: the events after the slowest checkpoint,
// and how long ago the first of them was recorded.
func sample(ctx context.Context, logDB, read *sql.DB, projections []string) (behind uint64, age time.Duration, err error) {
	args := make([]any, len(projections))
	marks := make([]string, len(projections))
	for i, name := range projections {
		args[i], marks[i] = name, "?"
	}
	var slowest sql.NullInt64
	err = read.QueryRowContext(ctx, `SELECT MIN(position) FROM projection_checkpoints WHERE name IN (`+strings.Join(marks, ", ")+`)
		HAVING COUNT(*) = `+fmt.Sprint(len(projections)), args...).Scan(&slowest)
	if err != nil && !errors.Is(err, sql.ErrNoRows) && !notYetCreated(err) {
		return 0, 0, err
	}
	var head int64
	if err := logDB.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM events`).Scan(&head); err != nil {
		if notYetCreated(err) {
			return 0, 0, nil // the writer has not created the log yet
		}
		return 0, 0, err
	}
	if head <= slowest.Int64 {
		return 0, 0, nil
	}
	var recordedAt int64
	if err := logDB.QueryRowContext(ctx, `SELECT recorded_at FROM events WHERE position = ?`, slowest.Int64+1).Scan(&recordedAt); err != nil {
		return 0, 0, err
	}
	return uint64(head - slowest.Int64), time.Since(time.UnixMicro(recordedAt)), nil
}

// notYetCreated reports whether err says that a database file or its
// tables do not exist yet (the runner or the writer has not started).
func notYetCreated(err error) bool {
	var coded interface{ Code() int }
	if errors.As(err, &coded) && coded.Code()&0xff == sqlite3.SQLITE_CANTOPEN {
		return true
	}
	return strings.Contains(err.Error(), "no such table")
}
