package storekit

import (
	"context"
	"sync/atomic"
)

// Handoff is one call a caller queues for a store's committing goroutine,
// and the way its outcome comes back. The committer takes the call (Take)
// or the caller withdraws it when its context ends first (in Await),
// whichever comes first; a taken call runs to completion and the committer
// delivers exactly one outcome (Deliver), whatever the caller's context
// does. Initialise it with Init before it is queued.
type Handoff[T any] struct {
	state atomic.Int32
	done  chan T // buffered: the committer never blocks on it
}

const (
	handoffQueued int32 = iota
	handoffTaken
	handoffWithdrawn
)

// Init prepares h for one call.
func (h *Handoff[T]) Init() { h.done = make(chan T, 1) }

// Take claims the call for the committer; it reports false when the
// caller withdrew it first, and then the committer must drop it.
func (h *Handoff[T]) Take() bool { return h.state.CompareAndSwap(handoffQueued, handoffTaken) }

// Deliver answers a taken call.
func (h *Handoff[T]) Deliver(out T) { h.done <- out }

// Await waits for the outcome of a queued call. When ctx ends before the
// committer took the call, the call is withdrawn and ctx's error returned;
// once taken, the outcome is waited for whatever ctx does.
func (h *Handoff[T]) Await(ctx context.Context) (T, error) {
	select {
	case out := <-h.done:
		return out, nil
	case <-ctx.Done():
		if h.state.CompareAndSwap(handoffQueued, handoffWithdrawn) {
			var zero T
			return zero, ctx.Err()
		}
		return <-h.done, nil
	}
}
