package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/internal/progress"
	"github.com/eventcore-go/eventcore/projection"
)

// pollEvery is how often a rebuild's bar reads the checkpoints.
const pollEvery = 200 * time.Millisecond

// newBar is progress.New, or progress.Forced with force.
func newBar(w io.Writer, force bool, desc string, total int64, unit progress.Unit) *progress.Bar {
	if force {
		return progress.Forced(w, desc, total, unit)
	}
	return progress.New(w, desc, total, unit)
}

// newProgress draws the runner's long work on w when it is a terminal (or
// with force): a restore from a replica, in bytes read from the replica;
// the rebuild of the read models after a reload, in positions caught up,
// until the read models reach the head or ctx ends.
func newProgress(ctx context.Context, w io.Writer, force bool) app.Progress {
	if w == nil || (!force && !progress.IsTerminal(w)) {
		return app.Progress{}
	}
	return app.Progress{
		Restore: func(path string, total int64) (io.Writer, func(error)) {
			b := newBar(w, force, "restore "+filepath.Base(path), total, progress.Bytes)
			return b, func(err error) {
				if err == nil {
					b.Done()
				} else {
					_ = b.Close()
				}
			}
		},
		Rebuilt: func(r *projection.Runner, head eventlog.Position) {
			names := r.Names()
			if head == 0 || len(names) == 0 {
				return
			}
			b := newBar(w, force, "rebuild read models", int64(head)*int64(len(names)), progress.Count)
			stop, reached := progress.Watch(ctx, b, pollEvery, catchUpPoll(r, names, head))
			go func() {
				select {
				case <-reached:
				case <-ctx.Done():
					stop(false)
				}
			}()
		},
	}
}

// catchUpPoll reads how far names have caught up on r towards head: the
// sum of their checkpoints (each up to head) out of head for each.
func catchUpPoll(r *projection.Runner, names []string, head eventlog.Position) progress.Poll {
	return func(ctx context.Context) (done, total int64, err error) {
		for _, name := range names {
			cp, err := r.Checkpoint(ctx, name)
			if err != nil {
				return 0, 0, err
			}
			done += int64(min(cp, head))
		}
		return done, int64(head) * int64(len(names)), nil
	}
}

// splitNames splits the -rebuild flag's comma-separated list.
func splitNames(s string) []string {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// rebuild empties each named projection ("all": every one) and replays it
// from the log up to the head, one after the other, before the runner
// serves, drawing each replay's progress on w.
func rebuild(ctx context.Context, a *app.App, names []string, w io.Writer, force bool) error {
	if len(names) == 0 {
		return nil
	}
	return a.Do(ctx, app.Scheduled, func(ctx context.Context) error {
		if len(names) == 1 && names[0] == "all" {
			names = a.Runner.Names()
		}
		for _, name := range names {
			if err := rebuildOne(ctx, a, name, w, force); err != nil {
				return err
			}
		}
		return nil
	})
}

func rebuildOne(ctx context.Context, a *app.App, name string, w io.Writer, force bool) error {
	if err := a.Runner.Rebuild(ctx, name); err != nil {
		if errors.Is(err, projection.ErrUnknownProjection) {
			return fmt.Errorf("no projection %q (the projections: %s)", name, strings.Join(a.Runner.Names(), ", "))
		}
		return err
	}
	head, err := a.Store.Head(ctx)
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", name, err)
	}
	if head == 0 {
		return nil
	}
	b := newBar(w, force, "rebuild "+name, int64(head), progress.Count)
	stop, _ := progress.Watch(ctx, b, pollEvery, catchUpPoll(a.Runner, []string{name}, head))
	rep, err := a.Runner.CatchUp(ctx, name, head)
	if err == nil && rep.Checkpoint < head {
		err = fmt.Errorf("stopped at position %d of %d", rep.Checkpoint, head)
	}
	stop(err == nil)
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", name, err)
	}
	return nil
}
