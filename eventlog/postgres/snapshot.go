package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

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
	err := s.pool.QueryRow(ctx, `SELECT streams::text, state FROM snapshots WHERE key = $1`, key).Scan(&streams, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return eventlog.Snapshot{}, false, nil
	}
	if err != nil {
		return eventlog.Snapshot{}, false, readErr("load snapshot", ctx, err)
	}
	var decoded []snapshotStream
	if err := json.Unmarshal([]byte(streams), &decoded); err != nil {
		return eventlog.Snapshot{}, false, fmt.Errorf("postgres: load snapshot %q: streams: %w", key, err)
	}
	snap := eventlog.Snapshot{Key: key, State: state, Streams: make([]eventlog.ExpectedVersion, len(decoded))}
	for i, d := range decoded {
		id, err := eventlog.NewStreamID(d.Stream)
		if err != nil {
			return eventlog.Snapshot{}, false, fmt.Errorf("postgres: load snapshot %q: %w", key, err)
		}
		snap.Streams[i] = eventlog.ExpectedVersion{Stream: id, Version: eventlog.Version(d.Version)}
	}
	return snap, true, nil
}

// SaveSnapshot implements eventlog.SnapshotStore. It is one statement of
// its own, outside the group commit: snapshots take no log lock.
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
		return fmt.Errorf("postgres: save snapshot %q: %w", snap.Key, err)
	}
	state := snap.State
	if state == nil {
		state = []byte{}
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO snapshots (key, streams, total_version, state, saved_at)
		VALUES ($1, $2::json, $3, $4, $5)
		ON CONFLICT (key) DO UPDATE SET streams = excluded.streams, total_version = excluded.total_version,
			state = excluded.state, saved_at = excluded.saved_at
		WHERE excluded.total_version > snapshots.total_version`,
		snap.Key, string(enc), int64(total), state, time.Now().UTC())
	if err != nil {
		return readErr("save snapshot", ctx, err)
	}
	return nil
}
