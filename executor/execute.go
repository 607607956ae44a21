package executor

import (
	"context"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// Execute runs cmd against store: it reads every declared and discovered
// stream, folds them with cmd.Apply, decides with cmd.Handle and appends the
// new events atomically, expecting the version it read of every stream it
// read. On a version conflict it reads again and retries as opts.Retry says.
//
// S usually needs to be given (Execute[TransferState](...)); E is inferred
// from codec.
//
// Errors, all with nothing written:
//   - the error Handle returned, as it is (business rules; never retried);
//   - ErrInvalidCommand (*InvalidCommandError) for a command that breaks the
//     rules: no or duplicate streams, an event for a stream it did not read;
//   - *DecodeError for a recorded event the codec cannot decode;
//   - ErrConcurrency (*ConcurrencyError) when the retries ran out;
//   - eventlog.ErrInvalid for an invalid CommandID or event;
//   - store failures and ctx's error, wrapped.
//
// Execute is safe for concurrent use; cmd must not be changed while it runs.
func Execute[S, E any](ctx context.Context, store eventlog.Store, codec *Codec[E], cmd Command[S, E], opts Options) (Result, error) {
	if opts.Admission != nil {
		began := time.Now()
		release, err := opts.Admission.Admit(ctx, cmd.Streams())
		if err != nil {
			return Result{}, err
		}
		defer release()
		if opts.OnAdmit != nil {
			opts.OnAdmit(time.Since(began))
		}
	}
	snapshots, canSnapshot := store.(eventlog.SnapshotStore)
	m := newMachine(codec, cmd, opts, canSnapshot)
	eff := m.start()
	for {
		switch eff.kind {
		case effectLookup:
			records, found, err := store.LookupCommand(ctx, m.opts.CommandID)
			eff = m.lookedUp(records, found, err)
		case effectRead:
			eff = readAndFold(ctx, store, m, eff)
		case effectAppend:
			res, err := store.Append(ctx, eff.request)
			eff = m.appended(res, err)
		case effectSleep:
			if err := sleep(ctx, eff.delay); err != nil {
				return Result{Attempts: m.attempt}, err
			}
			eff = m.slept()
		case effectProbe:
			versions, err := store.StreamVersions(ctx, eff.probe)
			eff = m.probed(versions, err)
		case effectLoadSnapshot:
			snap, found, err := snapshots.LoadSnapshot(ctx, eff.key)
			eff = m.snapshotLoaded(snap, found, err)
		case effectSaveSnapshot:
			eff = m.snapshotSaved(snapshots.SaveSnapshot(ctx, eff.snap))
		case effectDone:
			return eff.result, eff.err
		}
	}
}

func readAndFold[S, E any](ctx context.Context, store eventlog.Store, m *machine[S, E], eff effect) effect {
	for r, err := range store.ReadStream(ctx, eff.stream, eff.after) {
		if err != nil {
			return m.failed(err)
		}
		if err := m.fold(r); err != nil {
			return m.failed(err)
		}
	}
	return m.streamDone()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
