package bank

import (
	"context"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/executor"
)

// Command is any bank command.
type Command interface {
	executor.Command[State, Event]
	executor.Named
	// Validate checks the input rules; the error wraps ErrInvalidInput.
	Validate() error
}

var codec = NewCodec()

// Execute validates cmd and runs it against store. A Transfer without an ID
// gets a fresh UUIDv7. Errors: *InputError for invalid input, *RuleError
// for a business rule, and the errors of executor.Execute.
func Execute(ctx context.Context, store eventlog.Store, cmd Command, opts executor.Options) (executor.Result, error) {
	if err := cmd.Validate(); err != nil {
		return executor.Result{}, err
	}
	if t, ok := cmd.(Transfer); ok && t.ID == "" {
		t.ID = uuid.Must(uuid.NewV7()).String()
		cmd = t
	}
	return executor.Execute[State](ctx, store, codec, cmd, opts)
}
