package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
)

// recorded keeps the level and message of every record it handles.
type recorded struct{ lines *[]string }

func (r recorded) Enabled(context.Context, slog.Level) bool { return true }
func (r recorded) Handle(_ context.Context, rec slog.Record) error {
	*r.lines = append(*r.lines, rec.Level.String()+" "+rec.Message)
	return nil
}
func (r recorded) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r recorded) WithGroup(string) slog.Handler      { return r }

// A lasting failure is one error line, not one per interval; another
// error during it is logged again; the success that ends it says so once,
// and a second episode logs its error again.
func TestCatchUpFailuresLoggedOncePerEpisode(t *testing.T) {
	var lines []string
	c := catchUpLog{log: slog.New(recorded{&lines})}
	full, stopped := errors.New("database or disk is full"), errors.New("stopped at a failing event")
	for _, err := range []error{nil, full, full, stopped, stopped, nil, nil, full, nil} {
		c.done(err)
	}
	want := []string{
		"ERROR projection catch-up failed",
		"DEBUG projection catch-up failed again",
		"ERROR projection catch-up failed",
		"DEBUG projection catch-up failed again",
		"INFO projection catch-up works again",
		"ERROR projection catch-up failed",
		"INFO projection catch-up works again",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("logged\n%q\nwant\n%q", lines, want)
	}
}
