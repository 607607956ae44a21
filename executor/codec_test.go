package executor_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/executor"
)

type shape interface{ area() int }

type square struct {
	Side int `json:"side"`
}

type rect struct {
	W int `json:"w"`
	H int `json:"h"`
}

type circle struct {
	R int `json:"r"`
}

type triangle struct{}

func (square) area() int   { return 0 }
func (*rect) area() int    { return 0 }
func (circle) area() int   { return 0 }
func (triangle) area() int { return 0 }

func newShapeCodec() *executor.Codec[shape] {
	c := executor.NewCodec[shape]()
	executor.Register[square](c, "Square")
	executor.Register[*rect](c, "Rect")
	executor.Register[circle](c, "Circle")
	return c
}

func wantPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

func TestRegisterPanics(t *testing.T) {
	wantPanic(t, "a duplicate name", func() { executor.Register[triangle](newShapeCodec(), "Square") })
	wantPanic(t, "a duplicate Go type", func() { executor.Register[square](newShapeCodec(), "Square2") })
	wantPanic(t, "an empty name", func() { executor.Register[triangle](newShapeCodec(), "") })
	wantPanic(t, "a name with a control character", func() { executor.Register[triangle](newShapeCodec(), "Tri\nangle") })
	wantPanic(t, "a name too long", func() {
		executor.Register[triangle](newShapeCodec(), strings.Repeat("t", eventlog.MaxEventTypeLength+1))
	})
	wantPanic(t, "a type that is not the event type", func() { executor.Register[string](newShapeCodec(), "String") })
	wantPanic(t, "a value type whose pointer is the event type", func() { executor.Register[rect](newShapeCodec(), "RectValue") })

	// A failed registration leaves the codec as it was.
	c := newShapeCodec()
	wantPanic(t, "a duplicate name", func() { executor.Register[triangle](c, "Circle") })
	if got, want := c.Types(), []string{"Circle", "Rect", "Square"}; !slices.Equal(got, want) {
		t.Errorf("Types %v, want %v", got, want)
	}
	executor.Register[triangle](c, "Triangle")
}

func TestCodecRoundTrip(t *testing.T) {
	c := newShapeCodec()
	if got, want := c.Types(), []string{"Circle", "Rect", "Square"}; !slices.Equal(got, want) {
		t.Errorf("Types %v, want %v", got, want)
	}
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		event shape
		typ   string
		data  string
	}{
		{square{Side: 3}, "Square", `{"side":3}`},
		{&rect{W: 2, H: 5}, "Rect", `{"w":2,"h":5}`},
		{circle{R: 1}, "Circle", `{"r":1}`},
	} {
		typ, data, err := c.Encode(tt.event)
		if err != nil {
			t.Fatal(err)
		}
		if typ != tt.typ || string(data) != tt.data {
			t.Errorf("Encode(%#v) = %s %s, want %s %s", tt.event, typ, data, tt.typ, tt.data)
		}
		r := eventlog.Record{
			Position: 9, Stream: eventlog.MustStreamID("shapes"), Version: 4, Type: typ, Data: data,
			Metadata: eventlog.Metadata{Command: "Draw", CommandID: "k"}, RecordedAt: at,
		}
		ev, err := c.Decode(r)
		if err != nil {
			t.Fatal(err)
		}
		want := executor.Event[shape]{
			Stream: r.Stream, Version: 4, Position: 9, Type: tt.typ, Data: tt.event,
			Metadata: r.Metadata, RecordedAt: at,
		}
		if !reflect.DeepEqual(ev, want) {
			t.Errorf("Decode: %+v, want %+v", ev, want)
		}
	}
}

func TestCodecEncodeUnregistered(t *testing.T) {
	c := newShapeCodec()
	for _, e := range []shape{triangle{}, &square{Side: 1}, nil} {
		_, _, err := c.Encode(e)
		if !errors.Is(err, executor.ErrUnknownEventType) || err == executor.ErrUnknownEventType {
			t.Errorf("Encode(%#v): %v, want ErrUnknownEventType wrapped", e, err)
		}
	}
}

func TestCodecEncodeError(t *testing.T) {
	c := executor.NewCodec[any]()
	executor.Register[func()](c, "Func")
	_, _, err := c.Encode(func() {})
	var unsupported *json.UnsupportedTypeError
	if !errors.As(err, &unsupported) {
		t.Errorf("Encode(func): %v, want the JSON error", err)
	}
}

func TestCodecDecodeErrors(t *testing.T) {
	c := newShapeCodec()
	stream := eventlog.MustStreamID("shapes")
	for _, tt := range []struct {
		typ, data string
		cause     func(error) bool
	}{
		{"Hexagon", `{}`, func(err error) bool { return errors.Is(err, executor.ErrUnknownEventType) }},
		{"Square", `{"side":`, func(err error) bool { var e *json.SyntaxError; return errors.As(err, &e) }},
		{"Rect", `{"w":"wide"}`, func(err error) bool { var e *json.UnmarshalTypeError; return errors.As(err, &e) }},
	} {
		_, err := c.Decode(eventlog.Record{Stream: stream, Version: 12, Type: tt.typ, Data: json.RawMessage(tt.data)})
		var de *executor.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("Decode %s %s: %v, want a DecodeError", tt.typ, tt.data, err)
		}
		if de.Stream != stream || de.Version != 12 || de.Type != tt.typ {
			t.Errorf("DecodeError %+v", de)
		}
		if !tt.cause(err) {
			t.Errorf("DecodeError %v does not wrap its cause", err)
		}
		for _, part := range []string{fmt.Sprintf("%q", tt.typ), "version 12", `"shapes"`} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("%q does not mention %s", err, part)
			}
		}
	}
}
