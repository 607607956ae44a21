package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
)

// DefaultMaxStreams bounds the streams one command may read, declared and
// discovered together.
const DefaultMaxStreams = 64

// Options tune one Execute call. The zero value is usable.
type Options struct {
	// Retry decides retries after a version conflict; nil is
	// DefaultRetryPolicy.
	Retry RetryPolicy
	// OnRetry, when set, is called before each retry's backoff.
	OnRetry func(RetryInfo)
	// CommandID is the command's idempotency key (see
	// eventlog.AppendRequest.CommandID). With a key, Execute first looks
	// the key up and, when an earlier execution recorded it, answers with
	// that execution's events without running the command again.
	CommandID string
	// Metadata is copied into every new event. Its Command defaults to the
	// command's CommandName (see Named).
	Metadata eventlog.Metadata
	// MaxStreams bounds declared plus discovered streams; 0 is
	// DefaultMaxStreams.
	MaxStreams int
	// Cache, when set, keeps the folded state of warm commands: a command
	// whose entry is current probes its streams' versions instead of
	// reading them, and one whose streams moved reads only the new events.
	// Entries are checked against the store before use, so they can cost a
	// retry but never a decision on stale state.
	Cache *cache.Cache
	// SnapshotThreshold is the replay length (events folded by one attempt)
	// after which the state of a command that implements Snapshotter is
	// saved as a durable snapshot, when the store implements
	// eventlog.SnapshotStore. 0 is DefaultSnapshotThreshold; negative
	// disables snapshots.
	SnapshotThreshold int
	// Admission, when set, orders this command after the commands of this
	// process whose declared streams overlap its own (see Admission).
	// OnAdmit, when set, is told how long the command waited for it.
	Admission *Admission
	OnAdmit   func(wait time.Duration)
}

// DefaultSnapshotThreshold is the default of Options.SnapshotThreshold.
const DefaultSnapshotThreshold = 100

// Snapshotter is implemented by commands whose state may be saved as a
// durable snapshot. The schema names the state's encoding and must change
// whenever the state type or its fold changes: a snapshot of another schema
// is never loaded.
//
// States are encoded with encoding/json, for the cache as for snapshots, so
// S must round-trip through it (exported fields).
type Snapshotter interface {
	SnapshotSchema() string
}

// RetryInfo describes a retry about to happen.
type RetryInfo struct {
	Attempt  int                     // the attempt that conflicted, from 1
	Delay    time.Duration           // the backoff before the next attempt
	Conflict *eventlog.ConflictError // what conflicted
}

// Result is the outcome of a successful Execute.
type Result struct {
	// Attempts is how many times the command was run: 1 when the first
	// append succeeded, 0 when an earlier execution with the same
	// CommandID answered.
	Attempts int
	// Events are the recorded events, in the order Handle returned them;
	// none when Handle decided nothing.
	Events []eventlog.Record
	// Duplicate is true when the CommandID had been recorded before and
	// Events are the events recorded then.
	Duplicate bool
	// Replayed is how many recorded events the last attempt read and
	// folded: the whole history on a cold start, the new events on a
	// partial cache hit, none on a full hit. Folded counts them over
	// every attempt.
	Replayed, Folded int
	// Cache says how the last attempt used the cache: "" without one,
	// "hit", "partial", "miss" or "snapshot" (started from a snapshot).
	Cache string
	// SnapshotSaved is true when this execution saved a snapshot.
	SnapshotSaved bool
}

type effectKind int

const (
	effectLookup       effectKind = iota // look up opts.CommandID
	effectRead                           // read stream after version, fold each record, then streamDone
	effectAppend                         // append request, then appended
	effectSleep                          // wait delay, then slept
	effectProbe                          // read versions of probe, then probed
	effectLoadSnapshot                   // load snapshot key, then snapshotLoaded
	effectSaveSnapshot                   // save snapshot, then snapshotSaved
	effectDone                           // return result, err
)

// effect is what the machine asks its driver to do next.
type effect struct {
	kind    effectKind
	stream  eventlog.StreamID
	after   eventlog.Version
	request eventlog.AppendRequest
	delay   time.Duration
	probe   []eventlog.StreamID
	key     string
	snap    eventlog.Snapshot
	result  Result
	err     error
}

func done(r Result, err error) effect { return effect{kind: effectDone, result: r, err: err} }

// machine is the executor without I/O: each method takes the outcome of the
// last effect and returns the next one.
type machine[S, E any] struct {
	cmd   Command[S, E]
	codec *Codec[E]
	opts  Options

	attempt int
	state   S
	queue   []eventlog.StreamID
	read    map[eventlog.StreamID]eventlog.Version
	order   []eventlog.StreamID // streams read this attempt, in order
	reading eventlog.StreamID

	// Warm-state bookkeeping.
	key          string                     // cache key: command, state type, declared streams
	snapshots    bool                       // the command and the store support snapshots
	snapTried    bool                       // a snapshot was looked up already
	snapEntry    *cache.Entry               // the snapshot found, for the retries
	entry        cache.Entry                // the entry being probed
	fromCache    bool                       // entry came from the cache (not a snapshot)
	catchUp      []eventlog.ExpectedVersion // streams to read after their cached version
	replayed     int                        // events folded this attempt
	folded       int                        // events folded by every attempt
	cacheOutcome string
	result       Result // kept while a snapshot is saved

	// A failed decision kept while the command id is looked up again.
	failedResult Result
	failure      error
}

// newMachine makes a machine; snapshots says whether the store can keep
// snapshots (the machine itself never looks at the store).
func newMachine[S, E any](codec *Codec[E], cmd Command[S, E], opts Options, snapshots ...bool) *machine[S, E] {
	if opts.Retry == nil {
		opts.Retry = DefaultRetryPolicy
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if named, ok := cmd.(Named); ok && opts.Metadata.Command == "" {
		opts.Metadata.Command = named.CommandName()
	}
	if opts.SnapshotThreshold == 0 {
		opts.SnapshotThreshold = DefaultSnapshotThreshold
	}
	m := &machine[S, E]{cmd: cmd, codec: codec, opts: opts}
	if _, ok := cmd.(Snapshotter); ok && len(snapshots) > 0 && snapshots[0] && opts.SnapshotThreshold > 0 {
		m.snapshots = true
	}
	if opts.Cache != nil || m.snapshots {
		m.key = cacheKey[S](opts.Metadata.Command, cmd)
	}
	return m
}

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

func (m *machine[S, E]) snapshotKey() string {
	return m.key + "\x1f" + m.cmd.(Snapshotter).SnapshotSchema()
}

// start validates the declared streams and begins.
func (m *machine[S, E]) start() effect {
	declared := m.cmd.Streams()
	if len(declared) == 0 {
		return done(Result{}, invalidCommand("declares no streams"))
	}
	if len(declared) > m.opts.MaxStreams {
		return done(Result{}, invalidCommand("declares %d streams, more than %d", len(declared), m.opts.MaxStreams))
	}
	seen := make(map[eventlog.StreamID]bool, len(declared))
	for _, s := range declared {
		if s.IsZero() {
			return done(Result{}, invalidCommand("declares an empty stream id"))
		}
		if seen[s] {
			return done(Result{}, invalidCommand("declares stream %q twice", s))
		}
		seen[s] = true
	}
	if m.opts.CommandID != "" {
		if err := eventlog.ValidateCommandID(m.opts.CommandID); err != nil {
			return done(Result{}, err)
		}
		return effect{kind: effectLookup}
	}
	return m.beginAttempt()
}

// lookedUp takes the outcome of effectLookup.
func (m *machine[S, E]) lookedUp(records []eventlog.Record, found bool, err error) effect {
	if m.failure != nil {
		// The second look-up, after a failed decision: an execution with
		// the same key may have committed between the first look-up and
		// this attempt's reads, so that Handle refused its own effects.
		if err == nil && found {
			return done(Result{Events: records, Duplicate: true}, nil)
		}
		return done(m.failedResult, m.failure)
	}
	switch {
	case err != nil:
		return done(Result{}, fmt.Errorf("executor: look up command id: %w", err))
	case found:
		return done(Result{Events: records, Duplicate: true}, nil)
	}
	return m.beginAttempt()
}

// fail ends the execution with a business-rule or concurrency error. With
// an idempotency key the key is looked up once more first: a concurrent
// execution with the same key that committed meanwhile answers instead.
func (m *machine[S, E]) fail(r Result, err error) effect {
	if m.opts.CommandID == "" {
		return done(r, err)
	}
	m.failedResult, m.failure = r, err
	return effect{kind: effectLookup}
}

func (m *machine[S, E]) beginAttempt() effect {
	m.attempt++
	m.resetState()
	if m.opts.Cache != nil {
		if e, ok := m.opts.Cache.Get(m.key); ok {
			return m.useEntry(e, true)
		}
		m.cacheOutcome = "miss"
		m.opts.Cache.RecordMiss()
	}
	if m.snapshots && !m.snapTried {
		m.snapTried = true
		return effect{kind: effectLoadSnapshot, key: m.snapshotKey()}
	}
	if m.snapEntry != nil {
		// A retry starts from the snapshot the first attempt found (its
		// streams are probed and caught up), not from the first event.
		return m.useEntry(*m.snapEntry, false)
	}
	return m.coldStart()
}

func (m *machine[S, E]) resetState() {
	var zero S
	m.state = zero
	m.read = make(map[eventlog.StreamID]eventlog.Version, 4)
	m.order = m.order[:0]
	m.queue = m.queue[:0]
	m.catchUp = m.catchUp[:0]
	m.replayed = 0
	m.cacheOutcome = ""
}

// coldStart reads every declared stream from its first event.
func (m *machine[S, E]) coldStart() effect {
	m.resetState()
	m.queue = append(m.queue, m.cmd.Streams()...)
	if m.opts.Cache != nil {
		m.cacheOutcome = "miss"
	}
	return m.nextRead()
}

// snapshotLoaded takes the outcome of effectLoadSnapshot. A snapshot is an
// optimization: a failure to load one is a cold start, not an error.
func (m *machine[S, E]) snapshotLoaded(snap eventlog.Snapshot, found bool, err error) effect {
	if err != nil || !found || snap.Key != m.snapshotKey() {
		return m.coldStart()
	}
	m.snapEntry = &cache.Entry{Streams: snap.Streams, State: snap.State}
	return m.useEntry(*m.snapEntry, false)
}

// useEntry decodes a cached or snapshot state and probes its streams. An
// entry that cannot be decoded, lists a stream twice or an empty stream id,
// or does not cover the declared streams is dropped.
func (m *machine[S, E]) useEntry(e cache.Entry, fromCache bool) effect {
	m.entry, m.fromCache = e, fromCache
	covered := make(map[eventlog.StreamID]bool, len(e.Streams))
	for _, s := range e.Streams {
		covered[s.Stream] = true
	}
	valid := len(e.Streams) > 0 && len(e.Streams) <= m.opts.MaxStreams && len(covered) == len(e.Streams) && !covered[eventlog.StreamID{}]
	for _, s := range m.cmd.Streams() {
		valid = valid && covered[s]
	}
	if !valid {
		return m.dropEntry()
	}
	if c, ok := e.Value.(Cloner[S]); ok {
		m.state = c.Clone() // the cached value itself is shared: never fold into it
	} else if json.Unmarshal(e.State, &m.state) != nil {
		return m.dropEntry()
	}
	probe := make([]eventlog.StreamID, len(e.Streams))
	for i, s := range e.Streams {
		probe[i] = s.Stream
	}
	return effect{kind: effectProbe, probe: probe}
}

// dropEntry forgets an unusable entry and starts cold.
func (m *machine[S, E]) dropEntry() effect {
	if m.fromCache {
		m.opts.Cache.Delete(m.key)
		m.opts.Cache.RecordInvalidation()
	}
	return m.coldStart()
}

// probed takes the current versions of the entry's streams. Streams at
// their cached version are used as they are; streams ahead are read from
// their cached version on; a stream behind its cached version means the
// entry is not from this log, and it is dropped.
func (m *machine[S, E]) probed(versions []eventlog.Version, err error) effect {
	if err != nil {
		return done(Result{Attempts: m.attempt}, fmt.Errorf("executor: probe stream versions: %w", err))
	}
	if len(versions) != len(m.entry.Streams) {
		return m.dropEntry()
	}
	for i, s := range m.entry.Streams {
		switch {
		case versions[i] < s.Version:
			return m.dropEntry()
		case versions[i] > s.Version:
			m.catchUp = append(m.catchUp, s)
		}
		m.read[s.Stream] = s.Version
		m.order = append(m.order, s.Stream)
	}
	// The state may point to streams the entry does not cover (events this
	// command appended can): they are read from their first event, as a
	// cold start would read them.
	if m.discover() != nil {
		return m.dropEntry()
	}
	switch {
	case !m.fromCache:
		m.cacheOutcome = "snapshot"
	case len(m.catchUp) == 0 && len(m.queue) == 0:
		m.cacheOutcome = "hit"
	default:
		m.cacheOutcome = "partial"
	}
	return m.nextRead()
}

// warm reports whether this attempt started from a cached or snapshot state.
func (m *machine[S, E]) warm() bool {
	switch m.cacheOutcome {
	case "hit", "partial", "snapshot":
		return true
	}
	return false
}

// readsOnlyReachable reports whether every stream read is declared or
// discovered by the state, as in a cold start. A state that covers another
// stream too folded events a cold start would not have folded.
func (m *machine[S, E]) readsOnlyReachable() bool {
	reachable := make(map[eventlog.StreamID]bool, len(m.order))
	for _, s := range m.cmd.Streams() {
		reachable[s] = true
	}
	if d, ok := m.cmd.(StreamDiscoverer[S]); ok {
		for _, s := range d.DiscoverStreams(m.state) {
			reachable[s] = true
		}
	}
	for _, s := range m.order {
		if !reachable[s] {
			return false
		}
	}
	return true
}

func (m *machine[S, E]) nextRead() effect {
	if len(m.catchUp) > 0 {
		s := m.catchUp[0]
		m.catchUp = m.catchUp[1:]
		m.reading = s.Stream
		return effect{kind: effectRead, stream: s.Stream, after: s.Version}
	}
	for len(m.queue) > 0 {
		s := m.queue[0]
		m.queue = m.queue[1:]
		if _, done := m.read[s]; done {
			continue
		}
		m.reading = s
		m.read[s] = 0
		m.order = append(m.order, s)
		return effect{kind: effectRead, stream: s}
	}
	if m.warm() && !m.readsOnlyReachable() {
		return m.dropEntry()
	}
	switch m.cacheOutcome {
	case "hit":
		m.opts.Cache.RecordHit()
	case "partial":
		m.opts.Cache.RecordPartialHit(m.replayed)
	}
	return m.decide()
}

// fold applies one record of the stream being read. A decode error ends
// the execution: the driver passes it to failed.
func (m *machine[S, E]) fold(r eventlog.Record) error {
	ev, err := m.codec.Decode(r)
	if err != nil {
		return err
	}
	m.cmd.Apply(&m.state, ev)
	m.read[m.reading] = r.Version
	m.replayed++
	m.folded++
	return nil
}

// failed ends the execution with a read or decode error.
func (m *machine[S, E]) failed(err error) effect {
	var decode *DecodeError
	if errors.As(err, &decode) {
		return done(Result{Attempts: m.attempt}, err)
	}
	return done(Result{Attempts: m.attempt}, fmt.Errorf("executor: read stream %q: %w", m.reading, err))
}

// streamDone asks the command for more streams, then reads the next one.
func (m *machine[S, E]) streamDone() effect {
	if err := m.discover(); err != nil {
		return done(Result{Attempts: m.attempt}, err)
	}
	return m.nextRead()
}

// discover queues the streams the command finds in its state that are
// neither read nor queued yet.
func (m *machine[S, E]) discover() error {
	d, ok := m.cmd.(StreamDiscoverer[S])
	if !ok {
		return nil
	}
	for _, s := range d.DiscoverStreams(m.state) {
		if s.IsZero() {
			return invalidCommand("discovered an empty stream id")
		}
		if _, read := m.read[s]; read || slices.Contains(m.queue, s) {
			continue
		}
		m.queue = append(m.queue, s)
		if len(m.read)+len(m.queue) > m.opts.MaxStreams {
			return invalidCommand("reads more than %d streams", m.opts.MaxStreams)
		}
	}
	return nil
}

// decide runs Handle and turns its events into one append.
func (m *machine[S, E]) decide() effect {
	emits, err := m.cmd.Handle(m.state)
	if err != nil {
		return m.fail(m.outcome(), err)
	}
	if len(emits) == 0 {
		// The state is exactly the state at the versions read: keep it.
		return m.remember(m.outcome())
	}
	req := eventlog.AppendRequest{CommandID: m.opts.CommandID, Expected: make([]eventlog.ExpectedVersion, len(m.order))}
	for i, s := range m.order {
		req.Expected[i] = eventlog.ExpectedVersion{Stream: s, Version: m.read[s]}
	}
	req.Events = make([]eventlog.Event, len(emits))
	for i, e := range emits {
		if _, ok := m.read[e.Stream]; !ok {
			return done(Result{Attempts: m.attempt}, invalidCommand("event %d goes to stream %q, which the command did not read", i, e.Stream))
		}
		typ, data, err := m.codec.Encode(e.Event)
		if err != nil {
			return done(Result{Attempts: m.attempt}, err)
		}
		req.Events[i] = eventlog.Event{Stream: e.Stream, Type: typ, Data: data, Metadata: m.opts.Metadata}
	}
	return effect{kind: effectAppend, request: req}
}

// outcome is the result so far of this attempt.
func (m *machine[S, E]) outcome() Result {
	return Result{Attempts: m.attempt, Replayed: m.replayed, Folded: m.folded, Cache: m.cacheOutcome}
}

// appended takes the outcome of effectAppend.
func (m *machine[S, E]) appended(res eventlog.AppendResult, err error) effect {
	if err == nil {
		r := m.outcome()
		r.Events, r.Duplicate = res.Records, res.Duplicate
		if res.Duplicate {
			r.Attempts = 0 // an earlier execution with the same key answered
			return done(r, nil)
		}
		// The append proved the versions read were current, so the new
		// events follow them: fold them on top (write-through).
		for _, rec := range res.Records {
			if ferr := m.foldAppended(rec); ferr != nil {
				return done(r, nil)
			}
		}
		return m.remember(r)
	}
	var conflict *eventlog.ConflictError
	if !errors.As(err, &conflict) {
		return done(m.outcome(), fmt.Errorf("executor: append: %w", err))
	}
	delay, retry := m.opts.Retry.Delay(m.attempt)
	if !retry {
		return m.fail(m.outcome(), &ConcurrencyError{Attempts: m.attempt, Last: conflict})
	}
	if m.opts.OnRetry != nil {
		m.opts.OnRetry(RetryInfo{Attempt: m.attempt, Delay: delay, Conflict: conflict})
	}
	return effect{kind: effectSleep, delay: delay}
}

// foldAppended folds a record this execution appended, decoding it like a
// read one so that warm and cold states agree.
func (m *machine[S, E]) foldAppended(r eventlog.Record) error {
	ev, err := m.codec.Decode(r)
	if err != nil {
		return err
	}
	m.cmd.Apply(&m.state, ev)
	m.read[r.Stream] = r.Version
	return nil
}

// remember puts the state, now current at m.read's versions, into the
// cache, and saves a snapshot when this attempt replayed enough events.
func (m *machine[S, E]) remember(r Result) effect {
	cached := m.opts.Cache != nil && m.opts.Cache.Admit(m.key)
	snapshot := m.snapshots && m.replayed >= m.opts.SnapshotThreshold
	if !cached && !snapshot {
		return done(r, nil)
	}
	state, err := json.Marshal(m.state)
	if err != nil {
		return done(r, nil)
	}
	streams := make([]eventlog.ExpectedVersion, len(m.order))
	for i, s := range m.order {
		streams[i] = eventlog.ExpectedVersion{Stream: s, Version: m.read[s]}
	}
	if cached {
		e := cache.Entry{Streams: streams, State: state}
		if _, ok := any(m.state).(Cloner[S]); ok {
			e.Value = m.state // nothing folds into it any more: the machine is done
		}
		m.opts.Cache.Put(m.key, e)
	}
	if snapshot {
		m.result = r
		return effect{kind: effectSaveSnapshot, snap: eventlog.Snapshot{Key: m.snapshotKey(), Streams: streams, State: state}}
	}
	return done(r, nil)
}

// snapshotSaved takes the outcome of effectSaveSnapshot. The command has
// succeeded either way; a failed save only means a longer replay later.
func (m *machine[S, E]) snapshotSaved(err error) effect {
	m.result.SnapshotSaved = err == nil
	return done(m.result, nil)
}

// slept begins the next attempt after a backoff.
func (m *machine[S, E]) slept() effect { return m.beginAttempt() }
