package app

import (
	"context"
	"io"
	"log/slog"

	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/projection"
)

// Progress shows long local work while it runs: the local runner draws it
// in its terminal. The zero value shows nothing, as on Lambda.
type Progress struct {
	// Restore is told how a restore from a replica advances (see
	// replica.Options.RestoreProgress): at start, and when a reload
	// replaces a file another writer moved.
	Restore func(path string, total int64) (read io.Writer, end func(error))
	// Rebuilt is called when a reload of the event log has emptied the
	// read models, to be rebuilt from the log as it now is: with the
	// runner that catches them up (the scheduled catch-ups do, after the
	// call) and the log's head.
	Rebuilt func(r *projection.Runner, head eventlog.Position)
}

// OpenWithProgress is Open with progress shown through p.
func OpenWithProgress(ctx context.Context, cfg config.Config, reg *handler.Registry, logger *slog.Logger, p Progress) (*App, error) {
	return openAs(ctx, RoleLocal, cfg, reg, logger, p)
}

// rebuilt tells p.Rebuilt, if set, that the read models are rebuilt.
func (a *App) rebuilt(ctx context.Context) {
	if a.progress.Rebuilt == nil {
		return
	}
	head, err := a.Store.Head(ctx)
	if err != nil {
		return // the catch-up reports it
	}
	a.progress.Rebuilt(a.Runner, head)
}
