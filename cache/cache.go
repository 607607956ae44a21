// Package cache is the warm-instance cache of what commands read: per
// command and stream set, the folded state and the version of every stream
// it covers, and per short stream its decoded events, so that a warm
// instance probes versions instead of replaying history.
//
// It is built on github.com/patrickmn/go-cache for expiry, and adds a cap on
// memory: each entry is costed by its size (encoded, or as estimated by the
// caller; see Entry.Bytes), and when the total passes the cap the oldest
// entries are evicted first. The accounting is a map of sizes and a
// first-in-first-out queue of keys; nothing more.
//
// An entry is only ever a hint: the executor checks its versions against the
// store before use, so a stale or damaged entry costs a read or a retry,
// never a wrong decision.
package cache

import (
	"sync"
	"sync/atomic"
	"time"

	gocache "github.com/patrickmn/go-cache"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Defaults, as documented for EVENTCORE_CACHE_TTL and
// EVENTCORE_CACHE_MAX_BYTES.
const (
	DefaultTTL      = 5 * time.Minute
	DefaultMaxBytes = 64 << 20
)

// Entry is what the cache keeps under one key: the folded state of one
// command over its streams, or the events of one stream.
type Entry struct {
	// Streams are every stream the entry covers (declared and discovered),
	// in the order they were read, with the version folded of each.
	Streams []eventlog.ExpectedVersion
	// State is the encoded state, when it is kept encoded.
	State []byte
	// Value, when set, is what the entry keeps decoded (the executor keeps
	// states that can be cloned, and streams' events). Every reader shares
	// it: the cache never looks inside, and whoever stores it says how it
	// may change.
	Value any
	// Bytes is the estimated size of Value, costed against the cap in
	// place of len(State) when it is larger.
	Bytes int64
}

// size is what an entry costs against the cap: its encoded bytes (or the
// estimate in Bytes) plus a fixed overhead per stream and per entry.
func (e Entry) size(key string) int64 {
	n := int64(len(key)+64) + max(int64(len(e.State)), e.Bytes)
	for _, s := range e.Streams {
		n += int64(len(s.Stream.String()) + 24)
	}
	return n
}

// Stats are the cache's counters since New.
type Stats struct {
	Hits          uint64 // probes that found every stream at its cached version
	PartialHits   uint64 // probes that found streams ahead, caught up from the cache
	CaughtUp      uint64 // events read and folded by partial hits
	Misses        uint64 // no usable entry: a full replay
	Evictions     uint64 // entries removed for memory or expiry
	Bytes         int64  // bytes held now
	Entries       int    // entries held now
	MaxBytes      int64
	TTL           time.Duration
	Invalidations uint64 // entries found damaged or ahead of the store, dropped
}

// Cache is safe for concurrent use.
type Cache struct {
	items    *gocache.Cache
	ttl      time.Duration
	maxBytes int64

	*ledger

	// door holds the keys seen once and not admitted yet (see Admit);
	// everyKey turns the doorkeeper off.
	doorMu   sync.Mutex
	door     map[string]struct{}
	everyKey bool

	hits, partial, caughtUp, misses, invalidations atomic.Uint64
}

// AdmitEveryKey turns the doorkeeper off: Admit then admits every key,
// for workloads whose stream sets always repeat. It returns c.
func (c *Cache) AdmitEveryKey() *Cache {
	c.doorMu.Lock()
	defer c.doorMu.Unlock()
	c.everyKey = true
	return c
}

// doorSize bounds the keys the doorkeeper remembers; when it is full it
// starts over (a key then needs two more sightings to be admitted).
const doorSize = 1 << 16

// Admit reports whether a state for key is worth putting in the cache: it
// is when the key has an entry already (a write-through), or has been
// offered once before since the doorkeeper last started over. A key seen
// for the first time is only remembered, so that a workload whose stream
// sets rarely repeat (transfers between random pairs of accounts) does not
// pay for encoding and storing states nobody reads again. The doorkeeper's
// keys are not counted against the byte cap; it holds at most 65,536 of
// them.
func (c *Cache) Admit(key string) bool {
	if _, ok := c.items.Get(key); ok {
		return true
	}
	c.doorMu.Lock()
	defer c.doorMu.Unlock()
	if c.everyKey {
		return true
	}
	if _, seen := c.door[key]; seen {
		delete(c.door, key)
		return true
	}
	if c.door == nil || len(c.door) >= doorSize {
		c.door = make(map[string]struct{}, 1024)
	}
	c.door[key] = struct{}{}
	return false
}

// ledger is the accounting of sizes. The item store's eviction callback
// holds the ledger, not the Cache: the item store stops its janitor
// goroutine once it is unreachable, which it never is while the callback
// holds the Cache that holds it.
type ledger struct {
	mu    sync.Mutex
	sizes map[string]sizedGen
	queue []queued // insertion order, oldest first; may hold superseded items
	gen   uint64
	bytes int64

	evictions atomic.Uint64
}

type sizedGen struct {
	size int64
	gen  uint64
}

type queued struct {
	key string
	gen uint64
}

// New returns a cache whose entries expire ttl after they were last written
// and whose entries together cost at most maxBytes. A ttl or maxBytes of 0
// takes the default.
func New(ttl time.Duration, maxBytes int64) *Cache {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	l := &ledger{sizes: map[string]sizedGen{}}
	c := &Cache{ttl: ttl, maxBytes: maxBytes, ledger: l}
	c.items = gocache.New(ttl, ttl)
	c.items.OnEvicted(func(key string, v any) { l.expired(key, v.(stored).gen) })
	return c
}

// Get returns the entry under key. The entry is shared: do not modify it.
func (c *Cache) Get(key string) (Entry, bool) {
	v, ok := c.items.Get(key)
	if !ok {
		return Entry{}, false
	}
	return v.(stored).entry, true
}

// stored is what the item store holds: the entry and the generation of the
// Put that wrote it, so that a late expiry of an old item cannot drop the
// accounting of a newer one.
type stored struct {
	entry Entry
	gen   uint64
}

// Put stores e under key, replacing any entry there, and evicts the oldest
// entries while the total is over the cap. An entry larger than the cap on
// its own is not stored.
func (c *Cache) Put(key string, e Entry) {
	size := e.size(key)
	if size > c.maxBytes {
		c.Delete(key)
		return
	}
	c.mu.Lock()
	c.gen++
	if old, ok := c.sizes[key]; ok {
		c.bytes -= old.size
	}
	c.sizes[key] = sizedGen{size: size, gen: c.gen}
	c.queue = append(c.queue, queued{key: key, gen: c.gen})
	c.bytes += size
	c.items.Set(key, stored{entry: e, gen: c.gen}, c.ttl)
	victims := c.overCapLocked()
	c.compactLocked()
	c.mu.Unlock()
	for _, k := range victims {
		c.items.Delete(k) // OnEvicted is not called for keys already forgotten
	}
}

// overCapLocked forgets the oldest entries until the total fits and returns
// their keys, to be deleted from the item store outside the lock.
func (c *Cache) overCapLocked() []string {
	var victims []string
	for c.bytes > c.maxBytes && len(c.queue) > 0 {
		q := c.queue[0]
		c.queue = c.queue[1:]
		cur, ok := c.sizes[q.key]
		if !ok || cur.gen != q.gen {
			continue // superseded by a later Put, or already gone
		}
		delete(c.sizes, q.key)
		c.bytes -= cur.size
		c.evictions.Add(1)
		victims = append(victims, q.key)
	}
	return victims
}

// compactLocked drops superseded queue items once they outnumber live ones.
func (c *Cache) compactLocked() {
	if len(c.queue) < 2*len(c.sizes)+64 {
		return
	}
	live := c.queue[:0]
	for _, q := range c.queue {
		if cur, ok := c.sizes[q.key]; ok && cur.gen == q.gen {
			live = append(live, q)
		}
	}
	clear(c.queue[len(live):])
	c.queue = live
}

// Delete removes the entry under key, if any.
func (c *Cache) Delete(key string) {
	c.mu.Lock()
	if cur, ok := c.sizes[key]; ok {
		delete(c.sizes, key)
		c.bytes -= cur.size
	}
	c.mu.Unlock()
	c.items.Delete(key)
}

// expired drops the accounting of generation gen of key, if it is still the
// current one, and counts an eviction. go-cache calls it when an item
// expires or is deleted; deletions by this package forget the key first.
func (l *ledger) expired(key string, gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur, ok := l.sizes[key]; ok && cur.gen == gen {
		delete(l.sizes, key)
		l.bytes -= cur.size
		l.evictions.Add(1)
	}
}

// RecordHit, RecordPartialHit, RecordMiss and RecordInvalidation count what
// the executor found when it used the cache.
func (c *Cache) RecordHit() { c.hits.Add(1) }

// RecordPartialHit counts a hit that had to read and fold events more.
func (c *Cache) RecordPartialHit(events int) {
	c.partial.Add(1)
	c.caughtUp.Add(uint64(events))
}

// RecordMiss counts a full replay.
func (c *Cache) RecordMiss() { c.misses.Add(1) }

// RecordInvalidation counts an entry found damaged or ahead of the store.
func (c *Cache) RecordInvalidation() { c.invalidations.Add(1) }

// Stats returns the counters and the current size.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	bytes, entries := c.bytes, len(c.sizes)
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), PartialHits: c.partial.Load(), CaughtUp: c.caughtUp.Load(),
		Misses: c.misses.Load(), Evictions: c.evictions.Load(), Invalidations: c.invalidations.Load(),
		Bytes: bytes, Entries: entries, MaxBytes: c.maxBytes, TTL: c.ttl,
	}
}
