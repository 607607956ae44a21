package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

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
	err := s.loadSnapshot.QueryRowContext(ctx, key).Scan(&streams, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return eventlog.Snapshot{}, false, nil
	}
	if err != nil {
		return eventlog.Snapshot{}, false, s.readErr("load snapshot", ctx, err)
	}
	decoded, err := storekit.DecodeSnapshotStreams([]byte(streams))
	if err != nil {
		return eventlog.Snapshot{}, false, fmt.Errorf("sqlite: load snapshot %q: %w", key, err)
	}
	return eventlog.Snapshot{Key: key, State: state, Streams: decoded}, true, nil
}

// SaveSnapshot implements eventlog.SnapshotStore. The save goes through the
// writer like an append.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventlog.Snapshot) error {
	if err := s.gate.Enter(); err != nil {
		return err
	}
	defer s.gate.Leave()
	if _, _, err := storekit.EncodeSnapshot(snap); err != nil {
		return err
	}
	if s.writer == nil {
		return ErrReadOnly
	}
	c := &appendCall{snapshot: &snap}
	c.Init()
	_, err := s.writer.submit(ctx, c)
	return err
}

// saveSnapshot runs inside the writer's transaction.
func (w *writer) saveSnapshot(ctx context.Context, snap *eventlog.Snapshot, now int64) error {
	enc, total, err := storekit.EncodeSnapshot(*snap)
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
