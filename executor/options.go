package executor

import (
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
)

// DefaultMaxStreams bounds the streams one command may read, declared and
// discovered together.
const DefaultMaxStreams = 64

// DefaultSnapshotThreshold is the default of Options.SnapshotThreshold.
const DefaultSnapshotThreshold = 100

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
	// Cache, when set, keeps warm what commands read, so that a warm
	// instance probes versions instead of replaying history:
	//   - the folded state of each command and stream set: a command whose
	//     entry is current probes its streams' versions instead of reading
	//     them, and one whose streams moved reads only the new events;
	//   - the decoded events of short streams (see MaxCachedStreamEvents):
	//     a command over a new combination of warm streams folds them from
	//     memory.
	// Entries are checked against the store's versions before use, so they
	// can cost a retry but never a decision on stale state.
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

// withDefaults fills the zero fields that have defaults.
func (o Options) withDefaults(cmd any) Options {
	if o.Retry == nil {
		o.Retry = DefaultRetryPolicy
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if named, ok := cmd.(Named); ok && o.Metadata.Command == "" {
		o.Metadata.Command = named.CommandName()
	}
	if o.SnapshotThreshold == 0 {
		o.SnapshotThreshold = DefaultSnapshotThreshold
	}
	return o
}

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
	// Replayed is how many events the last attempt read from the store and
	// folded: the whole history on a cold start, the new events on a
	// partial cache hit, none on a full hit. Recalled is how many it folded
	// from the cache's stream events instead. Folded counts the events
	// folded over every attempt, from the store or from memory.
	Replayed, Recalled, Folded int
	// Cache says where the last attempt's state came from.
	Cache CacheOutcome
	// SnapshotSaved is true when this execution saved a snapshot.
	SnapshotSaved bool
}

// CacheOutcome says where an attempt's state came from.
type CacheOutcome int

// The outcomes, as Result.Cache reports them.
const (
	// CacheUnused: no cache was given and no snapshot was found.
	CacheUnused CacheOutcome = iota
	// CacheMiss: no cached state; the streams were read from the store or
	// folded from cached stream events (Result.Recalled).
	CacheMiss
	// CacheHit: the cached state was current; nothing was read.
	CacheHit
	// CachePartial: the cached state was behind; only the new events were
	// read.
	CachePartial
	// CacheSnapshot: the state started from a durable snapshot.
	CacheSnapshot
)

// String returns "", "miss", "hit", "partial" or "snapshot".
func (o CacheOutcome) String() string {
	switch o {
	case CacheMiss:
		return "miss"
	case CacheHit:
		return "hit"
	case CachePartial:
		return "partial"
	case CacheSnapshot:
		return "snapshot"
	}
	return ""
}
