package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eventcore-go/eventcore/eventlog"
)

var _ eventlog.SnapshotStore = (*Store)(nil)

type snapshotStream struct {
	Stream  string `json:"stream"`
	Version uint64 `json:"version"`
}

// LoadSnapshot implements eventlog.SnapshotStore.
func (s *Store) LoadSnapshot(ctx context.Context, key string) (eventlog.Snapshot, bool, error) {
	if err := s.enter(); err != nil {
		return eventlog.Snapshot{}, false, err
	}
	defer s.inflight.Done()
	if key == "" {
		return eventlog.Snapshot{}, false, &eventlog.InvalidError{What: "snapshot key", Reason: "must not be empty"}
	}
	var streams string
	var state []byte
	err := s.loadSnapshot.QueryRowContext(ctx, key).Scan(&streams, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return eventlog.Snapshot{}, false, nil
	}
	if err != nil {
		return eventlog.Snapshot{}, false, s.readErr("load snapshot", ctx, err)
	}
	var decoded []snapshotStream
	if err := json.Unmarshal([]byte(streams), &decoded); err != nil {
		return eventlog.Snapshot{}, false, fmt.Errorf("sqlite: load snapshot %q: streams: %w", key, err)
	}
	snap := eventlog.Snapshot{Key: key, State: state, Streams: make([]eventlog.ExpectedVersion, len(decoded))}
	for i, d := range decoded {
		id, err := eventlog.NewStreamID(d.Stream)
		if err != nil {
			return eventlog.Snapshot{}, false, fmt.Errorf("sqlite: load snapshot %q: %w", key, err)
		}
		snap.Streams[i] = eventlog.ExpectedVersion{Stream: id, Version: eventlog.Version(d.Version)}
	}
	return snap, true, nil
}

// SaveSnapshot implements eventlog.SnapshotStore. The save goes through the
// writer like an append.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventlog.Snapshot) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inflight.Done()
	if snap.Key == "" {
		return &eventlog.InvalidError{What: "snapshot key", Reason: "must not be empty"}
	}
	if len(snap.Streams) == 0 {
		return &eventlog.InvalidError{What: "snapshot", Reason: "covers no streams"}
	}
	if s.writer == nil {
		return ErrReadOnly
	}
	_, err := s.writer.submit(ctx, &appendCall{snapshot: &snap, done: make(chan appendOutcome, 1)})
	return err
}

// saveSnapshot runs inside the writer's transaction.
func (w *writer) saveSnapshot(ctx context.Context, snap *eventlog.Snapshot, now int64) error {
	streams := make([]snapshotStream, len(snap.Streams))
	var total uint64
	for i, e := range snap.Streams {
		if e.Stream.IsZero() {
			return &eventlog.InvalidError{What: "snapshot", Reason: "has an empty stream id"}
		}
		streams[i] = snapshotStream{Stream: e.Stream.String(), Version: uint64(e.Version)}
		total += uint64(e.Version)
	}
	enc, err := json.Marshal(streams)
	if err != nil {
		return err
	}
	_, err = w.conn.ExecContext(ctx, `INSERT INTO snapshots (key, streams, total_version, state, saved_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET streams = excluded.streams, total_version = excluded.total_version,
			state = excluded.state, saved_at = excluded.saved_at
		WHERE excluded.total_version > snapshots.total_version`,
		snap.Key, string(enc), int64(total), snap.State, now)
	return err
}
