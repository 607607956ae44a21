package executor

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Admission orders, inside one process, the commands whose declared
// streams overlap: a command is admitted once no other admitted command
// holds any of its declared streams, and holds them until Execute
// returns, that is until its local commit (a replica sync made after
// Execute is not waited for). Two commands on the same hot stream then
// run one after the other instead of racing, failing their version check
// and retrying; version conflicts are left to commands of other
// processes, and to streams a command discovers while it runs, which are
// not admitted (the optimistic path with its retries covers them, and no
// order is needed that could deadlock).
//
// A command's streams are granted all at once, never one by one, so
// overlapping commands cannot deadlock and a waiting command holds
// nothing that others could use. Waiters are considered in arrival order,
// and a later command whose streams are all free may overtake an earlier
// one that waits for a held stream: over few hot streams this keeps as
// many disjoint commands running as there are. A waiter overtaken
// MaxOvertakes times reserves its streams, so that no later command takes
// them before it: nobody waits forever.
//
// An Admission is safe for concurrent use; share one per store in a
// process.
type Admission struct {
	mu      sync.Mutex
	held    map[eventlog.StreamID]struct{}
	waiting []*admissionWaiter // in arrival order
}

// MaxOvertakes is how many later commands may be admitted before a waiting
// command that shares a stream with them, before it reserves its streams.
const MaxOvertakes = 8

// admissionWaiter is one command waiting for its streams.
type admissionWaiter struct {
	streams   []eventlog.StreamID // sorted, unique
	admitted  chan struct{}       // closed once the streams are granted
	overtaken int
}

// NewAdmission returns an empty Admission.
func NewAdmission() *Admission {
	return &Admission{held: map[eventlog.StreamID]struct{}{}}
}

// Admit waits until the command may run on streams (duplicates allowed)
// and returns the function that lets the next commands in; it must be
// called exactly once. Errors: ctx's, when it ends while waiting (then
// nothing is held).
func (a *Admission) Admit(ctx context.Context, streams []eventlog.StreamID) (release func(), err error) {
	if skipAdmission {
		return func() {}, nil
	}
	ordered := slices.Clone(streams)
	slices.SortFunc(ordered, func(x, y eventlog.StreamID) int { return strings.Compare(x.String(), y.String()) })
	ordered = slices.Compact(ordered)
	release = sync.OnceFunc(func() { a.release(ordered) })

	a.mu.Lock()
	if len(a.waiting) == 0 && a.free(ordered, nil) {
		a.take(ordered)
		a.mu.Unlock()
		return release, nil
	}
	w := &admissionWaiter{streams: ordered, admitted: make(chan struct{})}
	a.waiting = append(a.waiting, w)
	a.grantLocked() // the newcomer may overtake, if nobody reserves its streams
	a.mu.Unlock()

	select {
	case <-w.admitted:
		return release, nil
	case <-ctx.Done():
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-w.admitted: // granted while giving up: hand the streams on
		a.releaseLocked(ordered)
	default:
		a.waiting = slices.DeleteFunc(a.waiting, func(o *admissionWaiter) bool { return o == w })
		a.grantLocked() // its reservation, if it had one, is gone
	}
	return nil, ctx.Err()
}

func (a *Admission) release(streams []eventlog.StreamID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.releaseLocked(streams)
}

func (a *Admission) releaseLocked(streams []eventlog.StreamID) {
	for _, s := range streams {
		delete(a.held, s)
	}
	a.grantLocked()
}

// grantLocked admits, in arrival order, every waiter whose streams are
// free and not reserved by an earlier waiter that was overtaken too often.
func (a *Admission) grantLocked() {
	var reserved map[eventlog.StreamID]struct{}
	still := make([]*admissionWaiter, 0, len(a.waiting))
	for _, w := range a.waiting {
		if !a.free(w.streams, reserved) {
			still = append(still, w)
			if w.overtaken >= MaxOvertakes {
				if reserved == nil {
					reserved = map[eventlog.StreamID]struct{}{}
				}
				for _, s := range w.streams {
					reserved[s] = struct{}{}
				}
			}
			continue
		}
		a.take(w.streams)
		close(w.admitted)
		for _, earlier := range still {
			if overlap(earlier.streams, w.streams) {
				earlier.overtaken++
			}
		}
	}
	a.waiting = still
}

// free reports whether no stream of streams is held or reserved.
func (a *Admission) free(streams []eventlog.StreamID, reserved map[eventlog.StreamID]struct{}) bool {
	for _, s := range streams {
		if _, ok := a.held[s]; ok {
			return false
		}
		if _, ok := reserved[s]; ok {
			return false
		}
	}
	return true
}

func (a *Admission) take(streams []eventlog.StreamID) {
	for _, s := range streams {
		a.held[s] = struct{}{}
	}
}

// overlap reports whether two sorted stream lists share a stream.
func overlap(x, y []eventlog.StreamID) bool {
	for i, j := 0, 0; i < len(x) && j < len(y); {
		switch c := strings.Compare(x[i].String(), y[j].String()); {
		case c == 0:
			return true
		case c < 0:
			i++
		default:
			j++
		}
	}
	return false
}
