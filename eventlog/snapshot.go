package eventlog

import "context"

// Snapshot is a command's folded state saved beside the log, so that a
// cold instance starts from it and reads only the events after it.
type Snapshot struct {
	// Key names the command, the schema version of its state and its
	// stream set; a state of another schema version has another key.
	Key string
	// Streams are the streams the state covers with the version folded of
	// each.
	Streams []ExpectedVersion
	// State is the encoded state.
	State []byte
}

// SnapshotStore is an optional capability of a Store, found by type
// assertion. Its methods follow the Store's concurrency and Close rules.
type SnapshotStore interface {
	// LoadSnapshot returns the snapshot saved under key, and false when
	// there is none. Errors: ErrInvalid for an empty key.
	LoadSnapshot(ctx context.Context, key string) (Snapshot, bool, error)
	// SaveSnapshot saves s under s.Key unless the snapshot already there
	// covers more events (snapshots never go back in time). Errors:
	// ErrInvalid for an empty key or no streams.
	SaveSnapshot(ctx context.Context, s Snapshot) error
}
