package eventlog

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Stores wrap them so that callers can test with errors.Is.
var (
	// ErrInvalid marks a request that can never succeed as given: an invalid
	// stream id, an empty append, an event without a type, data that is not
	// JSON, a limit out of range. Nothing was written. See *InvalidError.
	ErrInvalid = errors.New("eventlog: invalid argument")

	// ErrConflict marks an append refused because a stream was not at its
	// expected version. Nothing was written. See *ConflictError.
	ErrConflict = errors.New("eventlog: version conflict")

	// ErrClosed is returned by every method of a store after Close.
	ErrClosed = errors.New("eventlog: store is closed")

	// ErrUnavailable marks a write whose durability could not be confirmed:
	// the store committed it locally but could not reach what makes it
	// durable (a replica). Its outcome is unknown to the caller: it may be
	// kept or lost. Retrying with the same command id is safe, since a
	// recorded id is never applied twice.
	ErrUnavailable = errors.New("eventlog: durable storage unavailable")

	// ErrNotWriter marks a write refused because this process does not hold
	// the single-writer lease of the log (another writer holds it, or this
	// one lost it). Nothing was written.
	ErrNotWriter = errors.New("eventlog: this process is not the log's writer")

	// ErrStorageFull marks a write refused because the storage under the
	// log is full (SQLite's SQLITE_FULL, or an I/O error on a filesystem
	// with no space left). Nothing was written. The store takes writes
	// again, without a restart, once space is freed.
	ErrStorageFull = errors.New("eventlog: storage is full")

	// ErrStorageUnavailable marks a write that met an I/O error of the
	// storage (a failed write or fsync), or that arrived while the store
	// was reopening its database after one. Its outcome is unknown to the
	// caller: a write whose fsync failed may be kept or lost. Retrying with
	// the same command id is safe.
	ErrStorageUnavailable = errors.New("eventlog: storage failed")
)

// InvalidError says what was wrong with an argument. It wraps ErrInvalid.
type InvalidError struct {
	What   string // the argument: "stream id", "event 2", "feed limit", ...
	Reason string
}

func invalidf(what, format string, args ...any) error {
	return &InvalidError{What: what, Reason: fmt.Sprintf(format, args...)}
}

func (e *InvalidError) Error() string { return "eventlog: " + e.What + " " + e.Reason }

// Unwrap returns ErrInvalid.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// StreamConflict is one stream whose version did not match.
type StreamConflict struct {
	Stream   StreamID
	Expected Version
	Actual   Version
}

// ConflictError lists every stream of an append whose current version was not
// the expected one. It wraps ErrConflict.
type ConflictError struct {
	Conflicts []StreamConflict
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	b.WriteString("eventlog: version conflict:")
	for i, c := range e.Conflicts {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " stream %q expected version %d, actual %d", c.Stream, c.Expected, c.Actual)
	}
	return b.String()
}

// Unwrap returns ErrConflict.
func (e *ConflictError) Unwrap() error { return ErrConflict }
