// Package eventlogtest is the conformance suite of eventlog.Store. Every
// backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		eventlogtest.Run(t, func(t *testing.T) eventlog.Store {
//			s, err := mybackend.Open(...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { _ = s.Close() })
//			return s
//		})
//	}
package eventlogtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Run runs every behaviour of the eventlog.Store contract as a subtest of t.
// Each subtest calls open for a new, empty store; open registers the store's
// cleanup with t.Cleanup. The suite may close stores itself (Close is
// idempotent).
func Run(t *testing.T, open func(t *testing.T) eventlog.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s eventlog.Store)
	}{
		{"Append/SingleStream", testAppendSingleStream},
		{"Append/MultiStream", testAppendMultiStream},
		{"Append/StoreSetsMetadata", testAppendStoreSetsMetadata},
		{"Append/MultiStreamConflictWritesNothing", testMultiStreamConflictWritesNothing},
		{"Append/ReadOnlyStreamConflict", testReadOnlyStreamConflict},
		{"Append/ConflictListsEveryStream", testConflictListsEveryStream},
		{"Append/InvalidRequest", testInvalidAppend},
		{"Append/LargeEvent", testLargeEvent},
		{"Idempotency/Repeat", testIdempotentRepeat},
		{"Idempotency/MultiStream", testIdempotentMultiStream},
		{"Idempotency/ConflictRecordsNoCommand", testIdempotentConflictRecordsNothing},
		{"Idempotency/Concurrent", testIdempotentConcurrent},
		{"Idempotency/LookupCommand", testLookupCommand},
		{"Concurrency/RaceOnOneVersion", testRaceOnOneVersion},
		{"Concurrency/SharedStreams", testConcurrentSharedStreams},
		{"ReadStream/AfterVersion", testReadStreamAfter},
		{"ReadStream/ManyPages", testReadStreamManyPages},
		{"ReadStream/BreakEarly", testReadStreamBreakEarly},
		{"ReadStream/WriteWhileIterating", testReadStreamWriteWhileIterating},
		{"ReadStream/ZeroStreamID", testReadStreamZeroID},
		{"StreamVersions/Basic", testStreamVersions},
		{"StreamVersions/ManyStreams", testStreamVersionsMany},
		{"StreamVersions/ZeroStreamID", testStreamVersionsZeroID},
		{"ReadFeed/Queries", testReadFeedQueries},
		{"ReadFeed/InvalidQuery", testReadFeedInvalid},
		{"Head", testHead},
		{"Context/Cancelled", testContextCancelled},
		{"Context/CancelledWhileWaiting", testContextCancelledWhileWaiting},
		{"Close/UseAfterClose", testUseAfterClose},
		{"Close/WhileAppending", testCloseWhileAppending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// ---------------------------------------------------------------------------
// Append

func testAppendSingleStream(t *testing.T, s eventlog.Store) {
	order := sid("order-1")
	req := eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: order, Version: 0}},
		Events: []eventlog.Event{
			eventWithMeta(order, "OrderPlaced", `{"total": 12, "items": ["a", "b"]}`, eventlog.Metadata{
				Command: "PlaceOrder", CorrelationID: "corr-1", CausationID: "req-1",
			}),
			event(order, "OrderPaid", `{"amount":12}`),
			event(order, "Note", `"just a string"`),
		},
	}
	first := mustAppend(t, s, req)
	checkAppended(t, req, first, 1)

	req2 := appendTo(order, 3, event(order, "OrderShipped", `{}`), event(order, "OrderDelivered", `null`))
	second := mustAppend(t, s, req2)
	checkAppended(t, req2, second, 4)

	all := slices.Concat(first.Records, second.Records)
	requireRecords(t, "ReadStream", readStream(t, s, order, 0), all)
	requireRecords(t, "ReadFeed", readFeed(t, s, eventlog.FeedQuery{}), all)
	requireVersions(t, s, []eventlog.StreamID{order}, []eventlog.Version{5})
	requireHead(t, s, 5)
}

func testAppendMultiStream(t *testing.T, s eventlog.Store) {
	a, b, c, d := sid("a"), sid("b"), sid("c"), sid("d")
	seed := mustAppend(t, s, appendTo(a, 0, event(a, "Seeded", `{}`), event(a, "Seeded", `{}`)))

	// Interleaved streams, and a stream (d) that is only read.
	req := eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: d, Version: 0}, {Stream: c, Version: 0}, {Stream: a, Version: 2}, {Stream: b, Version: 0}},
		Events: []eventlog.Event{
			event(b, "B1", `{"n":1}`),
			event(a, "A3", `{"n":2}`),
			event(c, "C1", `{"n":3}`),
			event(a, "A4", `{"n":4}`),
			event(b, "B2", `{"n":5}`),
		},
	}
	res := mustAppend(t, s, req)
	checkAppended(t, req, res, 3)
	wantVersions := []eventlog.Version{1, 3, 1, 4, 2}
	for i, r := range res.Records {
		if r.Version != wantVersions[i] {
			t.Errorf("record %d (stream %s): version %d, want %d", i, r.Stream, r.Version, wantVersions[i])
		}
	}

	all := slices.Concat(seed.Records, res.Records)
	requireRecords(t, "ReadFeed", readFeed(t, s, eventlog.FeedQuery{}), all)
	for _, st := range []eventlog.StreamID{a, b, c, d} {
		requireRecords(t, "ReadStream "+st.String(), readStream(t, s, st, 0), filterStream(all, st))
	}
	requireVersions(t, s, []eventlog.StreamID{a, b, c, d}, []eventlog.Version{4, 2, 1, 0})
	requireHead(t, s, 7)
}

func testAppendStoreSetsMetadata(t *testing.T, s eventlog.Store) {
	st := sid("meta")
	bogus := uuid.MustParse("00000000-0000-4000-8000-000000000001")
	md := eventlog.Metadata{EventID: bogus, Command: "Cmd", CorrelationID: "c", CausationID: "x", CommandID: "caller-set"}

	// The store replaces the caller's EventID and CommandID, with or
	// without a command id on the request.
	withoutID := appendTo(st, 0, eventWithMeta(st, "E", `{}`, md), eventWithMeta(st, "E", `{}`, md))
	withID := appendTo(st, 2, eventWithMeta(st, "E", `{}`, md))
	withID.CommandID = "the-command"

	r1 := mustAppend(t, s, withoutID)
	checkAppended(t, withoutID, r1, 1)
	r2 := mustAppend(t, s, withID)
	checkAppended(t, withID, r2, 3)

	seen := map[uuid.UUID]bool{}
	for _, r := range slices.Concat(r1.Records, r2.Records) {
		if r.Metadata.EventID == bogus {
			t.Errorf("position %d: the caller's event id was kept", r.Position)
		}
		if seen[r.Metadata.EventID] {
			t.Errorf("position %d: event id %s is not unique", r.Position, r.Metadata.EventID)
		}
		seen[r.Metadata.EventID] = true
	}
	for _, r := range r1.Records {
		if r.Metadata.CommandID != "" {
			t.Errorf("position %d: CommandID %q, want empty (the request has none)", r.Position, r.Metadata.CommandID)
		}
	}
	requireRecords(t, "ReadStream", readStream(t, s, st, 0), slices.Concat(r1.Records, r2.Records))
}

func testMultiStreamConflictWritesNothing(t *testing.T, s eventlog.Store) {
	a, b := sid("a"), sid("b")
	seed := mustAppend(t, s, appendTo(a, 0, event(a, "A1", `{}`)))

	// b is fine, a is stale: neither stream gets anything.
	req := eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: b, Version: 0}, {Stream: a, Version: 0}},
		Events:   []eventlog.Event{event(b, "B1", `{}`), event(a, "A2", `{}`), event(b, "B2", `{}`)},
	}
	_, err := s.Append(t.Context(), req)
	requireConflict(t, err, eventlog.StreamConflict{Stream: a, Expected: 0, Actual: 1})

	requireVersions(t, s, []eventlog.StreamID{a, b}, []eventlog.Version{1, 0})
	requireHead(t, s, 1)
	requireRecords(t, "ReadFeed", readFeed(t, s, eventlog.FeedQuery{}), seed.Records)
	requireRecords(t, "ReadStream b", readStream(t, s, b, 0), nil)

	// The same append at the right versions then succeeds from position 2.
	req.Expected[1].Version = 1
	res := mustAppend(t, s, req)
	checkAppended(t, req, res, 2)
}

func testReadOnlyStreamConflict(t *testing.T, s eventlog.Store) {
	order, customer := sid("order-1"), sid("customer-1")
	mustAppend(t, s, eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: order, Version: 0}, {Stream: customer, Version: 0}},
		Events:   []eventlog.Event{event(order, "OrderPlaced", `{}`)},
	})
	// Someone else changes the customer, which the next command only read.
	mustAppend(t, s, appendTo(customer, 0, event(customer, "CustomerBlocked", `{}`)))

	_, err := s.Append(t.Context(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: order, Version: 1}, {Stream: customer, Version: 0}},
		Events:   []eventlog.Event{event(order, "OrderPaid", `{}`)},
	})
	requireConflict(t, err, eventlog.StreamConflict{Stream: customer, Expected: 0, Actual: 1})
	requireVersions(t, s, []eventlog.StreamID{order, customer}, []eventlog.Version{1, 1})
	requireHead(t, s, 2)

	// A read-only stream at its current version does not conflict.
	mustAppend(t, s, eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: order, Version: 1}, {Stream: customer, Version: 1}},
		Events:   []eventlog.Event{event(order, "OrderPaid", `{}`)},
	})
	requireVersions(t, s, []eventlog.StreamID{order, customer}, []eventlog.Version{2, 1})
}

func testConflictListsEveryStream(t *testing.T, s eventlog.Store) {
	a, b, c, d := sid("a"), sid("b"), sid("c"), sid("d")
	mustAppend(t, s, eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: a, Version: 0}, {Stream: b, Version: 0}, {Stream: c, Version: 0}},
		Events:   []eventlog.Event{event(a, "E", `{}`), event(b, "E", `{}`), event(b, "E", `{}`), event(c, "E", `{}`)},
	})
	// a and b are stale (one written, one read only), c is right, d is
	// expected to exist but does not.
	_, err := s.Append(t.Context(), eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: a, Version: 0}, {Stream: b, Version: 1}, {Stream: c, Version: 1}, {Stream: d, Version: 3}},
		Events:   []eventlog.Event{event(a, "E", `{}`), event(c, "E", `{}`)},
	})
	requireConflict(t, err,
		eventlog.StreamConflict{Stream: a, Expected: 0, Actual: 1},
		eventlog.StreamConflict{Stream: b, Expected: 1, Actual: 2},
		eventlog.StreamConflict{Stream: d, Expected: 3, Actual: 0},
	)
	if msg := err.Error(); !strings.Contains(msg, `"a"`) || !strings.Contains(msg, `"b"`) || !strings.Contains(msg, `"d"`) {
		t.Errorf("conflict error %q does not name every stream", msg)
	}
	requireVersions(t, s, []eventlog.StreamID{a, b, c, d}, []eventlog.Version{1, 2, 1, 0})
	requireHead(t, s, 4)
}

func testInvalidAppend(t *testing.T, s eventlog.Store) {
	seed, other := sid("seed"), sid("other")
	mustAppend(t, s, appendTo(seed, 0, event(seed, "Seeded", `{}`)))

	tests := []struct {
		name string
		req  eventlog.AppendRequest
	}{
		{"no events", eventlog.AppendRequest{}},
		{"expected versions but no events", eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: seed, Version: 1}},
		}},
		{"event without a type", appendTo(seed, 1, event(seed, "", `{}`))},
		{"type with a control character", appendTo(seed, 1, event(seed, "Bad\nType", `{}`))},
		{"type too long", appendTo(seed, 1, event(seed, strings.Repeat("t", eventlog.MaxEventTypeLength+1), `{}`))},
		{"data not JSON", appendTo(seed, 1, event(seed, "E", `{"unterminated":`))},
		{"data empty", appendTo(seed, 1, eventlog.Event{Stream: seed, Type: "E"})},
		{"second event invalid", appendTo(seed, 1, event(seed, "E", `{}`), event(seed, "E", `not json`))},
		{"event to a stream without an expected version", eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: seed, Version: 1}},
			Events:   []eventlog.Event{event(seed, "E", `{}`), event(other, "E", `{}`)},
		}},
		{"duplicated expected stream", eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: seed, Version: 1}, {Stream: other, Version: 0}, {Stream: seed, Version: 1}},
			Events:   []eventlog.Event{event(seed, "E", `{}`)},
		}},
		{"zero stream id in event", eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: seed, Version: 1}},
			Events:   []eventlog.Event{{Type: "E", Data: json.RawMessage(`{}`)}},
		}},
		{"zero stream id in expected", eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: seed, Version: 1}, {Version: 0}},
			Events:   []eventlog.Event{event(seed, "E", `{}`)},
		}},
		{"command id too long", withCommandID(appendTo(seed, 1, event(seed, "E", `{}`)), strings.Repeat("c", eventlog.MaxCommandIDLength+1))},
		{"command id not UTF-8", withCommandID(appendTo(seed, 1, event(seed, "E", `{}`)), "cmd-\xff")},
		{"invalid and stale", appendTo(seed, 0, event(seed, "", `{}`))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Append(t.Context(), tc.req)
			requireInvalid(t, err)
			if errors.Is(err, eventlog.ErrConflict) {
				t.Errorf("invalid request also reported as a conflict: %v", err)
			}
			requireHead(t, s, 1)
			requireVersions(t, s, []eventlog.StreamID{seed, other}, []eventlog.Version{1, 0})
		})
	}
}

func testLargeEvent(t *testing.T, s eventlog.Store) {
	const size = 1 << 20
	st := sid("large")
	var b strings.Builder
	b.WriteString(`{"note":"caf\u00e9 \"quoted\" \\ 日本語","blob":"`)
	for i := 0; b.Len() < size-2; i++ {
		b.WriteByte("abcdefghijklmnopqrstuvwxyz0123456789"[i%36])
	}
	b.WriteString(`"}`)
	data := b.String()
	if len(data) != size || !json.Valid([]byte(data)) {
		t.Fatalf("test data: %d bytes, valid JSON %v", len(data), json.Valid([]byte(data)))
	}

	req := appendTo(st, 0, event(st, "Large", data), event(st, "Small", `{"after":"large"}`))
	res := mustAppend(t, s, req)
	checkAppended(t, req, res, 1)
	requireRecords(t, "ReadStream", readStream(t, s, st, 0), res.Records)
	feed := readFeed(t, s, eventlog.FeedQuery{})
	requireRecords(t, "ReadFeed", feed, res.Records)
	if len(feed) > 0 && !jsonEqual(feed[0].Data, json.RawMessage(data)) {
		t.Errorf("large event data changed: %d bytes read, %d written", len(feed[0].Data), size)
	}
}

// ---------------------------------------------------------------------------
// Idempotency

func testIdempotentRepeat(t *testing.T, s eventlog.Store) {
	st, other := sid("account-1"), sid("account-2")
	req := withCommandID(appendTo(st, 0, event(st, "Opened", `{}`), event(st, "Deposited", `{"amount":5}`)), "cmd-1")
	first := mustAppend(t, s, req)
	checkAppended(t, req, first, 1)

	// The stream moves on; the expected version of the request is now stale.
	mustAppend(t, s, appendTo(st, 2, event(st, "Withdrawn", `{"amount":1}`)))
	requireHead(t, s, 3)

	repeats := []struct {
		name string
		req  eventlog.AppendRequest
	}{
		{"same request, stale version", req},
		{"current version", withCommandID(appendTo(st, 3, event(st, "Opened", `{}`), event(st, "Deposited", `{"amount":5}`)), "cmd-1")},
		{"different events", withCommandID(appendTo(st, 0, event(st, "Closed", `{"why":"other"}`)), "cmd-1")},
		{"different stream", withCommandID(appendTo(other, 0, event(other, "Opened", `{}`)), "cmd-1")},
	}
	for _, tc := range repeats {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Append(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("repeat: %v", err)
			}
			if !res.Duplicate {
				t.Errorf("repeat: Duplicate = false")
			}
			requireRecords(t, "repeat", res.Records, first.Records)
			requireHead(t, s, 3)
			requireVersions(t, s, []eventlog.StreamID{st, other}, []eventlog.Version{3, 0})
		})
	}

	// Another command id is a new append.
	req2 := withCommandID(appendTo(st, 3, event(st, "Deposited", `{"amount":5}`)), "cmd-2")
	res2 := mustAppend(t, s, req2)
	checkAppended(t, req2, res2, 4)
}

func testIdempotentMultiStream(t *testing.T, s eventlog.Store) {
	a, b, ro := sid("a"), sid("b"), sid("read-only")
	req := eventlog.AppendRequest{
		Expected:  []eventlog.ExpectedVersion{{Stream: a, Version: 0}, {Stream: b, Version: 0}, {Stream: ro, Version: 0}},
		Events:    []eventlog.Event{event(b, "B1", `{}`), event(a, "A1", `{}`), event(b, "B2", `{}`)},
		CommandID: "transfer-1",
	}
	first := mustAppend(t, s, req)
	checkAppended(t, req, first, 1)
	mustAppend(t, s, appendTo(ro, 0, event(ro, "Changed", `{}`)))

	res, err := s.Append(t.Context(), req)
	if err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if !res.Duplicate {
		t.Errorf("repeat: Duplicate = false")
	}
	requireRecords(t, "repeat", res.Records, first.Records)
	requireHead(t, s, 4)
}

func testIdempotentConflictRecordsNothing(t *testing.T, s eventlog.Store) {
	st := sid("s")
	mustAppend(t, s, appendTo(st, 0, event(st, "E", `{}`)))

	// A refused append does not record its command id...
	_, err := s.Append(t.Context(), withCommandID(appendTo(st, 0, event(st, "E", `{}`)), "cmd"))
	requireConflict(t, err)
	// ...nor does an invalid one...
	_, err = s.Append(t.Context(), withCommandID(appendTo(st, 1, event(st, "", `{}`)), "cmd"))
	requireInvalid(t, err)
	requireHead(t, s, 1)
	requireLookup(t, s, "cmd", nil)

	// ...so the command can then succeed.
	req := withCommandID(appendTo(st, 1, event(st, "E", `{"try":2}`)), "cmd")
	res := mustAppend(t, s, req)
	checkAppended(t, req, res, 2)
}

func testIdempotentConcurrent(t *testing.T, s eventlog.Store) {
	const n = 16
	a, b := sid("a"), sid("b")
	req := eventlog.AppendRequest{
		Expected:  []eventlog.ExpectedVersion{{Stream: a, Version: 0}, {Stream: b, Version: 0}},
		Events:    []eventlog.Event{event(a, "A1", `{}`), event(b, "B1", `{}`), event(a, "A2", `{}`)},
		CommandID: "once",
	}
	results := make([]eventlog.AppendResult, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Append(context.Background(), req)
		})
	}
	close(start)
	wg.Wait()

	var original *eventlog.AppendResult
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !results[i].Duplicate {
			if original != nil {
				t.Fatalf("more than one append with command id %q was not a duplicate", req.CommandID)
			}
			original = &results[i]
		}
	}
	if original == nil {
		t.Fatalf("every append was a duplicate")
	}
	checkAppended(t, req, *original, 1)
	for i := range n {
		requireRecords(t, fmt.Sprintf("goroutine %d", i), results[i].Records, original.Records)
	}
	requireHead(t, s, 3)
	requireVersions(t, s, []eventlog.StreamID{a, b}, []eventlog.Version{2, 1})
	requireRecords(t, "ReadFeed", readFeed(t, s, eventlog.FeedQuery{}), original.Records)
	requireLookup(t, s, req.CommandID, original.Records)
}

func testLookupCommand(t *testing.T, s eventlog.Store) {
	a, b := sid("a"), sid("b")
	requireLookup(t, s, "cmd-1", nil)

	req := eventlog.AppendRequest{
		Expected:  []eventlog.ExpectedVersion{{Stream: a, Version: 0}, {Stream: b, Version: 0}},
		Events:    []eventlog.Event{event(b, "B1", `{}`), event(a, "A1", `{"x":1}`), event(b, "B2", `{}`)},
		CommandID: "cmd-1",
	}
	mustAppend(t, s, appendTo(a, 0, event(a, "Before", `{}`)))
	req.Expected[0].Version = 1
	first := mustAppend(t, s, req)
	mustAppend(t, s, withCommandID(appendTo(a, 2, event(a, "After", `{}`)), "cmd-2"))
	requireLookup(t, s, "cmd-1", first.Records)

	// A duplicate changes nothing; a refused append records no command.
	if res, err := s.Append(t.Context(), req); err != nil || !res.Duplicate {
		t.Fatalf("repeat: Duplicate %v, %v", res.Duplicate, err)
	}
	requireLookup(t, s, "cmd-1", first.Records)
	_, err := s.Append(t.Context(), withCommandID(appendTo(a, 0, event(a, "Stale", `{}`)), "cmd-3"))
	requireConflict(t, err)
	requireLookup(t, s, "cmd-3", nil)
	// Command ids are whole keys, not prefixes.
	requireLookup(t, s, "cmd", nil)
	requireLookup(t, s, "cmd-10", nil)

	for _, id := range []string{"", strings.Repeat("c", eventlog.MaxCommandIDLength+1)} {
		recs, found, err := s.LookupCommand(t.Context(), id)
		requireInvalid(t, err)
		if found || len(recs) != 0 {
			t.Errorf("LookupCommand(%q) found %d records with an error", abbrev([]byte(id)), len(recs))
		}
	}
}

// ---------------------------------------------------------------------------
// Concurrency

func testRaceOnOneVersion(t *testing.T, s eventlog.Store) {
	const n = 16
	st := sid("contended")
	results := make([]eventlog.AppendResult, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Append(context.Background(),
				appendTo(st, 0, event(st, "Claimed", fmt.Sprintf(`{"by":%d}`, i))))
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i := range n {
		if errs[i] == nil {
			if winner >= 0 {
				t.Errorf("goroutines %d and %d both appended at version 0", winner, i)
			}
			winner = i
			continue
		}
		requireConflict(t, errs[i], eventlog.StreamConflict{Stream: st, Expected: 0, Actual: 1})
	}
	if winner < 0 {
		t.Fatalf("no goroutine appended")
	}
	requireHead(t, s, 1)
	requireVersions(t, s, []eventlog.StreamID{st}, []eventlog.Version{1})
	requireRecords(t, "ReadStream", readStream(t, s, st, 0), results[winner].Records)
}

func testConcurrentSharedStreams(t *testing.T, s eventlog.Store) {
	const (
		goroutines = 8
		perG       = 50
	)
	streams := []eventlog.StreamID{sid("shared-0"), sid("shared-1"), sid("shared-2")}
	acks := make([][]eventlog.AppendResult, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				targets := []eventlog.StreamID{streams[(g+i)%len(streams)]}
				if i%5 == 4 {
					// Every fifth append spans two streams.
					targets = append(targets, streams[(g+i+1)%len(streams)])
				}
				req, res, err := appendRetrying(context.Background(), s, targets, func(k int, st eventlog.StreamID) eventlog.Event {
					return event(st, "Tick", fmt.Sprintf(`{"g":%d,"i":%d,"k":%d}`, g, i, k))
				})
				if err != nil {
					t.Errorf("goroutine %d append %d: %v", g, i, err)
					return
				}
				checkAppended(t, req, res, 0)
				acks[g] = append(acks[g], res)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	byID := map[uuid.UUID]eventlog.Record{}
	for g, results := range acks {
		var last eventlog.Position
		for _, res := range results {
			// One goroutine's appends are sequential: each commits after
			// the one before.
			if res.Records[0].Position <= last {
				t.Errorf("goroutine %d: append at position %d acknowledged after one at %d", g, res.Records[0].Position, last)
			}
			last = res.Records[len(res.Records)-1].Position
			for _, r := range res.Records {
				byID[r.Metadata.EventID] = r
			}
		}
	}

	feed := readFeed(t, s, eventlog.FeedQuery{})
	if len(feed) != len(byID) {
		t.Errorf("feed has %d events, %d were acknowledged", len(feed), len(byID))
	}
	next := CheckLog(t, feed)
	for _, r := range feed {
		ack, ok := byID[r.Metadata.EventID]
		if !ok {
			t.Errorf("position %d: event %s was not acknowledged to anyone", r.Position, r.Metadata.EventID)
			continue
		}
		delete(byID, r.Metadata.EventID)
		if d := recordDiff(r, ack); d != "" {
			t.Errorf("position %d differs from the acknowledged record: %s", r.Position, d)
		}
	}
	if len(byID) > 0 {
		t.Errorf("%d acknowledged events are missing from the feed", len(byID))
	}
	want := make([]eventlog.Version, len(streams))
	for i, st := range streams {
		want[i] = next[st]
	}
	requireVersions(t, s, streams, want)
	requireHead(t, s, eventlog.Position(len(feed)))
}

// ---------------------------------------------------------------------------
// ReadStream

func testReadStreamAfter(t *testing.T, s eventlog.Store) {
	st, other := sid("s"), sid("other")
	var all []eventlog.Record
	for v := range eventlog.Version(5) {
		all = append(all, mustAppend(t, s, appendTo(st, v, event(st, "E", fmt.Sprintf(`{"v":%d}`, v+1)))).Records...)
		mustAppend(t, s, appendTo(other, v, event(other, "O", `{}`)))
	}
	tests := []struct {
		name   string
		stream eventlog.StreamID
		after  eventlog.Version
		want   []eventlog.Record
	}{
		{"from the start", st, 0, all},
		{"after 2", st, 2, all[2:]},
		{"after the last", st, 5, nil},
		{"after beyond the last", st, 100, nil},
		{"stream without events", sid("empty"), 0, nil},
		{"prefix of a stream", sid("othe"), 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireRecords(t, "ReadStream", readStream(t, s, tc.stream, tc.after), tc.want)
		})
	}
}

// pageSpan is comfortably larger than any backend's page.
const pageSpan = 1500

func appendLongStream(t *testing.T, s eventlog.Store, st eventlog.StreamID) []eventlog.Record {
	t.Helper()
	const batch = 100
	noise := sid(st.String() + "-noise")
	var all []eventlog.Record
	for v := eventlog.Version(0); v < pageSpan; v += batch {
		events := make([]eventlog.Event, batch)
		for i := range events {
			events[i] = event(st, "E", fmt.Sprintf(`{"v":%d}`, int(v)+i+1))
		}
		all = append(all, mustAppend(t, s, appendTo(st, v, events...)).Records...)
		mustAppend(t, s, appendTo(noise, v/batch, event(noise, "Noise", `{}`)))
	}
	return all
}

func testReadStreamManyPages(t *testing.T, s eventlog.Store) {
	st := sid("long")
	all := appendLongStream(t, s, st)
	requireRecords(t, "ReadStream from 0", readStream(t, s, st, 0), all)
	requireRecords(t, "ReadStream after 700", readStream(t, s, st, 700), all[700:])
	requireRecords(t, "ReadStream after 1499", readStream(t, s, st, pageSpan-1), all[pageSpan-1:])
}

func testReadStreamBreakEarly(t *testing.T, s eventlog.Store) {
	st := sid("long")
	all := appendLongStream(t, s, st)
	for _, stop := range []int{1, 3, 600} {
		var got []eventlog.Record
		for r, err := range s.ReadStream(t.Context(), st, 0) {
			if err != nil {
				t.Fatalf("ReadStream: %v", err)
			}
			got = append(got, r)
			if len(got) == stop {
				break
			}
		}
		requireRecords(t, fmt.Sprintf("first %d", stop), got, all[:stop])
	}
	// The store is still usable after the abandoned reads.
	mustAppend(t, s, appendTo(st, pageSpan, event(st, "After", `{}`)))
	requireVersions(t, s, []eventlog.StreamID{st}, []eventlog.Version{pageSpan + 1})
}

// testReadStreamWriteWhileIterating appends and reads from inside the loop
// body of a ReadStream: the iterator holds no connection or lock while the
// body runs, so neither waits for it.
func testReadStreamWriteWhileIterating(t *testing.T, s eventlog.Store) {
	st, side := sid("long"), sid("side")
	all := appendLongStream(t, s, st)
	var got []eventlog.Record
	var v eventlog.Version
	for r, err := range s.ReadStream(t.Context(), st, 0) {
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		got = append(got, r)
		if len(got)%250 == 0 {
			mustAppend(t, s, appendTo(side, v, event(side, "Side", `{}`)))
			v++
			requireVersions(t, s, []eventlog.StreamID{side}, []eventlog.Version{v})
			if inner := readStream(t, s, st, r.Version); len(inner) != len(all)-len(got) {
				t.Fatalf("nested ReadStream after %d: %d records, want %d", r.Version, len(inner), len(all)-len(got))
			}
		}
	}
	requireRecords(t, "ReadStream", got, all)
}

func testReadStreamZeroID(t *testing.T, s eventlog.Store) {
	n := 0
	for r, err := range s.ReadStream(t.Context(), eventlog.StreamID{}, 0) {
		n++
		if n > 1 {
			t.Fatalf("ReadStream of the zero id yielded more than once")
		}
		requireInvalid(t, err)
		if r.Position != 0 {
			t.Errorf("error yielded with a record: %+v", r)
		}
	}
	if n != 1 {
		t.Errorf("ReadStream of the zero id yielded %d times, want one error", n)
	}
}

// ---------------------------------------------------------------------------
// StreamVersions

func testStreamVersions(t *testing.T, s eventlog.Store) {
	a, b, unknown := sid("a"), sid("b"), sid("unknown")
	mustAppend(t, s, appendTo(a, 0, event(a, "E", `{}`), event(a, "E", `{}`), event(a, "E", `{}`)))
	mustAppend(t, s, appendTo(b, 0, event(b, "E", `{}`)))

	tests := []struct {
		name    string
		streams []eventlog.StreamID
		want    []eventlog.Version
	}{
		{"none", []eventlog.StreamID{}, []eventlog.Version{}},
		{"one", []eventlog.StreamID{a}, []eventlog.Version{3}},
		{"unknown", []eventlog.StreamID{unknown}, []eventlog.Version{0}},
		{"given order with duplicates", []eventlog.StreamID{b, unknown, a, b, a}, []eventlog.Version{1, 0, 3, 1, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireVersions(t, s, tc.streams, tc.want)
		})
	}
}

func testStreamVersionsMany(t *testing.T, s eventlog.Store) {
	const n = 600 // more than one SQL statement's worth of parameters
	streams := make([]eventlog.StreamID, n)
	expected := make([]eventlog.ExpectedVersion, n)
	var events []eventlog.Event
	for i := range n {
		streams[i] = sid(fmt.Sprintf("stream-%04d", i))
		expected[i] = eventlog.ExpectedVersion{Stream: streams[i]}
		for range i % 3 {
			events = append(events, event(streams[i], "E", `{}`))
		}
	}
	mustAppend(t, s, eventlog.AppendRequest{Expected: expected, Events: events})

	// Every stream twice, in reverse the second time, and unknown streams.
	var query []eventlog.StreamID
	var want []eventlog.Version
	for i := range n {
		query = append(query, streams[i], sid(fmt.Sprintf("unknown-%04d", i)))
		want = append(want, eventlog.Version(i%3), 0)
	}
	for i := n - 1; i >= 0; i-- {
		query = append(query, streams[i])
		want = append(want, eventlog.Version(i%3))
	}
	requireVersions(t, s, query, want)
}

func testStreamVersionsZeroID(t *testing.T, s eventlog.Store) {
	for _, streams := range [][]eventlog.StreamID{
		{{}},
		{sid("a"), {}, sid("b")},
	} {
		_, err := s.StreamVersions(t.Context(), streams)
		requireInvalid(t, err)
	}
}

// ---------------------------------------------------------------------------
// ReadFeed and Head

func testReadFeedQueries(t *testing.T, s eventlog.Store) {
	type ev struct{ stream, typ string }
	appends := [][]ev{
		{{"order-1", "OrderPlaced"}},
		{{"customer-1", "CustomerRegistered"}},
		{{"order-10", "OrderPlaced"}, {"order-1", "OrderPaid"}},
		{{"order.x", "OrderPlaced"}},
		{{"café/1", "CustomerRegistered"}, {"café/2", "OrderPlaced"}},
		{{"order-1", "OrderShipped"}},
		{{"customer-1", "CustomerMoved"}, {"order-10", "OrderPaid"}, {"order-2", "OrderPlaced"}},
		{{"cafe/1", "OrderPlaced"}, {"cafê/1", "OrderPlaced"}},
		{{"группа-1", "OrderPlaced"}, {"грусть-1", "OrderPlaced"}, {"грv-1", "OrderPlaced"}},
	}
	var all []eventlog.Record
	for i, evs := range appends {
		versions := map[eventlog.StreamID]eventlog.Version{}
		var req eventlog.AppendRequest
		for _, e := range evs {
			st := sid(e.stream)
			if _, ok := versions[st]; !ok {
				v := lastVersion(all, st)
				versions[st] = v
				req.Expected = append(req.Expected, eventlog.ExpectedVersion{Stream: st, Version: v})
			}
			req.Events = append(req.Events, event(st, e.typ, fmt.Sprintf(`{"append":%d}`, i)))
		}
		all = append(all, mustAppend(t, s, req).Records...)
	}

	tests := []struct {
		name string
		q    eventlog.FeedQuery
	}{
		{"everything", eventlog.FeedQuery{Limit: 100}},
		{"max limit", eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit}},
		{"after", eventlog.FeedQuery{After: 4, Limit: 100}},
		{"after the head", eventlog.FeedQuery{After: eventlog.Position(len(all)), Limit: 100}},
		{"after beyond the head", eventlog.FeedQuery{After: 1000, Limit: 100}},
		{"limit", eventlog.FeedQuery{Limit: 3}},
		{"limit 1", eventlog.FeedQuery{Limit: 1}},
		{"after and limit", eventlog.FeedQuery{After: 2, Limit: 4}},
		{"one type", eventlog.FeedQuery{Limit: 100, Types: []string{"OrderPlaced"}}},
		{"several types", eventlog.FeedQuery{Limit: 100, Types: []string{"OrderShipped", "CustomerRegistered", "OrderPaid"}}},
		{"types with a repeat", eventlog.FeedQuery{Limit: 100, Types: []string{"OrderPaid", "OrderPaid"}}},
		{"type matching nothing", eventlog.FeedQuery{Limit: 100, Types: []string{"Nothing"}}},
		{"prefix", eventlog.FeedQuery{Limit: 100, StreamPrefix: "order-"}},
		{"prefix that is a full id", eventlog.FeedQuery{Limit: 100, StreamPrefix: "order-1"}},
		{"prefix that is a full id only", eventlog.FeedQuery{Limit: 100, StreamPrefix: "customer-1"}},
		{"prefix matching nothing", eventlog.FeedQuery{Limit: 100, StreamPrefix: "zzz"}},
		{"prefix past every id", eventlog.FeedQuery{Limit: 100, StreamPrefix: "order-10-"}},
		{"prefix ending in a multibyte character", eventlog.FeedQuery{Limit: 100, StreamPrefix: "café"}},
		{"non-ASCII prefix", eventlog.FeedQuery{Limit: 100, StreamPrefix: "café/"}},
		{"prefix of one letter", eventlog.FeedQuery{Limit: 100, StreamPrefix: "c"}},
		{"prefix whose last byte is 0xBF", eventlog.FeedQuery{Limit: 100, StreamPrefix: "груп"}},
		{"prefix ending in a two-byte letter", eventlog.FeedQuery{Limit: 100, StreamPrefix: "гру"}},
		{"types and prefix", eventlog.FeedQuery{Limit: 100, Types: []string{"OrderPlaced", "OrderPaid"}, StreamPrefix: "order-1"}},
		{"everything combined", eventlog.FeedQuery{After: 3, Limit: 2, Types: []string{"OrderPlaced", "OrderPaid", "CustomerMoved"}, StreamPrefix: "order"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ReadFeed(t.Context(), tc.q)
			if err != nil {
				t.Fatalf("ReadFeed(%+v): %v", tc.q, err)
			}
			requireRecords(t, fmt.Sprintf("ReadFeed(%+v)", tc.q), got, modelFeed(all, tc.q))
		})
	}
}

// modelFeed is what ReadFeed must return for q, given every record.
func modelFeed(all []eventlog.Record, q eventlog.FeedQuery) []eventlog.Record {
	var out []eventlog.Record
	for _, r := range all {
		if len(out) == q.Limit {
			break
		}
		if r.Position <= q.After {
			continue
		}
		if len(q.Types) > 0 && !slices.Contains(q.Types, r.Type) {
			continue
		}
		if !strings.HasPrefix(r.Stream.String(), q.StreamPrefix) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func testReadFeedInvalid(t *testing.T, s eventlog.Store) {
	st := sid("s")
	mustAppend(t, s, appendTo(st, 0, event(st, "E", `{}`)))
	tests := []struct {
		name string
		q    eventlog.FeedQuery
	}{
		{"limit 0", eventlog.FeedQuery{}},
		{"negative limit", eventlog.FeedQuery{Limit: -1}},
		{"limit above the maximum", eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit + 1}},
		{"empty type", eventlog.FeedQuery{Limit: 10, Types: []string{"E", ""}}},
		{"type with a control character", eventlog.FeedQuery{Limit: 10, Types: []string{"E\x00"}}},
		{"prefix with a pattern character", eventlog.FeedQuery{Limit: 10, StreamPrefix: "s*"}},
		{"prefix not UTF-8", eventlog.FeedQuery{Limit: 10, StreamPrefix: "s\xff"}},
		{"prefix too long", eventlog.FeedQuery{Limit: 10, StreamPrefix: strings.Repeat("s", eventlog.MaxStreamIDLength+1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := s.ReadFeed(t.Context(), tc.q)
			requireInvalid(t, err)
			if len(recs) != 0 {
				t.Errorf("ReadFeed returned %d records with an error", len(recs))
			}
		})
	}
}

func testHead(t *testing.T, s eventlog.Store) {
	requireHead(t, s, 0)
	recs, err := s.ReadFeed(t.Context(), eventlog.FeedQuery{Limit: 10})
	if err != nil || len(recs) != 0 {
		t.Fatalf("ReadFeed on an empty store: %d records, %v", len(recs), err)
	}
	a, b := sid("a"), sid("b")
	mustAppend(t, s, appendTo(a, 0, event(a, "E", `{}`)))
	requireHead(t, s, 1)
	res := mustAppend(t, s, eventlog.AppendRequest{
		Expected: []eventlog.ExpectedVersion{{Stream: a, Version: 1}, {Stream: b, Version: 0}},
		Events:   []eventlog.Event{event(b, "E", `{}`), event(a, "E", `{}`), event(b, "E", `{}`)},
	})
	requireHead(t, s, res.Records[len(res.Records)-1].Position)
	requireHead(t, s, 4)
}

// ---------------------------------------------------------------------------
// Context and Close

func testContextCancelled(t *testing.T, s eventlog.Store) {
	st := sid("s")
	mustAppend(t, s, appendTo(st, 0, event(st, "E", `{}`)))

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()

	for _, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"deadline exceeded", expired, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireCtxErr := func(op string, err error) {
				t.Helper()
				if !errors.Is(err, tc.want) {
					t.Errorf("%s: %v, want an error wrapping %v", op, err, tc.want)
				}
			}
			_, err := s.Append(tc.ctx, withCommandID(appendTo(st, 1, event(st, "E", `{}`)), "cmd-"+tc.name))
			requireCtxErr("Append", err)

			n := 0
			for _, err := range s.ReadStream(tc.ctx, st, 0) {
				n++
				requireCtxErr("ReadStream", err)
			}
			if n != 1 {
				t.Errorf("ReadStream yielded %d times, want one error", n)
			}
			_, err = s.ReadFeed(tc.ctx, eventlog.FeedQuery{Limit: 10})
			requireCtxErr("ReadFeed", err)
			_, err = s.StreamVersions(tc.ctx, []eventlog.StreamID{st})
			requireCtxErr("StreamVersions", err)
			_, err = s.Head(tc.ctx)
			requireCtxErr("Head", err)
			_, _, err = s.LookupCommand(tc.ctx, "cmd-"+tc.name)
			requireCtxErr("LookupCommand", err)

			// Nothing was written, not even the command id.
			requireHead(t, s, 1)
			requireVersions(t, s, []eventlog.StreamID{st}, []eventlog.Version{1})
		})
	}
	req := withCommandID(appendTo(st, 1, event(st, "E", `{}`)), "cmd-cancelled")
	res := mustAppend(t, s, req)
	checkAppended(t, req, res, 2)
}

// testContextCancelledWhileWaiting cancels appends at random moments while
// other appends keep the store busy: an append that returns a context error
// must have recorded nothing, one that succeeds must be in the log.
func testContextCancelledWhileWaiting(t *testing.T, s eventlog.Store) {
	const (
		goroutines = 8
		perG       = 40
	)
	acked := make([][]eventlog.AppendResult, goroutines)
	cancelled := make([]int, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			st := sid(fmt.Sprintf("writer-%d", g))
			var v eventlog.Version
			for i := range perG {
				ctx, cancel := context.WithCancel(context.Background())
				if i%2 == 1 {
					time.AfterFunc(time.Duration(rand.IntN(500))*time.Microsecond, cancel)
				}
				req := withCommandID(appendTo(st, v, event(st, "E", fmt.Sprintf(`{"i":%d}`, i))), fmt.Sprintf("%s/%d", st, i))
				res, err := s.Append(ctx, req)
				cancel()
				switch {
				case err == nil:
					checkAppended(t, req, res, 0)
					acked[g] = append(acked[g], res)
					v++
				case errors.Is(err, context.Canceled):
					cancelled[g]++
				default:
					t.Errorf("%s append %d: %v", st, i, err)
					return
				}
			}
		})
	}
	wg.Wait()

	want := map[string]eventlog.Record{}
	for _, results := range acked {
		for _, res := range results {
			want[res.Records[0].Metadata.CommandID] = res.Records[0]
		}
	}
	feed := readFeed(t, s, eventlog.FeedQuery{})
	for _, r := range feed {
		ack, ok := want[r.Metadata.CommandID]
		if !ok {
			t.Errorf("position %d: command %q was recorded but its Append did not succeed", r.Position, r.Metadata.CommandID)
			continue
		}
		if d := recordDiff(r, ack); d != "" {
			t.Errorf("position %d: %s", r.Position, d)
		}
		delete(want, r.Metadata.CommandID)
	}
	if len(want) > 0 {
		t.Errorf("%d acknowledged appends are missing from the feed", len(want))
	}
	t.Logf("%d appends acknowledged, %d cancelled", len(feed), sumInts(cancelled))
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

func testUseAfterClose(t *testing.T, s eventlog.Store) {
	st := sid("s")
	mustAppend(t, s, appendTo(st, 0, event(st, "E", `{}`)))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	requireClosed := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, eventlog.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
	ctx := t.Context()
	_, err := s.Append(ctx, appendTo(st, 1, event(st, "E", `{}`)))
	requireClosed("Append", err)
	_, err = s.Append(ctx, withCommandID(appendTo(st, 1, event(st, "E", `{}`)), "cmd"))
	requireClosed("Append with command id", err)
	n := 0
	for _, err := range s.ReadStream(ctx, st, 0) {
		n++
		requireClosed("ReadStream", err)
	}
	if n != 1 {
		t.Errorf("ReadStream after Close yielded %d times, want one error", n)
	}
	_, err = s.StreamVersions(ctx, []eventlog.StreamID{st})
	requireClosed("StreamVersions", err)
	_, err = s.ReadFeed(ctx, eventlog.FeedQuery{Limit: 10})
	requireClosed("ReadFeed", err)
	_, err = s.Head(ctx)
	requireClosed("Head", err)
	_, _, err = s.LookupCommand(ctx, "cmd")
	requireClosed("LookupCommand", err)
	if err := s.Close(); err != nil {
		t.Errorf("third Close: %v", err)
	}
}

func testCloseWhileAppending(t *testing.T, s eventlog.Store) {
	const goroutines = 8
	var appended atomic.Int64
	errs := make([]error, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			st := sid(fmt.Sprintf("writer-%d", g))
			for v := eventlog.Version(0); ; v++ {
				req := appendTo(st, v, event(st, "E", `{}`))
				res, err := s.Append(context.Background(), req)
				if err != nil {
					errs[g] = err
					return
				}
				checkAppended(t, req, res, 0)
				appended.Add(1)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for appended.Load() < 2*goroutines && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	for g, err := range errs {
		if !errors.Is(err, eventlog.ErrClosed) {
			t.Errorf("goroutine %d stopped with %v, want ErrClosed", g, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Helpers

func sid(s string) eventlog.StreamID { return eventlog.MustStreamID(s) }

func event(st eventlog.StreamID, typ, data string) eventlog.Event {
	return eventlog.Event{Stream: st, Type: typ, Data: json.RawMessage(data)}
}

func eventWithMeta(st eventlog.StreamID, typ, data string, md eventlog.Metadata) eventlog.Event {
	e := event(st, typ, data)
	e.Metadata = md
	return e
}

// appendTo is a request appending events to the one stream st at version v.
func appendTo(st eventlog.StreamID, v eventlog.Version, events ...eventlog.Event) eventlog.AppendRequest {
	return eventlog.AppendRequest{Expected: []eventlog.ExpectedVersion{{Stream: st, Version: v}}, Events: events}
}

func withCommandID(req eventlog.AppendRequest, id string) eventlog.AppendRequest {
	req.CommandID = id
	return req
}

func mustAppend(t *testing.T, s eventlog.Store, req eventlog.AppendRequest) eventlog.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), req)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return res
}

// appendRetrying appends one event per stream of targets, made by mk, at
// the streams' current versions, reading them again after each conflict.
func appendRetrying(ctx context.Context, s eventlog.Store, targets []eventlog.StreamID, mk func(k int, st eventlog.StreamID) eventlog.Event) (eventlog.AppendRequest, eventlog.AppendResult, error) {
	for range 10_000 {
		vs, err := s.StreamVersions(ctx, targets)
		if err != nil {
			return eventlog.AppendRequest{}, eventlog.AppendResult{}, fmt.Errorf("StreamVersions: %w", err)
		}
		var req eventlog.AppendRequest
		for k, st := range targets {
			req.Expected = append(req.Expected, eventlog.ExpectedVersion{Stream: st, Version: vs[k]})
			req.Events = append(req.Events, mk(k, st))
		}
		res, err := s.Append(ctx, req)
		if errors.Is(err, eventlog.ErrConflict) {
			continue
		}
		return req, res, err
	}
	return eventlog.AppendRequest{}, eventlog.AppendResult{}, errors.New("still conflicting after 10000 attempts")
}

// checkAppended checks the result of a successful, non-duplicate append
// against its request: one record per event in request order, consecutive
// positions from firstPos (any first position when firstPos is 0),
// consecutive versions per stream after the expected one, and the event's
// contents with the metadata the store fills in. It reports with t.Errorf,
// so it may be called from any goroutine.
func checkAppended(t *testing.T, req eventlog.AppendRequest, res eventlog.AppendResult, firstPos eventlog.Position) {
	t.Helper()
	if res.Duplicate {
		t.Errorf("append: Duplicate = true, want false")
	}
	if len(res.Records) != len(req.Events) {
		t.Errorf("append of %d events returned %d records", len(req.Events), len(res.Records))
		return
	}
	next := map[eventlog.StreamID]eventlog.Version{}
	for _, e := range req.Expected {
		next[e.Stream] = e.Version
	}
	if firstPos == 0 {
		firstPos = res.Records[0].Position
		if firstPos == 0 {
			t.Errorf("record 0 has position 0")
		}
	}
	ids := map[uuid.UUID]bool{}
	for i, r := range res.Records {
		ev := req.Events[i]
		next[ev.Stream]++
		var d []string
		if want := firstPos + eventlog.Position(i); r.Position != want {
			d = append(d, fmt.Sprintf("position %d, want %d", r.Position, want))
		}
		if r.Stream != ev.Stream {
			d = append(d, fmt.Sprintf("stream %q, want %q", r.Stream, ev.Stream))
		}
		if r.Version != next[ev.Stream] {
			d = append(d, fmt.Sprintf("version %d, want %d", r.Version, next[ev.Stream]))
		}
		if r.Type != ev.Type {
			d = append(d, fmt.Sprintf("type %q, want %q", r.Type, ev.Type))
		}
		if !jsonEqual(r.Data, ev.Data) {
			d = append(d, fmt.Sprintf("data %s, want %s", abbrev(r.Data), abbrev(ev.Data)))
		}
		md, want := r.Metadata, ev.Metadata
		if md.Command != want.Command || md.CorrelationID != want.CorrelationID || md.CausationID != want.CausationID {
			d = append(d, fmt.Sprintf("metadata %+v does not keep the request's %+v", md, want))
		}
		if md.CommandID != req.CommandID {
			d = append(d, fmt.Sprintf("CommandID %q, want %q", md.CommandID, req.CommandID))
		}
		if md.EventID == uuid.Nil || md.EventID.Version() != 7 {
			d = append(d, fmt.Sprintf("event id %s is not a UUIDv7", md.EventID))
		}
		if ids[md.EventID] {
			d = append(d, fmt.Sprintf("event id %s repeated within the append", md.EventID))
		}
		ids[md.EventID] = true
		if r.RecordedAt.IsZero() || r.RecordedAt.Location() != time.UTC {
			d = append(d, fmt.Sprintf("RecordedAt %v is zero or not UTC", r.RecordedAt))
		}
		if len(d) > 0 {
			t.Errorf("append record %d: %s", i, strings.Join(d, "; "))
		}
	}
}

func readStream(t *testing.T, s eventlog.Store, st eventlog.StreamID, after eventlog.Version) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	for r, err := range s.ReadStream(t.Context(), st, after) {
		if err != nil {
			t.Fatalf("ReadStream(%s, %d): %v", st, after, err)
		}
		out = append(out, r)
	}
	return out
}

// readFeed reads every record q selects, page by page; q.Limit is the page
// size (MaxFeedLimit when 0).
func readFeed(t *testing.T, s eventlog.Store, q eventlog.FeedQuery) []eventlog.Record {
	t.Helper()
	if q.Limit == 0 {
		q.Limit = eventlog.MaxFeedLimit
	}
	var out []eventlog.Record
	for {
		page, err := s.ReadFeed(t.Context(), q)
		if err != nil {
			t.Fatalf("ReadFeed(%+v): %v", q, err)
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out
		}
		q.After = page[len(page)-1].Position
	}
}

func requireHead(t *testing.T, s eventlog.Store, want eventlog.Position) {
	t.Helper()
	got, err := s.Head(t.Context())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if got != want {
		t.Errorf("Head = %d, want %d", got, want)
	}
}

// requireLookup checks that LookupCommand finds want for id, or nothing when
// want is nil.
func requireLookup(t *testing.T, s eventlog.Store, id string, want []eventlog.Record) {
	t.Helper()
	got, found, err := s.LookupCommand(t.Context(), id)
	if err != nil {
		t.Fatalf("LookupCommand(%q): %v", id, err)
	}
	if found != (want != nil) {
		t.Errorf("LookupCommand(%q): found = %v, want %v", id, found, want != nil)
	}
	requireRecords(t, fmt.Sprintf("LookupCommand(%q)", id), got, want)
}

func requireVersions(t *testing.T, s eventlog.Store, streams []eventlog.StreamID, want []eventlog.Version) {
	t.Helper()
	got, err := s.StreamVersions(t.Context(), streams)
	if err != nil {
		t.Fatalf("StreamVersions: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("StreamVersions returned %d versions for %d streams", len(got), len(streams))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("StreamVersions[%d] (%s) = %d, want %d", i, streams[i], got[i], want[i])
		}
	}
}

func requireInvalid(t *testing.T, err error) {
	t.Helper()
	var ie *eventlog.InvalidError
	if !errors.Is(err, eventlog.ErrInvalid) || !errors.As(err, &ie) {
		t.Errorf("error %v, want an *InvalidError wrapping ErrInvalid", err)
	}
}

// requireConflict checks that err is a *ConflictError wrapping ErrConflict
// and, when want is given, that it lists exactly want, in any order.
func requireConflict(t *testing.T, err error, want ...eventlog.StreamConflict) {
	t.Helper()
	var ce *eventlog.ConflictError
	if !errors.Is(err, eventlog.ErrConflict) || !errors.As(err, &ce) {
		t.Fatalf("error %v, want a *ConflictError wrapping ErrConflict", err)
	}
	if len(want) == 0 {
		return
	}
	byStream := func(a, b eventlog.StreamConflict) int { return strings.Compare(a.Stream.String(), b.Stream.String()) }
	got := slices.SortedFunc(slices.Values(ce.Conflicts), byStream)
	want = slices.SortedFunc(slices.Values(want), byStream)
	if !slices.Equal(got, want) {
		t.Errorf("conflicts %+v, want %+v", got, want)
	}
}

func requireRecords(t *testing.T, what string, got, want []eventlog.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if d := recordDiff(got[i], want[i]); d != "" {
			t.Errorf("%s: record %d: %s", what, i, d)
			return
		}
	}
}

func recordDiff(got, want eventlog.Record) string {
	var d []string
	if got.Position != want.Position {
		d = append(d, fmt.Sprintf("position %d, want %d", got.Position, want.Position))
	}
	if got.Stream != want.Stream {
		d = append(d, fmt.Sprintf("stream %q, want %q", got.Stream, want.Stream))
	}
	if got.Version != want.Version {
		d = append(d, fmt.Sprintf("version %d, want %d", got.Version, want.Version))
	}
	if got.Type != want.Type {
		d = append(d, fmt.Sprintf("type %q, want %q", got.Type, want.Type))
	}
	if !jsonEqual(got.Data, want.Data) {
		d = append(d, fmt.Sprintf("data %s, want %s", abbrev(got.Data), abbrev(want.Data)))
	}
	if got.Metadata != want.Metadata {
		d = append(d, fmt.Sprintf("metadata %+v, want %+v", got.Metadata, want.Metadata))
	}
	if !got.RecordedAt.Equal(want.RecordedAt) {
		d = append(d, fmt.Sprintf("recorded at %v, want %v", got.RecordedAt, want.RecordedAt))
	}
	return strings.Join(d, "; ")
}

// jsonEqual reports whether a and b are the same JSON value, so that a
// backend may store JSON in a normalized form.
func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var va, vb any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

func abbrev(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%s... (%d bytes)", b[:80], len(b))
	}
	return string(b)
}

func filterStream(recs []eventlog.Record, st eventlog.StreamID) []eventlog.Record {
	var out []eventlog.Record
	for _, r := range recs {
		if r.Stream == st {
			out = append(out, r)
		}
	}
	return out
}

func lastVersion(recs []eventlog.Record, st eventlog.StreamID) eventlog.Version {
	var v eventlog.Version
	for _, r := range recs {
		if r.Stream == st {
			v = r.Version
		}
	}
	return v
}

// CheckLog fails the test unless feed, the whole log read from position 0,
// has positions 1..n without gaps and every stream's versions 1..m without
// gaps and in position order. It returns each stream's last version.
func CheckLog(t testing.TB, feed []eventlog.Record) map[eventlog.StreamID]eventlog.Version {
	t.Helper()
	next := map[eventlog.StreamID]eventlog.Version{}
	for i, r := range feed {
		if r.Position != eventlog.Position(i+1) {
			t.Fatalf("feed record %d has position %d: positions are not gapless", i, r.Position)
		}
		next[r.Stream]++
		if r.Version != next[r.Stream] {
			t.Fatalf("position %d: stream %s version %d, want %d (versions not gapless or out of position order)", r.Position, r.Stream, r.Version, next[r.Stream])
		}
	}
	return next
}
