package eventlog

import (
	"context"
	"iter"
)

// Store is an append-only event log.
//
// Concurrency: every method is safe for concurrent use by many goroutines,
// and a store may share its data with other processes (for SQLite, other
// processes opening the same file): appends stay atomic and versions and
// positions stay consistent across all of them.
//
// Every method returns an error wrapping ErrClosed after Close, and ctx.Err()
// (possibly wrapped) when ctx ends before the call could be carried out.
// Other failures of the underlying database are returned wrapped, with the
// operation named.
type Store interface {
	// Append records req.Events atomically, after checking that every stream
	// in req.Expected is at its expected version. Either every event is
	// recorded or none is.
	//
	// It returns the recorded events in request order. Events of one stream
	// get consecutive versions; all events of the append get consecutive
	// positions, after every event committed before them.
	//
	// When req.CommandID was recorded by an earlier append, Append records
	// nothing and returns that append's records with Duplicate set, whatever
	// the expected versions say now.
	//
	// Errors: ErrInvalid (*InvalidError) for a malformed request, checked
	// before anything is written; ErrConflict (*ConflictError, listing every
	// stream that did not match) when a version differs; ErrStorageFull
	// when the storage has no space left (nothing was recorded);
	// ErrStorageUnavailable after an I/O error of the storage (outcome
	// unknown). When Append returns a context error, nothing was recorded.
	Append(ctx context.Context, req AppendRequest) (AppendResult, error)

	// ReadStream yields the events of stream with versions greater than
	// after, in version order. It streams: records are fetched in bounded
	// pages, never the whole stream at once, and no database connection is
	// held while the caller's loop body runs. A stream with no events yields
	// nothing. The first error (ErrInvalid for a zero stream id, ErrClosed,
	// a context or database error) is yielded once and ends the sequence.
	ReadStream(ctx context.Context, stream StreamID, after Version) iter.Seq2[Record, error]

	// StreamVersions returns the current version of each stream, in the
	// order given (0 for a stream with no events), read at one point in
	// time. Errors: ErrInvalid for a zero stream id.
	StreamVersions(ctx context.Context, streams []StreamID) ([]Version, error)

	// ReadFeed returns up to q.Limit events of the global feed with positions
	// greater than q.After, in position order, keeping only the types and
	// stream prefix q asks for. Errors: ErrInvalid for a limit outside 1 to
	// MaxFeedLimit, an invalid type or prefix.
	ReadFeed(ctx context.Context, q FeedQuery) ([]Record, error)

	// LookupCommand returns the records appended by the append that carried
	// commandID, and false when no recorded append carried it. Executors call
	// it before running a command with an idempotency key, so that a retried
	// command answers with its first result instead of deciding again on
	// state it has itself changed. Errors: ErrInvalid for an empty or
	// over-long id.
	LookupCommand(ctx context.Context, commandID string) ([]Record, bool, error)

	// Head returns the position of the last recorded event, 0 when the log
	// is empty.
	Head(ctx context.Context) (Position, error)

	// Close releases the store. Appends already accepted finish first; calls
	// after Close fail with ErrClosed. Close is idempotent.
	Close() error
}

// VersionProber is an optional capability of a Store, found by type
// assertion, for executors' warm probes. ProbeVersions answers like
// StreamVersions (same errors, same concurrency rules) but may answer from
// what the process knows of its own appends, without a query: then it can
// lag behind appends made by other processes since the store last checked
// for them, within a bound the store documents. Versions only grow, so a
// lagging answer is lower than the truth, and an append that expects it is
// refused with ErrConflict: it can cost a retry, never a wrong write.
type VersionProber interface {
	ProbeVersions(ctx context.Context, streams []StreamID) ([]Version, error)
}
