package executor

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
)

// The test domain: counter streams receive Incremented events; a Pointed
// event on a stream makes a discovering command read another stream.

type counterEvent interface{ isCounterEvent() }

type incremented struct {
	By int `json:"by"`
}

type pointed struct {
	To string `json:"to"`
}

// unregistered is a counterEvent the codec does not know.
type unregistered struct{}

func (incremented) isCounterEvent()  {}
func (pointed) isCounterEvent()      {}
func (unregistered) isCounterEvent() {}

func newCounterCodec() *Codec[counterEvent] {
	c := NewCodec[counterEvent]()
	Register[incremented](c, "Incremented")
	Register[pointed](c, "Pointed")
	return c
}

type counterState struct {
	Folds    int
	Total    int
	Applied  []string // "stream@version" of every folded event, in order
	Pointers []eventlog.StreamID
}

func applyCounter(s *counterState, e Event[counterEvent]) {
	s.Folds++
	s.Applied = append(s.Applied, fmt.Sprintf("%s@%d", e.Stream, e.Version))
	switch d := e.Data.(type) {
	case incremented:
		s.Total += d.By
	case pointed:
		s.Pointers = append(s.Pointers, eventlog.MustStreamID(d.To))
	}
}

var errLimit = errors.New("counter: limit reached")

// probe is a configurable command for machine tests. It discovers the
// streams named by Pointed events and records every state Handle sees.
type probe struct {
	streams  []eventlog.StreamID
	handle   func(counterState) ([]Emit[counterEvent], error)
	discover func(counterState) []eventlog.StreamID // nil: the Pointers
	seen     *[]counterState
}

func (p probe) Streams() []eventlog.StreamID { return p.streams }

func (p probe) Apply(s *counterState, e Event[counterEvent]) { applyCounter(s, e) }

func (p probe) Handle(s counterState) ([]Emit[counterEvent], error) {
	if p.seen != nil {
		*p.seen = append(*p.seen, s)
	}
	if p.handle == nil {
		return nil, nil
	}
	return p.handle(s)
}

func (p probe) DiscoverStreams(s counterState) []eventlog.StreamID {
	if p.discover != nil {
		return p.discover(s)
	}
	return s.Pointers
}

// namedProbe is a probe with a command name.
type namedProbe struct{ probe }

func (namedProbe) CommandName() string { return "Probe" }

// plainCmd neither names itself nor discovers streams.
type plainCmd struct {
	streams []eventlog.StreamID
	emit    []Emit[counterEvent]
}

func (c plainCmd) Streams() []eventlog.StreamID                      { return c.streams }
func (c plainCmd) Apply(s *counterState, e Event[counterEvent])      { applyCounter(s, e) }
func (c plainCmd) Handle(counterState) ([]Emit[counterEvent], error) { return c.emit, nil }

func sid(s string) eventlog.StreamID { return eventlog.MustStreamID(s) }

func sids(names ...string) []eventlog.StreamID {
	out := make([]eventlog.StreamID, len(names))
	for i, n := range names {
		out[i] = sid(n)
	}
	return out
}

func emitInc(stream string, by int) Emit[counterEvent] {
	return Emit[counterEvent]{Stream: sid(stream), Event: incremented{By: by}}
}

// rec builds the record of event e at version v of stream, with a position
// derived from both so that records are distinguishable.
func rec(t testing.TB, stream string, v eventlog.Version, e counterEvent) eventlog.Record {
	t.Helper()
	typ, data, err := newCounterCodec().Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return rawRec(stream, v, typ, string(data))
}

func rawRec(stream string, v eventlog.Version, typ, data string) eventlog.Record {
	return eventlog.Record{
		Position: eventlog.Position(1000*len(stream) + int(v)),
		Stream:   sid(stream),
		Version:  v,
		Type:     typ,
		Data:     json.RawMessage(data),
	}
}

// incs returns records 1..n of stream, each an Incremented by 1.
func incs(t testing.TB, stream string, n int) []eventlog.Record {
	out := make([]eventlog.Record, n)
	for i := range out {
		out[i] = rec(t, stream, eventlog.Version(i+1), incremented{By: 1})
	}
	return out
}
