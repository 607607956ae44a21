package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcore-go/eventcore/eventlog"
)

// committer runs the group commit: writers loops each take the appends
// waiting in calls (up to maxBatch) and commit them with one call of
// eventlog_append. A loop never puts two appends with one command id in a
// batch; the later waits for the next batch, where it finds the first
// recorded (or refused).
type committer struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	calls    chan *appendCall
	quit     chan struct{}
	wg       sync.WaitGroup
	maxBatch int
}

func newCommitter(pool *pgxpool.Pool, writers, maxBatch int, log *slog.Logger) *committer {
	w := &committer{pool: pool, log: log, maxBatch: maxBatch,
		calls: make(chan *appendCall, maxBatch), quit: make(chan struct{})}
	for range writers {
		w.wg.Go(w.loop)
	}
	return w
}

// submit queues c and waits for its outcome. If ctx ends before a loop
// takes the call, the call is withdrawn and ctx's error returned: nothing
// was written. Once taken, the call runs to completion and its outcome is
// returned, whatever ctx does.
func (w *committer) submit(ctx context.Context, c *appendCall) (appendOutcome, error) {
	select {
	case w.calls <- c:
	case <-ctx.Done():
		return appendOutcome{}, ctx.Err()
	}
	out, err := c.Await(ctx)
	if err != nil {
		return appendOutcome{}, err
	}
	return out, out.err
}

func (w *committer) loop() {
	var carry []*appendCall
	for {
		var batch []*appendCall
		keys := map[string]bool{}
		place := func(c *appendCall) {
			if id := c.req.CommandID; id != "" {
				if keys[id] {
					carry = append(carry, c)
					return
				}
				keys[id] = true
			}
			batch = append(batch, c)
		}
		take := func(c *appendCall) {
			if c.Take() {
				place(c)
			}
		}
		waiting := carry
		carry = nil
		for _, c := range waiting {
			place(c)
		}
		if len(batch) == 0 {
			select {
			case c := <-w.calls:
				take(c)
			case <-w.quit:
				return
			}
		}
	drain:
		for len(batch) < w.maxBatch {
			select {
			case c := <-w.calls:
				take(c)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			w.commit(batch)
		}
	}
}

// commit runs batch and delivers every outcome. When the server refused
// the statement (it rolled back: nothing was written) for a reason other
// than a retried one, the appends are run again one by one, so that one
// append's failure (data the server refuses) never fails another. When the
// outcome is unknown (the connection broke after the statement was sent,
// or the batch ran out of time), the statement may have committed: running
// the appends again would find their own events and answer conflicts, and
// a caller's retry would apply them twice. Every append of the batch then
// fails with eventlog.ErrStorageUnavailable instead.
func (w *committer) commit(batch []*appendCall) {
	outcomes, err := w.run(batch)
	if err != nil && len(batch) > 1 && refusedByServer(err) {
		for _, c := range batch {
			w.commit([]*appendCall{c})
		}
		return
	}
	for i, c := range batch {
		switch {
		case err == nil:
			c.Deliver(outcomes[i])
		case refusedByServer(err):
			c.Deliver(appendOutcome{err: fmt.Errorf("postgres: append: %w", err)})
		default:
			c.Deliver(appendOutcome{err: fmt.Errorf("postgres: append: outcome unknown: %w: %w", eventlog.ErrStorageUnavailable, err)})
		}
	}
}

// refusedByServer reports whether err is PostgreSQL's answer to the
// statement, which the server rolled back.
func refusedByServer(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

// batchTimeout bounds one run of a batch's statement: a connection that
// stalls without breaking (a failover, a NAT that forgot it) must not hold
// its appends for as long as TCP keepalive takes.
const batchTimeout = 30 * time.Second

// Retry bounds of a batch that PostgreSQL aborted for a transient reason.
const (
	maxBatchAttempts = 100
	retryBackoffMin  = time.Millisecond
	retryBackoffMax  = 100 * time.Millisecond
)

// run executes batch in one statement (its own transaction), running it
// again after a deadlock, a serialization failure, a command id recorded
// concurrently, or a connection lost before the statement was sent.
func (w *committer) run(batch []*appendCall) ([]appendOutcome, error) {
	// The statement runs to completion once its calls are taken: a caller
	// that gives up must not leave it with an unknown outcome. Only
	// batchTimeout ends it.
	backoff := retryBackoffMin
	for attempt := 1; ; attempt++ {
		now := time.Now().UTC().Truncate(time.Microsecond)
		ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
		outcomes, err := w.exec(ctx, batch, now)
		cancel()
		if err == nil {
			return outcomes, nil
		}
		if !retryable(err) || attempt == maxBatchAttempts {
			return nil, err
		}
		w.log.Debug("postgres: append batch retried", "attempt", attempt, "appends", len(batch), "err", err)
		time.Sleep(backoff/2 + rand.N(backoff/2+1))
		backoff = min(2*backoff, retryBackoffMax)
	}
}

func (w *committer) exec(ctx context.Context, batch []*appendCall, now time.Time) ([]appendOutcome, error) {
	args := buildBatch(batch, now)
	rows, err := w.pool.Query(ctx, appendSQL, args.list()...)
	if err != nil {
		return nil, err
	}
	outcomes := make([]appendOutcome, len(batch))
	seen := 0
	var (
		index, status int32
		first, last   int64
		actual        []int64
	)
	_, err = pgx.ForEachRow(rows, []any{&index, &status, &first, &last, &actual}, func() error {
		if index < 1 || int(index) > len(batch) {
			return fmt.Errorf("eventlog_append answered for append %d of %d", index, len(batch))
		}
		outcomes[index-1] = batch[index-1].outcome(status, first, last, actual, now)
		seen++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if seen != len(batch) {
		return nil, fmt.Errorf("eventlog_append answered for %d of %d appends", seen, len(batch))
	}
	return outcomes, nil
}

// retryable reports whether a failed batch wrote nothing and may succeed
// when run again: a deadlock or a serialization failure, a command id
// another batch recorded first, or a connection that failed before the
// statement was sent (a cluster resuming from a pause, a proxy restarting).
func retryable(err error) bool {
	var connect *pgconn.ConnectError
	if errors.As(err, &connect) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40P01", // deadlock_detected
			"40001": // serialization_failure
			return true
		case "23505": // unique_violation
			return pgErr.ConstraintName == "commands_pkey"
		}
		return false
	}
	return pgconn.SafeToRetry(err)
}

// close stops the loops; only Store.Close calls it, after every Append has
// returned.
func (w *committer) close() {
	close(w.quit)
	w.wg.Wait()
}

// result completes an outcome for the caller: a duplicate's records are
// read by the caller, outside the committer.
func (s *Store) result(ctx context.Context, out appendOutcome) (eventlog.AppendResult, error) {
	if !out.dup {
		return out.result, nil
	}
	records, err := s.recordsBetween(context.WithoutCancel(ctx), out.dupFirst, out.dupLast)
	if err != nil {
		return eventlog.AppendResult{}, fmt.Errorf("postgres: append: duplicate command: %w", err)
	}
	return eventlog.AppendResult{Records: records, Duplicate: true}, nil
}

func (s *Store) recordsBetween(ctx context.Context, first, last int64) ([]eventlog.Record, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position`, first, last)
	if err != nil {
		return nil, err
	}
	return collectRecords(rows)
}
