// Package storekit holds what every eventlog.Store implementation needs
// the same way: the gate that refuses calls after Close and lets Close
// wait for calls in progress, and the checks and encoding of snapshots.
package storekit

import (
	"sync"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Gate counts a store's calls in progress and closes the store once. The
// zero value is open. It is safe for concurrent use.
type Gate struct {
	mu       sync.RWMutex // guards closed; held for reading while a call starts
	closed   bool
	inflight sync.WaitGroup // calls in progress; Close waits for them
}

// Enter registers a call, which must then call Leave. It fails with
// eventlog.ErrClosed once Close has begun.
func (g *Gate) Enter() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return eventlog.ErrClosed
	}
	g.inflight.Add(1)
	return nil
}

// Leave ends a call Enter registered.
func (g *Gate) Leave() { g.inflight.Done() }

// Close refuses every later call and waits for the calls in progress. It
// reports false, at once, when the gate was closed before.
func (g *Gate) Close() bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	g.closed = true
	g.mu.Unlock()
	g.inflight.Wait()
	return true
}
