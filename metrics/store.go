package metrics

import (
	"context"
	"errors"
	"iter"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Kinds of storage errors, the values of the kind label of
// eventcore_storage_errors_total.
const (
	StorageFull = "full" // eventlog.ErrStorageFull
	StorageIO   = "io"   // eventlog.ErrStorageUnavailable
)

// Store wraps an eventlog.Store and times its operations, and counts the
// appends refused by a version conflict or failed by the storage. It keeps the
// wrapped store's SnapshotStore capability when it has one, and its
// VersionProber capability (as StreamVersions when it has none).
type Store struct {
	eventlog.Store
	m *Metrics
}

// InstrumentStore returns store with its operations measured by m.
func InstrumentStore(store eventlog.Store, m *Metrics) eventlog.Store {
	s := &Store{Store: store, m: m}
	if snaps, ok := store.(eventlog.SnapshotStore); ok {
		return &snapshotStore{Store: s, snaps: snaps}
	}
	return s
}

// Append implements eventlog.Store.
func (s *Store) Append(ctx context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	defer s.m.observeStore(OpAppend, time.Now())
	res, err := s.Store.Append(ctx, req)
	switch {
	case errors.Is(err, eventlog.ErrConflict):
		s.m.conflicts.Inc()
	case errors.Is(err, eventlog.ErrStorageFull):
		s.m.storageErrors.WithLabelValues(StorageFull).Inc()
	case errors.Is(err, eventlog.ErrStorageUnavailable):
		s.m.storageErrors.WithLabelValues(StorageIO).Inc()
	}
	if err == nil {
		for _, e := range req.Expected {
			s.m.seeStreams(e.Stream)
		}
	}
	return res, err
}

// ReadStream implements eventlog.Store; the time is the whole iteration's.
func (s *Store) ReadStream(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) iter.Seq2[eventlog.Record, error] {
	return func(yield func(eventlog.Record, error) bool) {
		defer s.m.observeStore(OpReadStream, time.Now())
		s.m.seeStreams(stream)
		for r, err := range s.Store.ReadStream(ctx, stream, after) {
			if !yield(r, err) {
				return
			}
		}
	}
}

// StreamVersions implements eventlog.Store: the cache's probe.
func (s *Store) StreamVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	defer s.m.observeStore(OpProbe, time.Now())
	return s.Store.StreamVersions(ctx, streams)
}

// ProbeVersions implements eventlog.VersionProber with the wrapped store's
// capability, or its StreamVersions when it has none.
func (s *Store) ProbeVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	defer s.m.observeStore(OpProbe, time.Now())
	if p, ok := s.Store.(eventlog.VersionProber); ok {
		return p.ProbeVersions(ctx, streams)
	}
	return s.Store.StreamVersions(ctx, streams)
}

// ReadFeed implements eventlog.Store.
func (s *Store) ReadFeed(ctx context.Context, q eventlog.FeedQuery) ([]eventlog.Record, error) {
	defer s.m.observeStore(OpReadFeed, time.Now())
	return s.Store.ReadFeed(ctx, q)
}

type snapshotStore struct {
	*Store
	snaps eventlog.SnapshotStore
}

func (s *snapshotStore) LoadSnapshot(ctx context.Context, key string) (eventlog.Snapshot, bool, error) {
	return s.snaps.LoadSnapshot(ctx, key)
}

func (s *snapshotStore) SaveSnapshot(ctx context.Context, snap eventlog.Snapshot) error {
	return s.snaps.SaveSnapshot(ctx, snap)
}
