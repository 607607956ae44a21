package executor

import (
	"errors"
	"fmt"

	"github.com/eventcore-go/eventcore/eventlog"
)

var (
	// ErrInvalidCommand marks a command that broke the executor's rules: no
	// streams, duplicate streams, an event for a stream it did not read,
	// too many streams. Nothing was written. See *InvalidCommandError.
	ErrInvalidCommand = errors.New("executor: invalid command")

	// ErrConcurrency marks a command whose appends kept conflicting until
	// its retries ran out. Nothing was written. See *ConcurrencyError.
	ErrConcurrency = errors.New("executor: concurrency conflict, retries exhausted")
)

// InvalidCommandError says which rule a command broke. It wraps
// ErrInvalidCommand.
type InvalidCommandError struct {
	Reason string
}

func invalidCommand(format string, args ...any) error {
	return &InvalidCommandError{Reason: fmt.Sprintf(format, args...)}
}

func (e *InvalidCommandError) Error() string { return "executor: invalid command: " + e.Reason }

// Unwrap returns ErrInvalidCommand.
func (e *InvalidCommandError) Unwrap() error { return ErrInvalidCommand }

// ConcurrencyError is returned when every attempt conflicted. It matches
// both ErrConcurrency and eventlog.ErrConflict with errors.Is.
type ConcurrencyError struct {
	Attempts int                     // attempts made, the first included
	Last     *eventlog.ConflictError // the last attempt's conflict
}

func (e *ConcurrencyError) Error() string {
	return fmt.Sprintf("executor: concurrency conflict after %d attempts: %v", e.Attempts, e.Last)
}

// Unwrap returns ErrConcurrency and the last conflict.
func (e *ConcurrencyError) Unwrap() []error { return []error{ErrConcurrency, e.Last} }
