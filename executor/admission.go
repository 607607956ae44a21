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
// Streams are taken in one global order (sorted by id), so overlapping
// commands cannot deadlock; waiters on one stream are admitted in arrival
// order. An Admission is safe for concurrent use; share one per store in a
// process.
type Admission struct {
	mu    sync.Mutex
	slots map[eventlog.StreamID]*admissionSlot
}

// admissionSlot is one stream's turn: held has a value while a command
// holds the stream; refs counts holders and waiters, so that the slot is
// dropped when nobody uses it.
type admissionSlot struct {
	held chan struct{}
	refs int
}

// NewAdmission returns an empty Admission.
func NewAdmission() *Admission {
	return &Admission{slots: map[eventlog.StreamID]*admissionSlot{}}
}

// Admit waits until the command may run on streams (duplicates allowed)
// and returns the function that lets the next commands in; it must be
// called exactly once. Errors: ctx's, when it ends while waiting (then
// nothing is held).
func (a *Admission) Admit(ctx context.Context, streams []eventlog.StreamID) (release func(), err error) {
	ordered := slices.Clone(streams)
	slices.SortFunc(ordered, func(x, y eventlog.StreamID) int { return strings.Compare(x.String(), y.String()) })
	ordered = slices.Compact(ordered)
	slots := make([]*admissionSlot, len(ordered))
	a.mu.Lock()
	for i, id := range ordered {
		s := a.slots[id]
		if s == nil {
			s = &admissionSlot{held: make(chan struct{}, 1)}
			a.slots[id] = s
		}
		s.refs++
		slots[i] = s
	}
	a.mu.Unlock()
	for i, s := range slots {
		select {
		case s.held <- struct{}{}:
		case <-ctx.Done():
			a.leave(ordered, slots, i)
			return nil, ctx.Err()
		}
	}
	return sync.OnceFunc(func() { a.leave(ordered, slots, len(slots)) }), nil
}

// leave gives up the first taken of slots, which belong to ids, and drops
// this command's reference to all of them.
func (a *Admission) leave(ids []eventlog.StreamID, slots []*admissionSlot, taken int) {
	for _, s := range slots[:taken] {
		<-s.held
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, s := range slots {
		if s.refs--; s.refs == 0 {
			delete(a.slots, ids[i])
		}
	}
}
