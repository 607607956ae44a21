package executor

import "github.com/eventcore-go/eventcore/cache"

// CachedState is the state a cache entry holds, decoded or encoded, for
// the external tests.
func CachedState[S any](e cache.Entry) (S, bool) {
	if kept, ok := e.Value.(*cachedState[S]); ok {
		return kept.state, true
	}
	var s S
	return s, false
}
