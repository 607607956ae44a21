// Package turns shares one run of an operation among the callers that
// need it, one run at a time: a call is answered by the first run that
// started after the call was made, so N callers cost about two runs, not
// N. The replica writer's syncs (a sync covers every commit made before
// it started) and the follower's catch-ups (a catch-up sees everything
// written before it started) are such operations.
package turns

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MaxGather bounds how long a run waits for calls to join it (see
// Group.Gather).
const MaxGather = 50 * time.Millisecond

// Group runs fn for its callers in turns. The zero value is ready to use;
// a Group must not be copied after first use. It is safe for concurrent
// use.
type Group struct {
	// Gather, when set, lets a run start a little later to answer more
	// calls at once: when the last run succeeded and answered several
	// calls, the next one waits until as many calls have been made since
	// the last run ended, or half the last run's duration (at most
	// MaxGather) has passed, whichever comes first. Under a steady load of
	// N concurrent callers, each of which calls again soon after its
	// answer, a run then answers the calls of the callers the last run
	// released, instead of leaving them for the run after. A run after one
	// that answered a single call, or that failed, starts at once. Set it
	// before first use.
	Gather bool

	mu       sync.Mutex
	tickets  uint64        // calls made
	covered  uint64        // highest call answered by a successful run
	failedTo uint64        // highest call answered by the last failed run
	failErr  error         // that run's error
	running  bool          // a run is in progress
	done     chan struct{} // closed when the running run ends
	runs     uint64        // runs made

	lastCover uint64        // the last call the last run answered
	lastBatch uint64        // how many calls it answered
	lastTook  time.Duration // how long it ran
	lastOK    bool          // whether it succeeded
	wake      chan struct{} // closed by the next call, while a run gathers
}

// Do returns when a run of fn that started after this call was made has
// ended: nil if it succeeded, its error if it failed. When no run is in
// progress the caller runs fn itself, for every call made so far; while
// one is, the caller waits for it, then for (or leads) the next.
//
// fn runs on a context without ctx's cancellation (but with its values
// and no deadline): a caller that gives up must not fail the others
// waiting on the run it leads, so fn must bound itself. A caller whose ctx
// ends while it waits returns an error wrapping ctx's, naming what.
// A panic in fn answers the waiting callers with an error and goes on in
// the caller that ran it.
func (g *Group) Do(ctx context.Context, what string, fn func(context.Context) error) error {
	g.mu.Lock()
	g.tickets++
	ticket := g.tickets
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
	for {
		switch {
		case g.covered >= ticket:
			g.mu.Unlock()
			return nil
		case g.failedTo >= ticket:
			err := g.failErr
			g.mu.Unlock()
			return err
		case g.running:
			done := g.done
			g.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				return fmt.Errorf("waiting for the %s: %w", what, ctx.Err())
			}
			g.mu.Lock()
			continue
		}
		g.running, g.done = true, make(chan struct{})
		g.gather()
		cover := g.tickets
		g.mu.Unlock()
		began := time.Now()
		err := g.lead(ctx, what, cover, fn)
		g.mu.Lock()
		g.lastTook, g.lastOK = time.Since(began), err == nil
		g.end(cover, err)
	}
}

// gather waits, as Gather says, for calls to join the run about to start;
// g.mu is held, and held again when it returns.
func (g *Group) gather() {
	if !g.Gather || !g.lastOK || g.lastBatch < 2 {
		return
	}
	want := g.lastCover + g.lastBatch
	deadline := time.Now().Add(min(g.lastTook/2, MaxGather))
	for g.tickets < want {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		wake := make(chan struct{})
		g.wake = wake
		g.mu.Unlock()
		timer := time.NewTimer(left)
		select {
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
		g.mu.Lock()
		if g.wake == wake {
			g.wake = nil
		}
	}
}

// lead runs fn for the calls up to cover.
func (g *Group) lead(ctx context.Context, what string, cover uint64, fn func(context.Context) error) error {
	defer func() {
		if p := recover(); p != nil {
			g.mu.Lock()
			g.end(cover, fmt.Errorf("the %s panicked", what))
			g.mu.Unlock()
			panic(p)
		}
	}()
	return fn(context.WithoutCancel(ctx))
}

// end records a run's outcome; g.mu is held.
func (g *Group) end(cover uint64, err error) {
	g.lastBatch, g.lastCover = cover-g.lastCover, cover
	if err == nil {
		g.covered = max(g.covered, cover)
	} else {
		g.failedTo, g.failErr = max(g.failedTo, cover), err
	}
	g.running = false
	g.runs++
	close(g.done)
}

// Runs returns how many runs Do has made (fewer than its calls when
// concurrent calls shared them).
func (g *Group) Runs() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runs
}
