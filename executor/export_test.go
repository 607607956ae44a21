package executor

import (
	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
)

// CachedState is the state a cache entry holds, decoded or encoded, for
// the external tests.
func CachedState[S any](e cache.Entry) (S, bool) {
	if kept, ok := e.Value.(*cachedState[S]); ok {
		return kept.state, true
	}
	var s S
	return s, false
}

// CachedStreamEvents are the decoded events c keeps of stream s for codec.
func CachedStreamEvents[E any](c *cache.Cache, codec *Codec[E], s eventlog.StreamID) ([]Event[E], bool) {
	e, ok := c.Get(codec.streamKey(s))
	if !ok {
		return nil, false
	}
	log, ok := e.Value.(*streamLog[E])
	if !ok {
		return nil, false
	}
	return log.snapshot(), true
}
