package eventlog_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/eventcore-go/eventcore/eventlog"
)

func TestNewStreamID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "order-1", true},
		{"one byte", "a", true},
		{"punctuation", "tenant:7/order.1_2+x@y", true},
		{"spaces", "a stream with spaces", true},
		{"non-ASCII", "café/日本語/😀", true},
		{"255 bytes", strings.Repeat("x", 255), true},
		{"255 bytes multibyte", strings.Repeat("é", 127) + "x", true},
		{"empty", "", false},
		{"256 bytes", strings.Repeat("x", 256), false},
		{"256 bytes multibyte", strings.Repeat("é", 128), false},
		{"invalid UTF-8", "order-\xff", false},
		{"truncated UTF-8", "caf\xc3", false},
		{"NUL", "a\x00b", false},
		{"newline", "a\nb", false},
		{"tab", "\t", false},
		{"DEL", "a\x7f", false},
		{"C1 control", "a\u0085b", false},
		{"star", "order-*", false},
		{"question mark", "order-?", false},
		{"open bracket", "order-[1", false},
		{"close bracket", "order-1]", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := eventlog.NewStreamID(tc.in)
			if !tc.ok {
				requireInvalid(t, err)
				if !id.IsZero() {
					t.Errorf("rejected id is not zero: %q", id)
				}
				var u eventlog.StreamID
				if err := u.UnmarshalText([]byte(tc.in)); !errors.Is(err, eventlog.ErrInvalid) {
					t.Errorf("UnmarshalText(%q) = %v, want ErrInvalid", tc.in, err)
				}
				defer func() {
					if recover() == nil {
						t.Errorf("MustStreamID(%q) did not panic", tc.in)
					}
				}()
				eventlog.MustStreamID(tc.in)
				return
			}
			if err != nil {
				t.Fatalf("NewStreamID(%q): %v", tc.in, err)
			}
			requireRoundTrip(t, tc.in, id)
			if eventlog.MustStreamID(tc.in) != id {
				t.Errorf("MustStreamID(%q) differs from NewStreamID", tc.in)
			}
		})
	}
}

func TestStreamIDZeroValue(t *testing.T) {
	var id eventlog.StreamID
	if !id.IsZero() || id.String() != "" {
		t.Errorf("zero StreamID: IsZero %v, String %q", id.IsZero(), id.String())
	}
	// A failed UnmarshalText leaves the target unchanged.
	id = eventlog.MustStreamID("keep")
	if err := id.UnmarshalText([]byte("bad*")); err == nil || id.String() != "keep" {
		t.Errorf("UnmarshalText of an invalid id: %v, id now %q", err, id)
	}
	// JSON decoding goes through UnmarshalText.
	var v struct{ Stream eventlog.StreamID }
	if err := json.Unmarshal([]byte(`{"Stream":"a?"}`), &v); !errors.Is(err, eventlog.ErrInvalid) {
		t.Errorf("json.Unmarshal of an invalid id: %v, want ErrInvalid", err)
	}
}

func TestValidateEventType(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "OrderPlaced", true},
		{"dotted", "orders.v2.placed", true},
		{"pattern characters are fine in types", "a*b?[c]", true},
		{"non-ASCII", "Bestellung/aufgegeben/ü", true},
		{"255 bytes", strings.Repeat("t", 255), true},
		{"empty", "", false},
		{"256 bytes", strings.Repeat("t", 256), false},
		{"invalid UTF-8", "Order\xfe", false},
		{"control character", "Order\rPlaced", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := eventlog.ValidateEventType(tc.in)
			if tc.ok {
				if err != nil {
					t.Errorf("ValidateEventType(%q): %v", tc.in, err)
				}
				return
			}
			requireInvalid(t, err)
		})
	}
}

func TestValidateCommandID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"uuid", "0196a3f0-7c1e-7d2a-9b4e-1f2a3b4c5d6e", true},
		{"pattern characters", "cmd:*?[]", true},
		{"non-ASCII", "bestätigen-1", true},
		{"255 bytes", strings.Repeat("c", eventlog.MaxCommandIDLength), true},
		{"empty", "", false},
		{"256 bytes", strings.Repeat("c", eventlog.MaxCommandIDLength+1), false},
		{"invalid UTF-8", "cmd\xff", false},
		{"control character", "cmd\x00", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := eventlog.ValidateCommandID(tc.in)
			if tc.ok {
				if err != nil {
					t.Errorf("ValidateCommandID(%q): %v", tc.in, err)
				}
				return
			}
			requireInvalid(t, err)
		})
	}
}

func TestAppendRequestValidate(t *testing.T) {
	a, b := eventlog.MustStreamID("a"), eventlog.MustStreamID("b")
	ev := func(st eventlog.StreamID, typ, data string) eventlog.Event {
		return eventlog.Event{Stream: st, Type: typ, Data: json.RawMessage(data)}
	}
	exp := func(streams ...eventlog.StreamID) []eventlog.ExpectedVersion {
		var out []eventlog.ExpectedVersion
		for i, st := range streams {
			out = append(out, eventlog.ExpectedVersion{Stream: st, Version: eventlog.Version(i)})
		}
		return out
	}
	tests := []struct {
		name string
		req  eventlog.AppendRequest
		what string // the InvalidError's What; "" when the request is valid
	}{
		{"one event", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`)}}, ""},
		{"several streams and a read-only one", eventlog.AppendRequest{
			Expected: exp(a, b, eventlog.MustStreamID("c")),
			Events:   []eventlog.Event{ev(b, "E", `1`), ev(a, "E", `"s"`), ev(b, "E", `[1, {"x": null}]`)},
		}, ""},
		{"longest command id", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`)}, CommandID: strings.Repeat("c", 255)}, ""},
		{"no events", eventlog.AppendRequest{Expected: exp(a)}, "append"},
		{"nothing at all", eventlog.AppendRequest{}, "append"},
		{"command id too long", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`)}, CommandID: strings.Repeat("c", 256)}, "command id"},
		{"command id not UTF-8", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`)}, CommandID: "\xff"}, "command id"},
		{"command id with a control character", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`)}, CommandID: "c\n"}, "command id"},
		{"zero expected stream", eventlog.AppendRequest{Expected: exp(a, eventlog.StreamID{}), Events: []eventlog.Event{ev(a, "E", `{}`)}}, "expected version"},
		{"expected stream twice", eventlog.AppendRequest{Expected: exp(a, b, a), Events: []eventlog.Event{ev(a, "E", `{}`)}}, "expected version"},
		{"zero event stream", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`), ev(eventlog.StreamID{}, "E", `{}`)}}, "event 1"},
		{"event stream not expected", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(b, "E", `{}`)}}, "event 0"},
		{"no type", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "", `{}`)}}, "event 0"},
		{"bad type", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{}`), ev(a, "E\x00", `{}`)}}, "event 1"},
		{"no data", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", ``)}}, "event 0"},
		{"data not JSON", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{"a":}`)}}, "event 0"},
		{"data with trailing garbage", eventlog.AppendRequest{Expected: exp(a), Events: []eventlog.Event{ev(a, "E", `{} {}`)}}, "event 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Validate()
			if tc.what == "" {
				if err != nil {
					t.Errorf("Validate: %v", err)
				}
				return
			}
			requireInvalid(t, err)
			var ie *eventlog.InvalidError
			if errors.As(err, &ie) && ie.What != tc.what {
				t.Errorf("InvalidError.What = %q, want %q (%v)", ie.What, tc.what, err)
			}
		})
	}
}

func TestFeedQueryValidate(t *testing.T) {
	tests := []struct {
		name string
		q    eventlog.FeedQuery
		ok   bool
	}{
		{"limit 1", eventlog.FeedQuery{Limit: 1}, true},
		{"max limit", eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit}, true},
		{"everything", eventlog.FeedQuery{After: 10, Limit: 5, Types: []string{"A", "B"}, StreamPrefix: "order-"}, true},
		{"prefix of 255 bytes", eventlog.FeedQuery{Limit: 1, StreamPrefix: strings.Repeat("p", 255)}, true},
		{"limit 0", eventlog.FeedQuery{}, false},
		{"negative limit", eventlog.FeedQuery{Limit: -5}, false},
		{"limit too large", eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit + 1}, false},
		{"empty type", eventlog.FeedQuery{Limit: 1, Types: []string{""}}, false},
		{"bad second type", eventlog.FeedQuery{Limit: 1, Types: []string{"A", "B\n"}}, false},
		{"prefix with a pattern character", eventlog.FeedQuery{Limit: 1, StreamPrefix: "order-["}, false},
		{"prefix with a control character", eventlog.FeedQuery{Limit: 1, StreamPrefix: "order\x01"}, false},
		{"prefix not UTF-8", eventlog.FeedQuery{Limit: 1, StreamPrefix: "\xc3"}, false},
		{"prefix too long", eventlog.FeedQuery{Limit: 1, StreamPrefix: strings.Repeat("p", 256)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.q.Validate()
			if tc.ok {
				if err != nil {
					t.Errorf("Validate(%+v): %v", tc.q, err)
				}
				return
			}
			requireInvalid(t, err)
		})
	}
}

func TestErrors(t *testing.T) {
	a, b := eventlog.MustStreamID("a"), eventlog.MustStreamID("b")
	conflict := &eventlog.ConflictError{Conflicts: []eventlog.StreamConflict{
		{Stream: a, Expected: 1, Actual: 2},
		{Stream: b, Expected: 0, Actual: 3},
	}}
	invalid := &eventlog.InvalidError{What: "feed limit", Reason: "0 is not between 1 and 10000"}

	wrappedConflict := fmt.Errorf("backend: append: %w", conflict)
	if !errors.Is(wrappedConflict, eventlog.ErrConflict) || errors.Is(wrappedConflict, eventlog.ErrInvalid) || errors.Is(wrappedConflict, eventlog.ErrClosed) {
		t.Errorf("wrapped ConflictError: errors.Is gives the wrong sentinel")
	}
	var ce *eventlog.ConflictError
	if !errors.As(wrappedConflict, &ce) || ce != conflict {
		t.Errorf("errors.As does not find the ConflictError")
	}
	msg := conflict.Error()
	for _, want := range []string{`"a"`, `"b"`, "expected version 1, actual 2", "expected version 0, actual 3"} {
		if !strings.Contains(msg, want) {
			t.Errorf("ConflictError %q does not contain %q", msg, want)
		}
	}

	wrappedInvalid := fmt.Errorf("backend: read feed: %w", invalid)
	if !errors.Is(wrappedInvalid, eventlog.ErrInvalid) || errors.Is(wrappedInvalid, eventlog.ErrConflict) {
		t.Errorf("wrapped InvalidError: errors.Is gives the wrong sentinel")
	}
	var ie *eventlog.InvalidError
	if !errors.As(wrappedInvalid, &ie) || ie != invalid {
		t.Errorf("errors.As does not find the InvalidError")
	}
	if got := invalid.Error(); !strings.Contains(got, "feed limit") || !strings.Contains(got, "not between") {
		t.Errorf("InvalidError message %q", got)
	}
	if errors.As(wrappedInvalid, &ce) {
		t.Errorf("errors.As finds a ConflictError in an InvalidError")
	}

	// Errors returned by the package are *InvalidError.
	_, err := eventlog.NewStreamID("")
	if !errors.As(err, &ie) || ie.What != "stream id" {
		t.Errorf("NewStreamID error %v is not an *InvalidError about the stream id", err)
	}
}

func FuzzNewStreamID(f *testing.F) {
	for _, s := range []string{
		"", "a", "order-1", "café", "日本語", "a*", "?", "[", "]", "a\x00", "\x7f", "\u0085", "\xff",
		"caf\xc3", strings.Repeat("x", 255), strings.Repeat("x", 256), strings.Repeat("é", 128), "\u2028", "\ufeff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := eventlog.NewStreamID(s)
		if !isValidStreamID(s) {
			if err == nil {
				t.Fatalf("NewStreamID(%q) accepted an invalid id", s)
			}
			requireInvalid(t, err)
			if !id.IsZero() {
				t.Errorf("NewStreamID(%q) returned a non-zero id with an error", s)
			}
			var u eventlog.StreamID
			if err := u.UnmarshalText([]byte(s)); !errors.Is(err, eventlog.ErrInvalid) || !u.IsZero() {
				t.Errorf("UnmarshalText(%q) = %v, id %q", s, err, u)
			}
			return
		}
		if err != nil {
			t.Fatalf("NewStreamID(%q) rejected a valid id: %v", s, err)
		}
		requireRoundTrip(t, s, id)
	})
}

// isValidStreamID is the stream id rule: 1 to 255 bytes of valid UTF-8
// without control characters or any of * ? [ ].
func isValidStreamID(s string) bool {
	if len(s) < 1 || len(s) > eventlog.MaxStreamIDLength || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || strings.ContainsRune("*?[]", r) {
			return false
		}
	}
	return true
}

// requireRoundTrip checks that id, made from s, gives s back through String,
// MarshalText, UnmarshalText and JSON.
func requireRoundTrip(t *testing.T, s string, id eventlog.StreamID) {
	t.Helper()
	if id.IsZero() || id.String() != s {
		t.Fatalf("NewStreamID(%q): String %q, IsZero %v", s, id.String(), id.IsZero())
	}
	text, err := id.MarshalText()
	if err != nil || string(text) != s {
		t.Fatalf("MarshalText of %q = %q, %v", s, text, err)
	}
	var back eventlog.StreamID
	if err := back.UnmarshalText(text); err != nil || back != id {
		t.Fatalf("UnmarshalText(%q) = %q, %v", text, back, err)
	}
	js, err := json.Marshal(map[string]eventlog.StreamID{"s": id})
	if err != nil {
		t.Fatalf("json.Marshal of %q: %v", s, err)
	}
	var fromJSON map[string]eventlog.StreamID
	if err := json.Unmarshal(js, &fromJSON); err != nil || fromJSON["s"] != id {
		t.Fatalf("JSON round trip of %q: %s gives %q, %v", s, js, fromJSON["s"], err)
	}
}

func requireInvalid(t *testing.T, err error) {
	t.Helper()
	var ie *eventlog.InvalidError
	if !errors.Is(err, eventlog.ErrInvalid) || !errors.As(err, &ie) {
		t.Errorf("error %v, want an *InvalidError wrapping ErrInvalid", err)
	}
}
