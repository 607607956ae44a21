package projection

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// batchResult is what one batch did.
type batchResult struct {
	committed        bool
	done             bool // the target is reached or the log has no more events
	applied, skipped int
	checkpoint       eventlog.Position
	released         bool // the lease was given back with the batch
}

// feedPage is the events of a batch read before its transaction.
type feedPage struct {
	after eventlog.Position // the checkpoint the page was read after
	head  eventlog.Position // the head read before the feed
	recs  []eventlog.Record // the projection's events of the page
	full  bool              // the feed answered a whole batch
	last  eventlog.Position // the position of the feed's last answer, 0 when none
}

// feedReader reads a projection's pages of the feed: by itself, or
// through a feedShare that reads each page once for every projection of a
// CatchUpAll.
type feedReader struct {
	r     *Runner
	name  string
	types []string            // the projection's types; nil means all
	want  map[string]struct{} // the same as a set; nil means all
	share *feedShare          // nil: read alone
}

func (r *Runner) newFeedReader(e *entry, share *feedShare) *feedReader {
	f := &feedReader{r: r, name: e.name, types: eventTypes(e.p), share: share}
	if len(f.types) > 0 {
		f.want = make(map[string]struct{}, len(f.types))
		for _, t := range f.types {
			f.want[t] = struct{}{}
		}
	}
	return f
}

// page reads up to BatchSize events after cp, and the head before them:
// every event up to that head was committed before the feed query, so a
// short answer has shown every match up to it. A shared page read for
// another projection serves only when it is full or its head has reached
// target, so that a short page still means the target is reached.
func (f *feedReader) page(ctx context.Context, cp, target eventlog.Position) (feedPage, error) {
	if f.share == nil {
		return f.r.readPage(ctx, f.name, f.types, cp)
	}
	page, err := f.share.read(ctx, f, cp, target)
	if err != nil {
		return page, err
	}
	if f.want == nil {
		return page, nil
	}
	recs := make([]eventlog.Record, 0, len(page.recs))
	for _, rec := range page.recs {
		if _, ok := f.want[rec.Type]; ok {
			recs = append(recs, rec)
		}
	}
	page.recs = recs
	return page, nil
}

// readPage reads up to BatchSize events of types after cp, and the head
// before them.
func (r *Runner) readPage(ctx context.Context, name string, types []string, cp eventlog.Position) (feedPage, error) {
	head, err := r.store.Head(ctx)
	if err != nil {
		return feedPage{}, fmt.Errorf("projection %q: read head: %w", name, err)
	}
	recs, err := r.store.ReadFeed(ctx, eventlog.FeedQuery{After: cp, Limit: r.batch, Types: types})
	if err != nil {
		return feedPage{}, fmt.Errorf("projection %q: read feed after %d: %w", name, cp, err)
	}
	page := feedPage{after: cp, head: head, recs: recs, full: len(recs) == r.batch}
	if len(recs) > 0 {
		page.last = recs[len(recs)-1].Position
	}
	return page, nil
}

// feedShare lets the projections of one CatchUpAll read each page of the
// feed once: a page is read with the union of their types, kept until
// each projection has taken it (or until newer pages push it out), and
// each projection keeps its own events of it. Each still applies its page
// in its own transaction, under its own lease and checkpoint; a failed
// read is never shared (the next taker reads again).
type feedShare struct {
	types []string // the union of the projections' types; nil means all
	users int      // the projections sharing
	keep  int      // the most pages kept

	mu    sync.Mutex
	pages map[eventlog.Position]*sharedPage // by the position read after
	order []eventlog.Position               // keys, oldest first
}

type sharedPage struct {
	done  chan struct{} // closed when page and err are set
	page  feedPage
	err   error
	taken int
}

func (r *Runner) newFeedShare(names []string) *feedShare {
	s := &feedShare{users: len(names), keep: 2*len(names) + 2, pages: make(map[eventlog.Position]*sharedPage)}
	seen := map[string]bool{}
	for _, name := range names {
		types := eventTypes(r.entries[name].p)
		if len(types) == 0 {
			s.types = nil
			return s
		}
		for _, t := range types {
			if !seen[t] {
				seen[t] = true
				s.types = append(s.types, t)
			}
		}
	}
	return s
}

// read returns the page after cp, read with the union of the types: one
// read or being read for another projection when it may serve, else one
// read now (and offered to the others).
func (s *feedShare) read(ctx context.Context, f *feedReader, cp, target eventlog.Position) (feedPage, error) {
	s.mu.Lock()
	if p, ok := s.pages[cp]; ok {
		s.mu.Unlock()
		select {
		case <-p.done:
		case <-ctx.Done():
			return feedPage{}, fmt.Errorf("projection %q: read feed after %d: %w", f.name, cp, ctx.Err())
		}
		s.mu.Lock()
		if p.err == nil && (p.page.full || p.page.head >= target) {
			if p.taken++; p.taken >= s.users && s.pages[cp] == p {
				delete(s.pages, cp)
			}
			s.mu.Unlock()
			return p.page, nil
		}
		if s.pages[cp] == p {
			delete(s.pages, cp)
		}
	}
	p := &sharedPage{done: make(chan struct{}), taken: 1}
	if s.users > 1 {
		s.pages[cp] = p
		s.order = append(s.order, cp)
		for len(s.pages) > s.keep && len(s.order) > 0 {
			delete(s.pages, s.order[0])
			s.order = s.order[1:]
		}
		if len(s.order) > 4*s.keep { // keys already gone
			s.order = slices.DeleteFunc(s.order, func(k eventlog.Position) bool { _, ok := s.pages[k]; return !ok })
		}
	}
	s.mu.Unlock()
	p.page, p.err = f.r.readPage(ctx, f.name, s.types, cp)
	if p.err != nil {
		s.mu.Lock()
		if s.pages[cp] == p {
			delete(s.pages, cp)
		}
		s.mu.Unlock()
	}
	close(p.done)
	return p.page, p.err
}

// runBatch runs one batch in one transaction. It takes the lease in that
// transaction when take is set, and renews it otherwise; a batch that
// reaches the end gives it back in the same transaction. The events are
// read before the transaction begins, after the checkpoint cp read before
// it too (so that on SQLite the feed is read while another projection
// writes), and read again inside it if the checkpoint has moved meanwhile.
//
// The batch's events are first applied without a savepoint (on SQLite a
// savepoint journals every page the batch changes); when that fails, the
// transaction is rolled back and the batch runs again in a new one, where
// the events are applied as applyAll does after a failure.
func (r *Runner) runBatch(ctx context.Context, e *entry, feed *feedReader, policy FailurePolicy, target, cp eventlog.Position, take bool) (res batchResult, err error) {
	var page feedPage
	read := cp < target
	if read {
		if page, err = feed.page(ctx, cp, target); err != nil {
			return res, err
		}
	}
	res, failure, err := r.batchTx(ctx, e, feed, policy, target, take, &page, read, nil)
	if failure == nil {
		return res, err
	}
	res, _, err = r.batchTx(ctx, e, feed, policy, target, take, &page, true, failure)
	return res, err
}

// batchTx is runBatch's transaction, with the page read before it (when
// read is set); failure is the first try's failure when this is the
// second, and the answer when this first try failed (nothing committed).
func (r *Runner) batchTx(ctx context.Context, e *entry, feed *feedReader, policy FailurePolicy, target eventlog.Position, take bool, pg *feedPage, read bool, known *fastFailure) (res batchResult, failure *fastFailure, err error) {
	name := e.name
	page := *pg
	tx, err := r.beginWrite(ctx)
	if err != nil {
		return res, nil, fmt.Errorf("projection %q: begin batch: %w", name, err)
	}
	defer func() { _ = tx.Rollback() }()
	if take {
		err = r.takeLease(ctx, tx.Tx, name)
	} else {
		err = r.renewLease(ctx, tx.Tx, name)
	}
	if err != nil {
		return res, nil, err
	}
	cp, err := readCheckpoint(ctx, tx, name)
	if err != nil {
		return res, nil, fmt.Errorf("projection %q: read checkpoint: %w", name, err)
	}
	if cp >= target {
		if err := r.dropLease(ctx, tx.Tx, name); err != nil {
			return res, nil, err
		}
		if err := tx.Commit(); err != nil {
			return res, nil, fmt.Errorf("projection %q: commit: %w", name, err)
		}
		return batchResult{committed: true, done: true, checkpoint: cp, released: true}, nil, nil
	}
	if !read || page.after != cp {
		if page, err = feed.page(ctx, cp, target); err != nil {
			return res, nil, err
		}
		*pg = page
	}
	recs := page.recs
	full := page.full
	// A page read with other projections' types too may run beyond the
	// target without an event of this projection's types beyond it.
	beyond := full && page.last > target
	for i, rec := range recs {
		if rec.Position > target {
			recs, beyond = recs[:i], true
			break
		}
	}

	out, failure, err := r.applyAll(ctx, tx.Tx, e, policy, recs, cp, known)
	if err != nil || failure != nil {
		return res, failure, err
	}
	res.applied, res.skipped = out.applied, out.skipped
	next := out.next
	if out.stopped == nil {
		switch {
		case beyond:
			next = target
		case !full:
			next = max(next, min(page.head, target))
		default:
			// The page's events of other types are passed over.
			next = max(next, page.last)
		}
	}
	if next > cp {
		if _, err := tx.ExecContext(ctx, `INSERT INTO projection_checkpoints (name, position) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET position = excluded.position`, name, int64(next)); err != nil {
			return res, nil, fmt.Errorf("projection %q: write checkpoint: %w", name, err)
		}
	}
	done := out.stopped == nil && (next >= target || !full)
	if done {
		if err := r.dropLease(ctx, tx.Tx, name); err != nil {
			return res, nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return res, nil, fmt.Errorf("projection %q: commit batch: %w", name, err)
	}
	res.committed = true
	res.checkpoint = next
	res.released = done
	r.log.DebugContext(ctx, "projection batch committed", "projection", name, "from", cp, "to", next,
		"applied", res.applied, "skipped", res.skipped)
	if out.stopped != nil {
		return res, nil, out.stopped
	}
	res.done = done
	return res, nil, nil
}

// dropLease gives this Runner's lease back inside a batch's transaction.
func (r *Runner) dropLease(ctx context.Context, tx *sql.Tx, name string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM projection_leases WHERE name = $1 AND owner = $2`, name, r.owner); err != nil {
		return fmt.Errorf("projection %q: give the lease back: %w", name, err)
	}
	return nil
}

// applied is what applyAll did with a batch's events.
type applied struct {
	applied, skipped int
	next             eventlog.Position // the last position taken into account
	stopped          *StoppedError     // the event the batch stopped at, if any
}

// fastFailure is a batch whose events failed when applied without a
// savepoint: its transaction is rolled back and the batch run again.
type fastFailure struct {
	after  eventlog.Position // the checkpoint the events were applied after
	failed int               // the index of the failing event when known, else -1
	err    error             // the projector's error
}

// applyAll applies recs, the events after checkpoint cp, inside tx.
//
// On a batch's first try (known is nil) it applies them all at once
// (ApplyBatch, or Apply on each) without a savepoint; when that fails it
// writes nothing more and answers failure, for the caller to roll the
// transaction back and try again with it as known.
//
// Otherwise the events are applied one at a time, each in a savepoint
// under the projector's FailurePolicy, up to the failing event when Apply
// named it (its failure counts as its first try) or to the end of the
// batch when ApplyBatch failed; the events after a known failing event go
// back to the fast path, in a savepoint, where a failure is handled the
// same way. err is a failure of the transaction itself or ctx's end,
// which end the batch.
func (r *Runner) applyAll(ctx context.Context, tx *sql.Tx, e *entry, policy FailurePolicy, recs []eventlog.Record, cp eventlog.Position, known *fastFailure) (out applied, failure *fastFailure, err error) {
	ctx = withDialect(ctx, r.dialect)
	out.next = cp
	if len(recs) == 0 {
		return out, nil, nil
	}
	if known == nil {
		failed, applyErr := applyEach(ctx, tx, e.p, recs)
		if applyErr == nil {
			out.applied = len(recs)
			out.next = recs[len(recs)-1].Position
			return out, nil, nil
		}
		if ctx.Err() != nil {
			return out, nil, fmt.Errorf("projection %q: apply batch after %d: %w", e.name, out.next, ctx.Err())
		}
		return out, &fastFailure{after: cp, failed: failed, err: applyErr}, nil
	}
	first := known.after == cp
	for len(recs) > 0 {
		var failed int
		var applyErr error
		if first {
			// The first try's failure, on these same events.
			failed, applyErr, first = known.failed, known.err, false
		} else {
			failed, applyErr, err = applyFast(ctx, tx, e.p, recs)
			if err != nil {
				return out, nil, fmt.Errorf("projection %q: apply batch after %d: %w", e.name, out.next, err)
			}
			if applyErr == nil {
				out.applied += len(recs)
				out.next = recs[len(recs)-1].Position
				return out, nil, nil
			}
			if ctx.Err() != nil {
				return out, nil, fmt.Errorf("projection %q: apply batch after %d: %w", e.name, out.next, ctx.Err())
			}
		}
		end := len(recs)
		if failed >= 0 {
			end = failed + 1
		}
		for i, rec := range recs[:end] {
			var prior error
			if i == failed {
				prior = applyErr
			}
			tries, applyErr, err := r.apply(ctx, tx, e, policy, rec, prior)
			if err != nil {
				return out, nil, err
			}
			if applyErr == nil {
				out.applied++
				out.next = rec.Position
				continue
			}
			if ctx.Err() != nil {
				return out, nil, fmt.Errorf("projection %q: position %d: %w", e.name, rec.Position, ctx.Err())
			}
			if policy.Strategy == Skip {
				if err := r.deadLetter(ctx, tx, e.name, rec, applyErr); err != nil {
					return out, nil, err
				}
				out.skipped++
				out.next = rec.Position
				continue
			}
			out.stopped = &StoppedError{Projection: e.name, Position: rec.Position, Stream: rec.Stream, Type: rec.Type, Tries: tries, Err: applyErr}
			out.next = rec.Position - 1
			return out, nil, nil
		}
		recs = recs[end:]
	}
	return out, nil, nil
}

// applyFast is applyEach in one savepoint: when the projector fails, its
// writes are rolled back. err is a failure of the transaction itself.
func applyFast(ctx context.Context, tx *sql.Tx, p Projector, recs []eventlog.Record) (failed int, applyErr, err error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT projection_batch`); err != nil {
		return -1, nil, err
	}
	failed, applyErr = applyEach(ctx, tx, p, recs)
	if applyErr != nil {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO projection_batch`); err != nil {
			return failed, applyErr, fmt.Errorf("roll back failed batch (%w): %w", applyErr, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `RELEASE projection_batch`); err != nil {
		return failed, applyErr, err
	}
	return failed, applyErr, nil
}

// applyEach applies recs: with ApplyBatch when p is a BatchProjector,
// else with Apply on each. applyErr is the projector's error; failed is
// the index of the failing event when known, else -1.
func applyEach(ctx context.Context, tx *sql.Tx, p Projector, recs []eventlog.Record) (failed int, applyErr error) {
	if bp, ok := p.(BatchProjector); ok {
		if applyErr = bp.ApplyBatch(ctx, tx, recs); applyErr != nil && len(recs) == 1 {
			return 0, applyErr
		}
		return -1, applyErr
	}
	for i, rec := range recs {
		if applyErr = p.Apply(ctx, tx, rec); applyErr != nil {
			return i, applyErr
		}
	}
	return -1, nil
}

// apply runs Apply on rec inside a savepoint, again under Retry, and
// returns how many times it ran and Apply's last error. prior, when not
// nil, is the error of a try already made (in the fast path): it counts as
// the first try. err is a failure of the transaction itself, which ends
// the batch.
func (r *Runner) apply(ctx context.Context, tx *sql.Tx, e *entry, policy FailurePolicy, rec eventlog.Record, prior error) (tries int, applyErr, err error) {
	attempts := 1
	if policy.Strategy == Retry {
		attempts += policy.Retries
	}
	wait := policy.Backoff
	if prior != nil {
		tries, applyErr = 1, prior
	}
	for {
		if tries > 0 {
			if tries >= attempts || ctx.Err() != nil {
				return tries, applyErr, nil
			}
			r.log.WarnContext(ctx, "projection event failed; retrying", "projection", e.name, "position", rec.Position,
				"type", rec.Type, "try", tries, "wait", wait, "error", applyErr.Error())
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return tries, applyErr, nil
			}
			wait = min(2*wait, maxBackoff)
		}
		tries++
		applyErr, err = applyInSavepoint(ctx, tx, e.p, rec)
		if err != nil {
			return tries, applyErr, fmt.Errorf("projection %q: position %d: %w", e.name, rec.Position, err)
		}
		if applyErr == nil {
			return tries, nil, nil
		}
	}
}

// applyInSavepoint runs Apply; when it fails, its changes are rolled back
// and its error returned as applyErr.
func applyInSavepoint(ctx context.Context, tx *sql.Tx, p Projector, rec eventlog.Record) (applyErr, err error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT projection_apply`); err != nil {
		return nil, err
	}
	applyErr = p.Apply(ctx, tx, rec)
	if applyErr != nil {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO projection_apply`); err != nil {
			return applyErr, fmt.Errorf("roll back failed event (%w): %w", applyErr, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `RELEASE projection_apply`); err != nil {
		return applyErr, err
	}
	return applyErr, nil
}

func (r *Runner) deadLetter(ctx context.Context, tx *sql.Tx, name string, rec eventlog.Record, applyErr error) error {
	r.log.WarnContext(ctx, "projection event skipped", "projection", name, "position", rec.Position,
		"type", rec.Type, "stream", rec.Stream.String(), "error", applyErr.Error())
	_, err := tx.ExecContext(ctx, `INSERT INTO projection_dead_letters
		(projection, position, stream, version, type, error, at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		name, int64(rec.Position), rec.Stream.String(), int64(rec.Version), rec.Type, applyErr.Error(),
		time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("projection %q: record dead letter at %d: %w", name, rec.Position, err)
	}
	return nil
}
