package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/internal/storekit"
)

var _ eventlog.SnapshotStore = (*Store)(nil)

// LoadSnapshot implements eventlog.SnapshotStore.
func (s *Store) LoadSnapshot(ctx context.Context, key string) (eventlog.Snapshot, bool, error) {
	if err := s.gate.Enter(); err != nil {
		return eventlog.Snapshot{}, false, err
	}
	defer s.gate.Leave()
	if err := storekit.CheckSnapshotKey(key); err != nil {
		return eventlog.Snapshot{}, false, err
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
	decoded, err := storekit.DecodeSnapshotStreams([]byte(streams))
	if err != nil {
		return eventlog.Snapshot{}, false, fmt.Errorf("postgres: load snapshot %q: %w", key, err)
	}
	return eventlog.Snapshot{Key: key, State: state, Streams: decoded}, true, nil
}

// SaveSnapshot implements eventlog.SnapshotStore. It is one statement of
// its own, outside the group commit: snapshots take no log lock.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventlog.Snapshot) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	enc, total, err := storekit.EncodeSnapshot(snap)
	if err != nil {
		return err
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
