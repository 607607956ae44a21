// Package executor runs multi-stream commands against an eventlog.Store.
//
// A command declares the streams it reads, folds their events into a state
// of its own type with a pure Apply, and decides new events with a pure
// Handle. Execute reads every stream, folds, handles and appends all new
// events in one atomic append that expects the version it read of every
// stream it read, written or not. A version conflict means the decision was
// made on stale state: Execute reads again and retries, with backoff. A
// command may discover more streams from its folded state; they join the
// same consistency check.
//
// An attempt reads top to bottom (execute.go): read, fold, decide, append,
// retry. What it takes from and gives back to the cache and snapshots is in
// warm.go. Both are tested through a recording fake store.
package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync/atomic"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Command is a multi-stream command with state S over domain events E.
// Apply and Handle must be pure: no I/O, no clock, no randomness. They may
// be called several times for one Execute (once per attempt).
type Command[S, E any] interface {
	// Streams declares the streams the command reads before any discovery:
	// at least one, no duplicates.
	Streams() []eventlog.StreamID
	// Apply folds one event into state. It must not change the event: the
	// cache shares decoded events between commands.
	Apply(state *S, event Event[E])
	// Handle decides the new events from the folded state, or returns a
	// business-rule error, which Execute returns as it is and never retries.
	Handle(state S) ([]Emit[E], error)
}

// Cloner is implemented by a command state that can copy itself. A warm
// command whose state implements it starts from a clone of the cached
// state instead of decoding it. Clone must return a value that shares
// nothing the command's Apply may change (copy maps and slices): the
// cached state is shared by every command that hits it, and must never
// change.
type Cloner[S any] interface {
	Clone() S
}

// StreamDiscoverer is implemented by commands that find more streams in
// their state, such as a transfer that finds the fee account on the source
// account. After each stream is folded, Execute asks for more streams;
// streams not yet read are read next, breadth first, each once per attempt,
// and join the consistency check of the append.
type StreamDiscoverer[S any] interface {
	DiscoverStreams(state S) []eventlog.StreamID
}

// Named is implemented by commands that name themselves; the name goes into
// every event's metadata. Without it, Options.Metadata.Command is used.
type Named interface {
	CommandName() string
}

// Event is a recorded event, decoded into the domain's event type.
type Event[E any] struct {
	Stream     eventlog.StreamID
	Version    eventlog.Version
	Position   eventlog.Position
	Type       string
	Data       E
	Metadata   eventlog.Metadata
	RecordedAt time.Time
}

// Emit is a new event a command decided, and the stream it goes to. The
// stream must be one the command read.
type Emit[E any] struct {
	Stream eventlog.StreamID
	Event  E
}

// ErrUnknownEventType is wrapped by a DecodeError for a type the codec does
// not know, and returned by Encode for a value of an unregistered type.
var ErrUnknownEventType = errors.New("executor: unknown event type")

// DecodeError says which recorded event could not be decoded.
type DecodeError struct {
	Stream  eventlog.StreamID
	Version eventlog.Version
	Type    string
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("executor: decode event %q at version %d of stream %q: %v", e.Type, e.Version, e.Stream, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Codec maps event type names to Go types, encoding and decoding as JSON.
// Register every event type before use; a Codec is then safe for concurrent
// use (registration is not).
type Codec[E any] struct {
	decoders map[string]func([]byte) (E, error)
	names    map[reflect.Type]string
	// cachePrefix starts the cache keys of the streams' events this codec
	// decoded: another codec may decode the same records differently.
	cachePrefix string
}

var codecs atomic.Uint64

// NewCodec returns an empty codec for domain event type E (usually an
// interface that every event type implements).
func NewCodec[E any]() *Codec[E] {
	return &Codec[E]{
		decoders:    map[string]func([]byte) (E, error){},
		names:       map[reflect.Type]string{},
		cachePrefix: fmt.Sprintf("\x1estream events\x1f%s\x1f%d\x1f", reflect.TypeFor[E](), codecs.Add(1)),
	}
}

// streamKey names the cache entry of stream s's events decoded by c.
func (c *Codec[E]) streamKey(s eventlog.StreamID) string { return c.cachePrefix + s.String() }

// Register maps the type name to the Go type T, which must be assignable to
// E. It panics on a duplicate name or type, an invalid name, or a T that is
// not an E: these are programming errors found at start-up.
func Register[T, E any](c *Codec[E], name string) {
	if err := eventlog.ValidateEventType(name); err != nil {
		panic(err)
	}
	var zero T
	if _, ok := any(zero).(E); !ok {
		panic(fmt.Sprintf("executor: %T is not a %s", zero, reflect.TypeFor[E]()))
	}
	t := reflect.TypeFor[T]()
	if _, dup := c.decoders[name]; dup {
		panic(fmt.Sprintf("executor: event type %q registered twice", name))
	}
	if _, dup := c.names[t]; dup {
		panic(fmt.Sprintf("executor: Go type %s registered twice", t))
	}
	c.names[t] = name
	c.decoders[name] = func(data []byte) (E, error) {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			var zero E
			return zero, err
		}
		return any(v).(E), nil
	}
}

// Types returns the registered type names, sorted.
func (c *Codec[E]) Types() []string {
	out := make([]string, 0, len(c.decoders))
	for name := range c.decoders {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Encode returns the type name and JSON data of e. Errors: ErrUnknownEventType
// for an unregistered Go type, or the JSON encoder's error.
func (c *Codec[E]) Encode(e E) (string, json.RawMessage, error) {
	name, ok := c.names[reflect.TypeOf(e)]
	if !ok {
		return "", nil, fmt.Errorf("%w: Go type %T is not registered", ErrUnknownEventType, e)
	}
	data, err := json.Marshal(e)
	if err != nil {
		return "", nil, fmt.Errorf("executor: encode %s: %w", name, err)
	}
	return name, data, nil
}

// Decode turns a recorded event into an Event[E]. Errors: a *DecodeError
// naming the stream, version and type, wrapping ErrUnknownEventType for an
// unknown type or the JSON error for undecodable data.
func (c *Codec[E]) Decode(r eventlog.Record) (Event[E], error) {
	ev := Event[E]{Stream: r.Stream, Version: r.Version, Position: r.Position, Type: r.Type, Metadata: r.Metadata, RecordedAt: r.RecordedAt}
	decode, ok := c.decoders[r.Type]
	if !ok {
		return ev, &DecodeError{Stream: r.Stream, Version: r.Version, Type: r.Type, Err: ErrUnknownEventType}
	}
	data, err := decode(r.Data)
	if err != nil {
		return ev, &DecodeError{Stream: r.Stream, Version: r.Version, Type: r.Type, Err: err}
	}
	ev.Data = data
	return ev, nil
}
