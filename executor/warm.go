package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
)

// The warm path: what an attempt takes from the cache (the folded state of
// its command and stream set, or the decoded events of its streams) and
// from durable snapshots, and what it gives back.

// MaxCachedStreamEvents bounds the streams whose decoded events the cache
// keeps (Options.Cache): a stream with more events is read from the store,
// or served by its commands' cached states and snapshots.
const MaxCachedStreamEvents = 1024

// remeasureEvery is how many writes of a cached state reuse the size
// measured before, for states kept decoded (see stateEntry).
const remeasureEvery = 16

// cacheKey names a command's warm state: the command, its state type and
// its declared streams (discovered streams are in the entry).
func cacheKey[S any](name string, cmd any) string {
	var b strings.Builder
	if name == "" {
		name = fmt.Sprintf("%T", cmd)
	}
	b.WriteString(name)
	b.WriteByte(0x1f)
	b.WriteString(reflect.TypeFor[S]().String())
	for _, s := range cmd.(interface{ Streams() []eventlog.StreamID }).Streams() {
		b.WriteByte(0x1f)
		b.WriteString(s.String())
	}
	return b.String()
}

func (x *execution[S, E]) snapshotKey() string {
	return x.key + "\x1f" + x.cmd.(Snapshotter).SnapshotSchema()
}

// warmEntry finds the state an attempt may start from: the cached one,
// else the snapshot (looked up once per execution, kept for its retries).
func (x *execution[S, E]) warmEntry(ctx context.Context) (cache.Entry, CacheOutcome, bool) {
	if x.opts.Cache != nil {
		if e, ok := x.opts.Cache.Get(x.key); ok {
			return e, CacheHit, true
		}
		x.opts.Cache.RecordMiss()
	}
	if x.snapshots != nil && !x.snapshotTried {
		x.snapshotTried = true
		// A snapshot is an optimization: a failure to load one is a cold
		// start, not an error.
		snap, found, err := x.snapshots.LoadSnapshot(ctx, x.snapshotKey())
		if err == nil && found && snap.Key == x.snapshotKey() {
			x.snapshot = &cache.Entry{Streams: snap.Streams, State: snap.State}
		}
	}
	if x.snapshot != nil {
		return *x.snapshot, CacheSnapshot, true
	}
	return cache.Entry{}, CacheUnused, false
}

// resume starts an attempt from a cached (outcome CacheHit) or snapshot
// (CacheSnapshot) state: it probes the entry's streams, reads those that
// moved from their cached version on, and the streams the state points to
// that the entry does not cover from their first event. It returns nil,
// and forgets the entry, when the entry cannot be used: it cannot be
// decoded, lists a stream twice or an empty stream id, does not cover the
// declared streams, is ahead of the store (not from this log), or covers a
// stream a cold start would not read.
func (x *execution[S, E]) resume(ctx context.Context, e cache.Entry, outcome CacheOutcome) (*attempt[S], error) {
	a := newAttempt[S](nil)
	if !x.usable(e) || !x.startFrom(a, e) {
		x.drop(outcome)
		return nil, nil
	}
	probe := make([]eventlog.StreamID, len(e.Streams))
	for i, s := range e.Streams {
		probe[i] = s.Stream
	}
	versions, err := x.probe(ctx, probe)
	if err != nil {
		return nil, fmt.Errorf("executor: probe stream versions: %w", err)
	}
	if len(versions) != len(e.Streams) {
		x.drop(outcome)
		return nil, nil
	}
	var behind []eventlog.ExpectedVersion
	for i, s := range e.Streams {
		switch {
		case versions[i] < s.Version:
			x.drop(outcome)
			return nil, nil
		case versions[i] > s.Version:
			behind = append(behind, s)
		}
		a.versions[s.Stream] = s.Version
		a.order = append(a.order, s.Stream)
		a.probed(s.Stream, versions[i])
	}
	// The state may point to streams the entry does not cover (events this
	// command appended can): they are read from their first event, as a
	// cold start would read them.
	if x.discover(a) != nil {
		x.drop(outcome)
		return nil, nil
	}
	switch {
	case outcome == CacheSnapshot:
		a.outcome = CacheSnapshot
	case len(behind) == 0 && len(a.queue) == 0:
		a.outcome = CacheHit
	default:
		a.outcome = CachePartial
	}
	for _, s := range behind {
		if err := x.readStream(ctx, a, s.Stream, s.Version); err != nil {
			return nil, err
		}
		if err := x.discover(a); err != nil {
			return nil, err
		}
	}
	if err := x.readQueued(ctx, a); err != nil {
		return nil, err
	}
	if !x.readsOnlyReachable(a) {
		x.drop(outcome)
		return nil, nil
	}
	switch a.outcome {
	case CacheHit:
		x.opts.Cache.RecordHit()
	case CachePartial:
		x.opts.Cache.RecordPartialHit(a.replayed + a.recalled)
	}
	return a, nil
}

// usable reports whether e covers every declared stream, each once, and no
// more streams than the command may read.
func (x *execution[S, E]) usable(e cache.Entry) bool {
	covered := make(map[eventlog.StreamID]bool, len(e.Streams))
	for _, s := range e.Streams {
		covered[s.Stream] = true
	}
	valid := len(e.Streams) > 0 && len(e.Streams) <= x.opts.MaxStreams && len(covered) == len(e.Streams) && !covered[eventlog.StreamID{}]
	for _, s := range x.cmd.Streams() {
		valid = valid && covered[s]
	}
	return valid
}

// startFrom gives a e's state: a clone of the state kept decoded, or the
// decoded State.
func (x *execution[S, E]) startFrom(a *attempt[S], e cache.Entry) bool {
	if kept, ok := e.Value.(*cachedState[S]); ok {
		a.state = any(kept.state).(Cloner[S]).Clone() // the cached state is shared: never fold into it
		return true
	}
	return json.Unmarshal(e.State, &a.state) == nil
}

// drop forgets an unusable entry: from the cache, or the execution's
// snapshot for its retries.
func (x *execution[S, E]) drop(outcome CacheOutcome) {
	if outcome == CacheSnapshot {
		x.snapshot = nil
		return
	}
	x.opts.Cache.Delete(x.key)
	x.opts.Cache.RecordInvalidation()
}

// readsOnlyReachable reports whether every stream read is declared or
// discovered by the state, as in a cold start. A state that covers another
// stream too folded events a cold start would not have folded.
func (x *execution[S, E]) readsOnlyReachable(a *attempt[S]) bool {
	reachable := make(map[eventlog.StreamID]bool, len(a.order))
	for _, s := range x.cmd.Streams() {
		reachable[s] = true
	}
	if d, ok := x.cmd.(StreamDiscoverer[S]); ok {
		for _, s := range d.DiscoverStreams(a.state) {
			reachable[s] = true
		}
	}
	for _, s := range a.order {
		if !reachable[s] {
			return false
		}
	}
	return true
}

// cachedState is a state kept decoded in the cache (for states that are
// Cloners), with the size it was last measured at and the writes since.
// It never changes once stored.
type cachedState[S any] struct {
	state  S
	bytes  int64
	writes int
}

// decideKeep decides, once per attempt, whether its final state is kept:
// in the cache, when the doorkeeper admits its key; and as a snapshot,
// when the attempt read at least the threshold of events from the store
// and, with a cache, its key was admitted too (a snapshot is a write: a
// stream set seen once, such as a transfer between a random pair of
// accounts, would rarely read it back).
func (x *execution[S, E]) decideKeep(a *attempt[S]) {
	a.keepState = x.opts.Cache != nil && x.opts.Cache.Admit(x.key)
	a.keepSnapshot = x.snapshots != nil && a.replayed >= x.opts.SnapshotThreshold && (x.opts.Cache == nil || a.keepState)
}

// remember puts the attempt's state, current at its versions, into the
// cache, and saves a snapshot, as decideKeep decided.
func (x *execution[S, E]) remember(ctx context.Context, a *attempt[S], r Result) Result {
	if !a.keepState && !a.keepSnapshot {
		return r
	}
	streams := a.expected()
	var encoded []byte
	if a.keepState {
		e, ok := x.stateEntry(a, streams)
		if !ok {
			return r
		}
		x.opts.Cache.Put(x.key, e)
		encoded = e.State
	}
	if a.keepSnapshot {
		if encoded == nil {
			var err error
			if encoded, err = json.Marshal(a.state); err != nil {
				return r
			}
		}
		err := x.snapshots.SaveSnapshot(ctx, eventlog.Snapshot{Key: x.snapshotKey(), Streams: streams, State: encoded})
		// The command has succeeded either way; a failed save only means
		// a longer replay later.
		r.SnapshotSaved = err == nil
	}
	return r
}

// stateEntry is the cache entry of a's state. A state that is a Cloner is
// kept decoded, costed at its encoded size measured when its key was first
// stored and again every remeasureEvery writes (in between the last
// measure is reused: an estimate); any other state is kept encoded, costed
// at its exact size.
func (x *execution[S, E]) stateEntry(a *attempt[S], streams []eventlog.ExpectedVersion) (cache.Entry, bool) {
	e := cache.Entry{Streams: streams}
	if _, ok := any(a.state).(Cloner[S]); !ok {
		encoded, err := json.Marshal(a.state)
		e.State = encoded
		return e, err == nil
	}
	kept := &cachedState[S]{state: a.state} // nothing folds into it any more: the execution is done
	var prev *cachedState[S]
	if old, ok := x.opts.Cache.Get(x.key); ok {
		prev, _ = old.Value.(*cachedState[S])
	}
	if prev != nil && prev.writes+1 < remeasureEvery {
		kept.bytes, kept.writes = prev.bytes, prev.writes+1
	} else {
		encoded, err := json.Marshal(a.state)
		if err != nil {
			return e, false
		}
		kept.bytes = int64(len(encoded))
		e.State = encoded
	}
	e.Value, e.Bytes = kept, kept.bytes
	return e, true
}

// writeThrough folds the events this attempt appended on top of what it
// read (the append proved the versions read were current, so they follow
// them), into the state when it is kept and into the cached events of the
// streams written. It reports whether the state is to be remembered.
func (x *execution[S, E]) writeThrough(a *attempt[S], records []eventlog.Record) bool {
	x.decideKeep(a)
	logs := x.logsWritten(a, records)
	if !a.keepState && !a.keepSnapshot && len(logs) == 0 {
		return false
	}
	// Decoded like a read record, so that warm and cold states agree.
	decoded := make([]Event[E], len(records))
	for i, r := range records {
		ev, err := x.codec.Decode(r)
		if err != nil {
			return false
		}
		decoded[i] = ev
	}
	for _, l := range logs {
		var grown streamEvents[E]
		grown.on = true
		for i, r := range records {
			if r.Stream == l.stream {
				grown.add(decoded[i], r)
			}
		}
		x.keepStream(l.stream, l.recalled, grown)
	}
	if !a.keepState && !a.keepSnapshot {
		return false
	}
	for i, r := range records {
		x.cmd.Apply(&a.state, decoded[i])
		a.versions[r.Stream] = r.Version
	}
	return true
}

// writtenLog is a stream written by an append whose cached events end at
// the version the attempt read (so the append's events continue them), or
// a new stream whose events are worth keeping.
type writtenLog[E any] struct {
	stream   eventlog.StreamID
	recalled recalledStream[E]
}

func (x *execution[S, E]) logsWritten(a *attempt[S], records []eventlog.Record) []writtenLog[E] {
	c := x.opts.Cache
	if c == nil {
		return nil
	}
	var logs []writtenLog[E]
	for i, r := range records {
		if seenBefore(records[:i], r.Stream) {
			continue
		}
		key := x.codec.streamKey(r.Stream)
		read := a.versions[r.Stream]
		if e, ok := c.Get(key); ok {
			if log, ok := e.Value.(*streamLog[E]); ok && log.length() == read {
				logs = append(logs, writtenLog[E]{r.Stream, recalledStream[E]{key: key, log: log, upTo: read}})
			}
			continue
		}
		if read == 0 && c.Admit(key) {
			logs = append(logs, writtenLog[E]{r.Stream, recalledStream[E]{key: key, admitted: true}})
		}
	}
	return logs
}

func seenBefore(records []eventlog.Record, s eventlog.StreamID) bool {
	for _, r := range records {
		if r.Stream == s {
			return true
		}
	}
	return false
}

// streamLog is the decoded events of one short stream as the cache keeps
// them: events[i] has version i+1. It only grows, under mu. A reader takes
// the slice under mu and then reads it without: nothing below its length
// is ever written again (an extension appends beyond it, or copies).
type streamLog[E any] struct {
	mu     sync.Mutex
	events []Event[E]
	bytes  int64 // estimated: see streamEvents.add
}

func (l *streamLog[E]) snapshot() []Event[E] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.events
}

func (l *streamLog[E]) length() eventlog.Version {
	return eventlog.Version(len(l.snapshot()))
}

// extend appends more, whose first event has version from+1, when the
// log ends at from; it reports whether it did, and the log's new size.
func (l *streamLog[E]) extend(from eventlog.Version, more streamEvents[E]) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if eventlog.Version(len(l.events)) != from || len(l.events)+len(more.events) > MaxCachedStreamEvents {
		return 0, false
	}
	l.events = append(l.events, more.events...)
	l.bytes += more.bytes
	return l.bytes, true
}

// recalledStream is what the cache had of a stream for one read.
type recalledStream[E any] struct {
	key      string
	log      *streamLog[E]    // the stream's cached events, nil when none
	upTo     eventlog.Version // the version the cached events end at
	current  bool             // the store is at upTo: nothing more to read
	admitted bool             // no log yet, but the stream's events are worth keeping
}

// probe asks the store the current versions of streams, through its
// VersionProber capability when it has one: a lagging answer costs a
// retry, never a wrong write.
func (x *execution[S, E]) probe(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	if p, ok := x.store.(eventlog.VersionProber); ok {
		return p.ProbeVersions(ctx, streams)
	}
	return x.store.StreamVersions(ctx, streams)
}

// probeCachedStreams asks the store, in one call, the versions of the
// streams whose events the cache has, so that reading them costs no call
// each.
func (x *execution[S, E]) probeCachedStreams(ctx context.Context, a *attempt[S], streams []eventlog.StreamID) error {
	var cached []eventlog.StreamID
	for _, s := range streams {
		if e, ok := x.opts.Cache.Get(x.codec.streamKey(s)); ok {
			if _, ok := e.Value.(*streamLog[E]); ok {
				cached = append(cached, s)
			}
		}
	}
	if len(cached) == 0 {
		return nil
	}
	versions, err := x.probe(ctx, cached)
	if err != nil {
		return fmt.Errorf("executor: probe stream versions: %w", err)
	}
	if len(versions) != len(cached) {
		return nil // each stream is probed again when it is read
	}
	for i, s := range cached {
		a.probed(s, versions[i])
	}
	return nil
}

// recall folds the cached events of s after version after, when the cache
// has them and they are not ahead of the store.
func (x *execution[S, E]) recall(ctx context.Context, a *attempt[S], s eventlog.StreamID, after eventlog.Version) (recalledStream[E], error) {
	c := x.opts.Cache
	if c == nil {
		return recalledStream[E]{}, nil
	}
	key := x.codec.streamKey(s)
	e, ok := c.Get(key)
	log, _ := e.Value.(*streamLog[E])
	if !ok || log == nil {
		return recalledStream[E]{key: key, admitted: after == 0 && c.Admit(key)}, nil
	}
	events := log.snapshot()
	cached := eventlog.Version(len(events))
	if cached <= after {
		return recalledStream[E]{key: key, log: log, upTo: cached}, nil
	}
	// A version probed earlier in the attempt may be older than events
	// another command has added since: then the stream is probed again. A
	// version probed after the events were taken is never below them,
	// unless they are not from this log.
	current, probed := a.probedVersion(s)
	if !probed || current < cached {
		versions, err := x.probe(ctx, []eventlog.StreamID{s})
		if err != nil {
			return recalledStream[E]{}, fmt.Errorf("executor: probe stream versions: %w", err)
		}
		if len(versions) != 1 {
			return recalledStream[E]{key: key}, nil
		}
		current = versions[0]
	}
	if current < cached {
		c.Delete(key) // ahead of the store: not from this log
		c.RecordInvalidation()
		return recalledStream[E]{key: key}, nil
	}
	for _, ev := range events[after:cached] {
		x.cmd.Apply(&a.state, ev)
		a.recalled++
		x.folded++
	}
	a.versions[s] = cached
	return recalledStream[E]{key: key, log: log, upTo: cached, current: current == cached}, nil
}

// collect is where the events read after version after go: into the
// stream's cached events when they continue them, or into new ones when
// the stream is read from its start and worth keeping.
func (r recalledStream[E]) collect(after eventlog.Version) streamEvents[E] {
	if r.log != nil {
		return streamEvents[E]{on: after == r.upTo}
	}
	return streamEvents[E]{on: r.admitted && after == 0}
}

// streamEvents gathers decoded events read or appended, to be kept.
type streamEvents[E any] struct {
	on     bool
	events []Event[E]
	bytes  int64
}

// eventOverhead is the estimated memory of a decoded event beyond its
// encoded data, type and metadata strings.
const eventOverhead = 256

// add keeps ev, decoded from r, and estimates its size from r's encoded
// size; past MaxCachedStreamEvents it gives up.
func (k *streamEvents[E]) add(ev Event[E], r eventlog.Record) {
	if !k.on {
		return
	}
	if len(k.events) >= MaxCachedStreamEvents {
		k.on, k.events = false, nil
		return
	}
	k.events = append(k.events, ev)
	md := r.Metadata
	k.bytes += int64(eventOverhead + len(r.Data) + len(r.Type) + len(md.Command) + len(md.CorrelationID) + len(md.CausationID) + len(md.CommandID))
}

// keepStream puts what a read or an append gathered into the cache.
func (x *execution[S, E]) keepStream(s eventlog.StreamID, r recalledStream[E], more streamEvents[E]) {
	if !more.on || len(more.events) == 0 {
		return
	}
	log := r.log
	if log == nil {
		log = &streamLog[E]{}
	}
	bytes, ok := log.extend(r.upTo, more)
	if !ok {
		return
	}
	x.opts.Cache.Put(r.key, cache.Entry{Streams: []eventlog.ExpectedVersion{{Stream: s, Version: r.upTo + eventlog.Version(len(more.events))}}, Value: log, Bytes: bytes})
}
