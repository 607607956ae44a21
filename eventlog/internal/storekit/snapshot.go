package storekit

import (
	"encoding/json"
	"fmt"

	"github.com/eventcore-go/eventcore/eventlog"
)

// snapshotStream is how a snapshot's streams are stored: a JSON array of
// these.
type snapshotStream struct {
	Stream  string `json:"stream"`
	Version uint64 `json:"version"`
}

// CheckSnapshotKey refuses an empty key (eventlog.ErrInvalid).
func CheckSnapshotKey(key string) error {
	if key == "" {
		return &eventlog.InvalidError{What: "snapshot key", Reason: "must not be empty"}
	}
	return nil
}

// EncodeSnapshot checks snap (a key, at least one stream, no empty stream
// id; eventlog.ErrInvalid otherwise) and returns its streams encoded and
// the sum of their versions, which orders snapshots of one key: a save
// never replaces a snapshot whose sum is as large.
func EncodeSnapshot(snap eventlog.Snapshot) (streams []byte, total uint64, err error) {
	if err := CheckSnapshotKey(snap.Key); err != nil {
		return nil, 0, err
	}
	if len(snap.Streams) == 0 {
		return nil, 0, &eventlog.InvalidError{What: "snapshot", Reason: "covers no streams"}
	}
	encoded := make([]snapshotStream, len(snap.Streams))
	for i, e := range snap.Streams {
		if e.Stream.IsZero() {
			return nil, 0, &eventlog.InvalidError{What: "snapshot", Reason: "has an empty stream id"}
		}
		encoded[i] = snapshotStream{Stream: e.Stream.String(), Version: uint64(e.Version)}
		total += uint64(e.Version)
	}
	streams, err = json.Marshal(encoded)
	return streams, total, err
}

// DecodeSnapshotStreams decodes what EncodeSnapshot encoded. Errors: the
// JSON decoder's, or eventlog.ErrInvalid for an invalid stream id.
func DecodeSnapshotStreams(data []byte) ([]eventlog.ExpectedVersion, error) {
	var decoded []snapshotStream
	if err := json.Unmarshal(data, &decoded); err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	out := make([]eventlog.ExpectedVersion, len(decoded))
	for i, d := range decoded {
		id, err := eventlog.NewStreamID(d.Stream)
		if err != nil {
			return nil, err
		}
		out[i] = eventlog.ExpectedVersion{Stream: id, Version: eventlog.Version(d.Version)}
	}
	return out, nil
}
