// Package eventlog is the vocabulary of the event log: validated stream ids,
// versions and positions, the events a command appends and the records a
// store returns, the Store interface every backend implements, and the typed
// errors they return.
//
// The package imports no database driver. Backends live in subpackages
// (eventlog/sqlite) and prove themselves against eventlog/eventlogtest.
package eventlog

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MaxStreamIDLength is the longest stream id, in bytes.
const MaxStreamIDLength = 255

// MaxEventTypeLength is the longest event type name, in bytes.
const MaxEventTypeLength = 255

// StreamID names one stream of events. The zero value is not a valid id;
// obtain one from NewStreamID or MustStreamID.
type StreamID struct {
	value string
}

// NewStreamID validates s as a stream id: 1 to 255 bytes of valid UTF-8, no
// control characters and none of the pattern characters * ? [ ] (which are
// reserved for stream selectors). The error wraps ErrInvalid.
func NewStreamID(s string) (StreamID, error) {
	if err := validateName("stream id", s, MaxStreamIDLength, "*?[]"); err != nil {
		return StreamID{}, err
	}
	return StreamID{value: s}, nil
}

// MustStreamID is NewStreamID for ids known to be valid (constants, ids built
// from validated parts); it panics on an invalid id.
func MustStreamID(s string) StreamID {
	id, err := NewStreamID(s)
	if err != nil {
		panic(err)
	}
	return id
}

// String returns the id as given to NewStreamID.
func (s StreamID) String() string { return s.value }

// IsZero reports whether s is the zero StreamID, which no store accepts.
func (s StreamID) IsZero() bool { return s.value == "" }

// MarshalText implements encoding.TextMarshaler.
func (s StreamID) MarshalText() ([]byte, error) { return []byte(s.value), nil }

// UnmarshalText implements encoding.TextUnmarshaler with the rules of
// NewStreamID.
func (s *StreamID) UnmarshalText(b []byte) error {
	id, err := NewStreamID(string(b))
	if err != nil {
		return err
	}
	*s = id
	return nil
}

// ValidateEventType checks an event type name: 1 to 255 bytes of valid UTF-8
// without control characters. The error wraps ErrInvalid.
func ValidateEventType(t string) error {
	return validateName("event type", t, MaxEventTypeLength, "")
}

func validateName(what, s string, maxLen int, forbidden string) error {
	switch {
	case s == "":
		return invalidf(what, "must not be empty")
	case len(s) > maxLen:
		return invalidf(what, "is %d bytes, longer than %d", len(s), maxLen)
	case !utf8.ValidString(s):
		return invalidf(what, "%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalidf(what, "%q contains control character %U", s, r)
		}
		if forbidden != "" && strings.ContainsRune(forbidden, r) {
			return invalidf(what, "%q contains reserved character %q", s, r)
		}
	}
	return nil
}

// Version is the number of events in a stream: 0 means the stream has no
// events yet, and the n-th event of a stream has version n.
type Version uint64

// Position is an event's place in the global feed. Positions are assigned in
// commit order, start at 1 and have no gaps: a reader that has seen position
// p has seen every event committed before it.
type Position uint64

// Metadata travels with every event. The caller sets the command name and the
// correlation and causation ids; the store sets EventID and CommandID.
type Metadata struct {
	// EventID is a UUIDv7 assigned by the store when the event is recorded;
	// whatever the caller puts here is replaced.
	EventID uuid.UUID `json:"event_id"`
	// Command is the name of the command that decided the event.
	Command string `json:"command,omitempty"`
	// CorrelationID groups every event caused by one request.
	CorrelationID string `json:"correlation_id,omitempty"`
	// CausationID names what caused this event (a request or another event).
	CausationID string `json:"causation_id,omitempty"`
	// CommandID is the idempotency key of the append that recorded the event,
	// copied by the store from AppendRequest.CommandID.
	CommandID string `json:"idempotency_key,omitempty"`
}

// Event is an event to append: the stream it goes to, its type and its data.
type Event struct {
	Stream   StreamID
	Type     string
	Data     json.RawMessage // valid JSON; usually an object
	Metadata Metadata
}

// Record is an event as the log recorded it.
type Record struct {
	Position   Position
	Stream     StreamID
	Version    Version
	Type       string
	Data       json.RawMessage
	Metadata   Metadata
	RecordedAt time.Time // UTC
}

// ExpectedVersion states the version a stream must have for an append to
// succeed: the version the command saw when it read the stream.
type ExpectedVersion struct {
	Stream  StreamID
	Version Version
}

// MaxCommandIDLength is the longest command id (idempotency key), in bytes.
const MaxCommandIDLength = 255

// AppendRequest is one atomic append.
type AppendRequest struct {
	// Expected lists every stream of the command's consistency boundary with
	// the version it read, including streams that receive no events. Every
	// stream in Events must appear here exactly once.
	Expected []ExpectedVersion
	// Events are appended in order; events of one stream get consecutive
	// versions after the expected one. At least one event is required.
	Events []Event
	// CommandID, when not empty, is an idempotency key: the store records it
	// with the events, and a later append with the same CommandID appends
	// nothing and returns the events recorded the first time.
	CommandID string
}

// AppendResult is the outcome of a successful append.
type AppendResult struct {
	// Records are the recorded events, in the order of the request's events.
	Records []Record
	// Duplicate is true when the CommandID had already been recorded and
	// Records are the events recorded the first time.
	Duplicate bool
}

// MaxFeedLimit is the largest Limit a FeedQuery may ask for.
const MaxFeedLimit = 10_000

// FeedQuery selects events from the global feed.
type FeedQuery struct {
	// After is the last position the reader has seen; 0 reads from the start.
	After Position
	// Limit is the largest number of records returned, 1 to MaxFeedLimit.
	Limit int
	// Types, when not empty, keeps only events of these types.
	Types []string
	// StreamPrefix, when not empty, keeps only streams whose id starts with it.
	StreamPrefix string
}

// Validate checks the request's shape without looking at any stream. The
// error wraps ErrInvalid and names what is wrong.
func (r AppendRequest) Validate() error {
	if len(r.Events) == 0 {
		return invalidf("append", "has no events")
	}
	if r.CommandID != "" {
		if err := ValidateCommandID(r.CommandID); err != nil {
			return err
		}
	}
	seen := make(map[StreamID]struct{}, len(r.Expected))
	for _, e := range r.Expected {
		if e.Stream.IsZero() {
			return invalidf("expected version", "has an empty stream id")
		}
		if _, dup := seen[e.Stream]; dup {
			return invalidf("expected version", "stream %q is listed twice", e.Stream)
		}
		seen[e.Stream] = struct{}{}
	}
	for i, ev := range r.Events {
		if ev.Stream.IsZero() {
			return invalidf(fmt.Sprintf("event %d", i), "has an empty stream id")
		}
		if _, ok := seen[ev.Stream]; !ok {
			return invalidf(fmt.Sprintf("event %d", i), "goes to stream %q, which has no expected version", ev.Stream)
		}
		if err := ValidateEventType(ev.Type); err != nil {
			return invalidf(fmt.Sprintf("event %d", i), "%v", err)
		}
		if !json.Valid(ev.Data) {
			return invalidf(fmt.Sprintf("event %d", i), "data of type %q is not valid JSON", ev.Type)
		}
	}
	return nil
}

// ValidateCommandID checks an idempotency key: 1 to MaxCommandIDLength bytes
// of valid UTF-8. The error wraps ErrInvalid.
func ValidateCommandID(id string) error {
	return validateName("command id", id, MaxCommandIDLength, "")
}

// Validate checks the query. The error wraps ErrInvalid.
func (q FeedQuery) Validate() error {
	if q.Limit < 1 || q.Limit > MaxFeedLimit {
		return invalidf("feed limit", "%d is not between 1 and %d", q.Limit, MaxFeedLimit)
	}
	for _, t := range q.Types {
		if err := ValidateEventType(t); err != nil {
			return err
		}
	}
	if q.StreamPrefix != "" {
		if err := validateName("stream prefix", q.StreamPrefix, MaxStreamIDLength, "*?[]"); err != nil {
			return err
		}
	}
	return nil
}
