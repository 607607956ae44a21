package postgres

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/internal/storekit"
)

// appendCall is one Append waiting for the committer. Everything that
// needs no lock (validation, event ids, metadata encoding) is done by the
// caller before it queues.
type appendCall struct {
	req     eventlog.AppendRequest
	meta    []eventlog.Metadata
	encoded []string // meta as stored
	storekit.Handoff[appendOutcome]
}

// appendOutcome is a call's answer: a result, an error, or (dup) the
// positions recorded by the earlier append with the same command id, which
// the caller reads itself.
type appendOutcome struct {
	result   eventlog.AppendResult
	err      error
	dup      bool
	dupFirst int64
	dupLast  int64
}

func prepareAppend(req eventlog.AppendRequest) (*appendCall, error) {
	c := &appendCall{req: req, meta: make([]eventlog.Metadata, len(req.Events)), encoded: make([]string, len(req.Events))}
	c.Init()
	for i, ev := range req.Events {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("postgres: append: event id: %w", err)
		}
		md := ev.Metadata
		md.EventID = id
		md.CommandID = req.CommandID
		enc, err := json.Marshal(md)
		if err != nil {
			return nil, fmt.Errorf("postgres: append: metadata: %w", err)
		}
		c.meta[i], c.encoded[i] = md, string(enc)
	}
	return c, nil
}

func unmarshalMetadata(s string, md *eventlog.Metadata) error {
	return json.Unmarshal([]byte(s), md)
}

// appendSQL calls eventlog_append (migrations/0002_append.sql); the casts
// let the server type the parameters without a describe round trip.
const appendSQL = `SELECT append_index, status, first_position, last_position, actual FROM eventlog_append(
	$1::text[], $2::boolean[], $3::int[], $4::bigint[], $5::bigint[],
	$6::text[], $7::int[], $8::int[], $9::int[],
	$10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[], $15::timestamptz)`

// batchArgs are the arguments of appendSQL for a batch.
type batchArgs struct {
	streams   []string
	written   []bool
	xSlot     []int32
	xExpected []int64
	xNew      []int64
	aCommand  []*string
	aXFirst   []int32
	aXLast    []int32
	aEvents   []int32
	eStream   []string
	eVersion  []int64
	eType     []string
	eData     []string
	eMeta     []string
	now       time.Time
}

func (a *batchArgs) list() []any {
	return []any{a.streams, a.written, a.xSlot, a.xExpected, a.xNew, a.aCommand, a.aXFirst, a.aXLast, a.aEvents,
		a.eStream, a.eVersion, a.eType, a.eData, a.eMeta, a.now}
}

// buildBatch lays the calls out as appendSQL's arrays. Streams are sorted
// by bytes, the order in which the function locks them (COLLATE "C").
func buildBatch(batch []*appendCall, now time.Time) *batchArgs {
	a := &batchArgs{now: now}
	written := map[string]bool{}
	for _, c := range batch {
		for _, e := range c.req.Expected {
			if _, ok := written[e.Stream.String()]; !ok {
				written[e.Stream.String()] = false
			}
		}
		for _, ev := range c.req.Events {
			written[ev.Stream.String()] = true
		}
	}
	a.streams = make([]string, 0, len(written))
	for id := range written {
		a.streams = append(a.streams, id)
	}
	slices.Sort(a.streams)
	slot := make(map[string]int32, len(a.streams))
	a.written = make([]bool, len(a.streams))
	for i, id := range a.streams {
		slot[id] = int32(i + 1)
		a.written[i] = written[id]
	}
	for _, c := range batch {
		if c.req.CommandID != "" {
			a.aCommand = append(a.aCommand, &c.req.CommandID)
		} else {
			a.aCommand = append(a.aCommand, nil)
		}
		next := make(map[string]int64, len(c.req.Expected))
		for _, e := range c.req.Expected {
			next[e.Stream.String()] = int64(e.Version)
		}
		for i, ev := range c.req.Events {
			id := ev.Stream.String()
			next[id]++
			a.eStream = append(a.eStream, id)
			a.eVersion = append(a.eVersion, next[id])
			a.eType = append(a.eType, ev.Type)
			a.eData = append(a.eData, string(ev.Data))
			a.eMeta = append(a.eMeta, c.encoded[i])
		}
		a.aXFirst = append(a.aXFirst, int32(len(a.xSlot)+1))
		for _, e := range c.req.Expected {
			id := e.Stream.String()
			a.xSlot = append(a.xSlot, slot[id])
			a.xExpected = append(a.xExpected, int64(e.Version))
			a.xNew = append(a.xNew, next[id])
		}
		a.aXLast = append(a.aXLast, int32(len(a.xSlot)))
		a.aEvents = append(a.aEvents, int32(len(c.req.Events)))
	}
	return a
}

// Statuses returned by eventlog_append.
const (
	statusAccepted  = 0
	statusConflict  = 1
	statusDuplicate = 2
)

// outcome turns one row of eventlog_append's answer into c's outcome.
func (c *appendCall) outcome(status int32, first, last int64, actual []int64, now time.Time) appendOutcome {
	switch status {
	case statusAccepted:
		next := make(map[eventlog.StreamID]eventlog.Version, len(c.req.Expected))
		for _, e := range c.req.Expected {
			next[e.Stream] = e.Version
		}
		records := make([]eventlog.Record, len(c.req.Events))
		for i, ev := range c.req.Events {
			next[ev.Stream]++
			records[i] = eventlog.Record{
				Position: eventlog.Position(first + int64(i)), Stream: ev.Stream, Version: next[ev.Stream],
				Type: ev.Type, Data: ev.Data, Metadata: c.meta[i], RecordedAt: now,
			}
		}
		if want := first + int64(len(records)) - 1; want != last {
			return appendOutcome{err: fmt.Errorf("postgres: append: positions %d to %d for %d events", first, last, len(records))}
		}
		return appendOutcome{result: eventlog.AppendResult{Records: records}}
	case statusConflict:
		if len(actual) != len(c.req.Expected) {
			return appendOutcome{err: fmt.Errorf("postgres: append: conflict with %d versions for %d streams", len(actual), len(c.req.Expected))}
		}
		var conflicts []eventlog.StreamConflict
		for i, e := range c.req.Expected {
			if v := eventlog.Version(actual[i]); v != e.Version {
				conflicts = append(conflicts, eventlog.StreamConflict{Stream: e.Stream, Expected: e.Version, Actual: v})
			}
		}
		return appendOutcome{err: &eventlog.ConflictError{Conflicts: conflicts}}
	case statusDuplicate:
		return appendOutcome{dup: true, dupFirst: first, dupLast: last}
	}
	return appendOutcome{err: fmt.Errorf("postgres: append: unknown status %d", status)}
}
