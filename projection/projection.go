// Package projection keeps read models up to date from the global,
// commit-ordered event feed.
//
// A Projector applies events to tables of its own in a read-model SQL
// database (usually its own SQLite file, EVENTCORE_READ_DB). The Runner reads
// the feed after each projector's checkpoint in batches and applies each
// batch in one transaction that also advances the checkpoint, so a crash
// never applies an event twice or skips one. Only one runner works on a
// projection at a time, across processes, through a lease row in the same
// database. The package works on the eventlog.Store interface and a
// *sql.DB; it imports no driver.
package projection

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Projector maintains one read model.
type Projector interface {
	// Name identifies the projection: 1 to 64 of [a-z0-9_-]. It keys the
	// checkpoint, the lease and the dead letters.
	Name() string
	// Setup creates the read model's tables if they do not exist. It runs
	// in a transaction each time a Runner opens, and must be idempotent.
	Setup(ctx context.Context, tx *sql.Tx) error
	// Apply applies one event inside the batch's transaction. An error
	// invokes the projector's FailurePolicy for that event. The Runner
	// applies a batch's events without a savepoint each; when one fails,
	// the batch's writes are rolled back and its events applied again one
	// at a time, each in a savepoint (the first failure counts as the
	// event's first try), so Apply must have no effect outside tx.
	Apply(ctx context.Context, tx *sql.Tx, r eventlog.Record) error
	// Reset deletes every row of the read model, for a rebuild.
	Reset(ctx context.Context, tx *sql.Tx) error
}

// BatchProjector is implemented by projectors that apply a whole batch at
// once, for speed: a fold in memory that writes each touched row once per
// batch instead of once per event. The Runner then calls ApplyBatch with
// every batch, and Apply only to apply events one at a time after a batch
// failed.
type BatchProjector interface {
	Projector
	// ApplyBatch applies recs (1 to BatchSize events in position order,
	// only of the projector's types when it is a TypeFilter) inside the
	// batch's transaction, with the same effect as Apply on each in turn.
	// It must not keep recs. When it fails, the Runner rolls back what it
	// wrote and applies the same events again one at a time with Apply,
	// each in a savepoint, so that the FailurePolicy meets the failing
	// event alone (a batch's failure is not counted as a try of any event,
	// except in a batch of one event). It must therefore have no effect
	// outside tx.
	ApplyBatch(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error
}

// TypeFilter is implemented by projectors that want only some event types;
// the runner then asks the feed for those types only.
type TypeFilter interface {
	EventTypes() []string
}

// Strategy says what to do with an event whose Apply fails.
type Strategy int

const (
	// Stop ends the run at the failing event: the events before it in the
	// batch are committed with the checkpoint just before it, and the run
	// returns an error wrapping ErrProjectionStopped. The next run tries the
	// event again. The default.
	Stop Strategy = iota
	// Retry applies the event again up to Retries times with Backoff
	// doubling between tries, then stops as Stop does.
	Retry
	// Skip records the event and its error as a dead letter and moves on.
	Skip
)

// FailurePolicy is what a projector chooses for failing events.
type FailurePolicy struct {
	Strategy Strategy
	Retries  int           // with Retry: tries after the first; 0 means 3
	Backoff  time.Duration // with Retry: first wait; 0 means 50ms
}

// PolicyProvider is implemented by projectors that choose a FailurePolicy;
// others get Stop.
type PolicyProvider interface {
	FailurePolicy() FailurePolicy
}

// Errors.
var (
	// ErrProjectionStopped wraps the error of an event that stopped a run.
	ErrProjectionStopped = errors.New("projection: stopped at a failing event")
	// ErrLocked is returned when another runner holds the projection's
	// lease.
	ErrLocked = errors.New("projection: locked by another runner")
	// ErrUnknownProjection is returned for a name no projector has.
	ErrUnknownProjection = errors.New("projection: unknown projection")
)

// Report is what one catch-up of one projection did.
type Report struct {
	Name       string            `json:"name"`
	Applied    int               `json:"applied"`
	Skipped    int               `json:"skipped"` // dead letters recorded
	Checkpoint eventlog.Position `json:"checkpoint"`
	Head       eventlog.Position `json:"head"`
}

// Status is a projection's position relative to the log.
type Status struct {
	Name        string            `json:"name"`
	Checkpoint  eventlog.Position `json:"checkpoint"`
	Head        eventlog.Position `json:"head"`
	Lag         uint64            `json:"lag"`
	DeadLetters int               `json:"dead_letters"`
}

// DeadLetter is an event a projector skipped, with its error.
type DeadLetter struct {
	Projection string            `json:"projection"`
	Position   eventlog.Position `json:"position"`
	Stream     string            `json:"stream"`
	Version    eventlog.Version  `json:"version"`
	Type       string            `json:"type"`
	Error      string            `json:"error"`
	At         time.Time         `json:"at"`
}
