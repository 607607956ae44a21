package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/eventcore-go/eventcore/cache"
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
	return newExecution(store, codec, cmd, opts).run(ctx)
}

// execution is one Execute call: what its attempts share.
type execution[S, E any] struct {
	store eventlog.Store
	codec *Codec[E]
	cmd   Command[S, E]
	opts  Options
	sleep func(context.Context, time.Duration) error

	// snapshots is the store's snapshot capability, nil when the command
	// or the store cannot keep snapshots; key names the command's state in
	// the cache and among snapshots.
	snapshots eventlog.SnapshotStore
	key       string

	attempts int
	folded   int // events folded by every attempt

	snapshotTried bool
	snapshot      *cache.Entry // the snapshot the first attempt found, for the retries
}

func newExecution[S, E any](store eventlog.Store, codec *Codec[E], cmd Command[S, E], opts Options) *execution[S, E] {
	x := &execution[S, E]{store: store, codec: codec, cmd: cmd, opts: opts.withDefaults(cmd), sleep: sleep}
	if snapshots, ok := store.(eventlog.SnapshotStore); ok && x.opts.SnapshotThreshold > 0 {
		if _, ok := cmd.(Snapshotter); ok {
			x.snapshots = snapshots
		}
	}
	if x.opts.Cache != nil || x.snapshots != nil {
		x.key = cacheKey[S](x.opts.Metadata.Command, cmd)
	}
	return x
}

// run is Execute: check, admit, look the key up, then attempt until an
// append succeeds, Handle refuses, or the retries run out.
func (x *execution[S, E]) run(ctx context.Context) (Result, error) {
	if err := x.validate(); err != nil {
		return Result{}, err
	}
	if x.opts.Admission != nil {
		began := time.Now()
		release, err := x.opts.Admission.Admit(ctx, x.cmd.Streams())
		if err != nil {
			return Result{}, err
		}
		defer release()
		if x.opts.OnAdmit != nil {
			x.opts.OnAdmit(time.Since(began))
		}
	}
	if x.opts.CommandID != "" {
		records, found, err := x.store.LookupCommand(ctx, x.opts.CommandID)
		if err != nil {
			return Result{}, fmt.Errorf("executor: look up command id: %w", err)
		}
		if found {
			return Result{Events: records, Duplicate: true}, nil
		}
	}
	for {
		x.attempts++
		a, err := x.read(ctx)
		if err != nil {
			return Result{Attempts: x.attempts}, err
		}
		emits, err := x.cmd.Handle(a.state)
		if err != nil {
			return x.refused(ctx, x.result(a), err)
		}
		if len(emits) == 0 {
			// The state is exactly the state at the versions read: keep it.
			x.decideKeep(a)
			return x.remember(ctx, a, x.result(a)), nil
		}
		req, err := x.request(a, emits)
		if err != nil {
			return Result{Attempts: x.attempts}, err
		}
		res, err := x.store.Append(ctx, req)
		if err == nil {
			r := x.result(a)
			r.Events, r.Duplicate = res.Records, res.Duplicate
			if res.Duplicate {
				r.Attempts = 0 // an earlier execution with the same key answered
				return r, nil
			}
			if x.writeThrough(a, res.Records) {
				r = x.remember(ctx, a, r)
			}
			return r, nil
		}
		var conflict *eventlog.ConflictError
		if !errors.As(err, &conflict) {
			return x.result(a), fmt.Errorf("executor: append: %w", err)
		}
		delay, retry := x.opts.Retry.Delay(x.attempts)
		if !retry {
			return x.refused(ctx, x.result(a), &ConcurrencyError{Attempts: x.attempts, Last: conflict})
		}
		if x.opts.OnRetry != nil {
			x.opts.OnRetry(RetryInfo{Attempt: x.attempts, Delay: delay, Conflict: conflict})
		}
		if err := x.sleep(ctx, delay); err != nil {
			return Result{Attempts: x.attempts}, err
		}
	}
}

// validate checks the declared streams and the idempotency key.
func (x *execution[S, E]) validate() error {
	declared := x.cmd.Streams()
	if len(declared) == 0 {
		return invalidCommand("declares no streams")
	}
	if len(declared) > x.opts.MaxStreams {
		return invalidCommand("declares %d streams, more than %d", len(declared), x.opts.MaxStreams)
	}
	seen := make(map[eventlog.StreamID]bool, len(declared))
	for _, s := range declared {
		if s.IsZero() {
			return invalidCommand("declares an empty stream id")
		}
		if seen[s] {
			return invalidCommand("declares stream %q twice", s)
		}
		seen[s] = true
	}
	if x.opts.CommandID != "" {
		return eventlog.ValidateCommandID(x.opts.CommandID)
	}
	return nil
}

// refused ends the execution with a business-rule or concurrency error.
// With an idempotency key the key is looked up once more first: an
// execution with the same key may have committed between the first look-up
// and this attempt's reads, so that Handle refused its own effects; its
// result answers instead.
func (x *execution[S, E]) refused(ctx context.Context, r Result, err error) (Result, error) {
	if x.opts.CommandID != "" {
		if records, found, lerr := x.store.LookupCommand(ctx, x.opts.CommandID); lerr == nil && found {
			return Result{Events: records, Duplicate: true}, nil
		}
	}
	return r, err
}

// result is the outcome so far of attempt a.
func (x *execution[S, E]) result(a *attempt[S]) Result {
	return Result{Attempts: x.attempts, Replayed: a.replayed, Recalled: a.recalled, Folded: x.folded, Cache: a.outcome}
}

// attempt is what one attempt has read: the state, and the version folded
// of every stream in it.
type attempt[S any] struct {
	state    S
	versions map[eventlog.StreamID]eventlog.Version
	order    []eventlog.StreamID // the streams read, in order
	queue    []eventlog.StreamID // streams to read from their first event
	outcome  CacheOutcome

	replayed int // events read from the store and folded
	recalled int // events folded from cached stream events

	// Versions the store answered this attempt, so that a stream probed
	// once is not probed again.
	versionsProbed map[eventlog.StreamID]eventlog.Version

	// What is kept once the attempt succeeds (see decideKeep).
	keepState, keepSnapshot bool
}

func (a *attempt[S]) probed(s eventlog.StreamID, v eventlog.Version) {
	if a.versionsProbed == nil {
		a.versionsProbed = make(map[eventlog.StreamID]eventlog.Version, 4)
	}
	a.versionsProbed[s] = v
}

func (a *attempt[S]) probedVersion(s eventlog.StreamID) (eventlog.Version, bool) {
	v, ok := a.versionsProbed[s]
	return v, ok
}

func newAttempt[S any](declared []eventlog.StreamID) *attempt[S] {
	a := &attempt[S]{versions: make(map[eventlog.StreamID]eventlog.Version, len(declared)+2)}
	a.queue = append(a.queue, declared...)
	return a
}

// read gives the attempt its state: from the cache or a snapshot when one
// is usable (reading only what moved since), else from every stream's
// first event.
func (x *execution[S, E]) read(ctx context.Context) (*attempt[S], error) {
	if e, outcome, ok := x.warmEntry(ctx); ok {
		a, err := x.resume(ctx, e, outcome)
		if a != nil || err != nil {
			return a, err
		}
	}
	a := newAttempt[S](x.cmd.Streams())
	if x.opts.Cache != nil {
		a.outcome = CacheMiss
		if err := x.probeCachedStreams(ctx, a, x.cmd.Streams()); err != nil {
			return a, err
		}
	}
	return a, x.readQueued(ctx, a)
}

// readQueued reads the queued streams from their first event, breadth
// first, each once, asking the command for more after each.
func (x *execution[S, E]) readQueued(ctx context.Context, a *attempt[S]) error {
	for len(a.queue) > 0 {
		s := a.queue[0]
		a.queue = a.queue[1:]
		if _, read := a.versions[s]; read {
			continue
		}
		a.versions[s] = 0
		a.order = append(a.order, s)
		if err := x.readStream(ctx, a, s, 0); err != nil {
			return err
		}
		if err := x.discover(a); err != nil {
			return err
		}
	}
	return nil
}

// readStream folds the events of s after version after, from the cache's
// stream events as far as they are current and from the store beyond.
func (x *execution[S, E]) readStream(ctx context.Context, a *attempt[S], s eventlog.StreamID, after eventlog.Version) error {
	recalled, err := x.recall(ctx, a, s, after)
	if err != nil {
		return err
	}
	if v := a.versions[s]; v > after {
		after = v
		if recalled.current {
			return nil
		}
	}
	keep := recalled.collect(after)
	for r, err := range x.store.ReadStream(ctx, s, after) {
		if err != nil {
			return x.readFailed(s, err)
		}
		ev, err := x.codec.Decode(r)
		if err != nil {
			return err
		}
		x.cmd.Apply(&a.state, ev)
		a.versions[s] = r.Version
		a.replayed++
		x.folded++
		keep.add(ev, r)
	}
	x.keepStream(s, recalled, keep)
	return nil
}

func (x *execution[S, E]) readFailed(s eventlog.StreamID, err error) error {
	var decode *DecodeError
	if errors.As(err, &decode) {
		return err
	}
	return fmt.Errorf("executor: read stream %q: %w", s, err)
}

// discover queues the streams the command finds in its state that are
// neither read nor queued yet.
func (x *execution[S, E]) discover(a *attempt[S]) error {
	d, ok := x.cmd.(StreamDiscoverer[S])
	if !ok {
		return nil
	}
	for _, s := range d.DiscoverStreams(a.state) {
		if s.IsZero() {
			return invalidCommand("discovered an empty stream id")
		}
		if _, read := a.versions[s]; read || slices.Contains(a.queue, s) {
			continue
		}
		a.queue = append(a.queue, s)
		if len(a.versions)+len(a.queue) > x.opts.MaxStreams {
			return invalidCommand("reads more than %d streams", x.opts.MaxStreams)
		}
	}
	return nil
}

// request turns Handle's events into one append that expects every stream
// at the version read.
func (x *execution[S, E]) request(a *attempt[S], emits []Emit[E]) (eventlog.AppendRequest, error) {
	req := eventlog.AppendRequest{CommandID: x.opts.CommandID, Expected: a.expected()}
	req.Events = make([]eventlog.Event, len(emits))
	for i, e := range emits {
		if _, ok := a.versions[e.Stream]; !ok {
			return req, invalidCommand("event %d goes to stream %q, which the command did not read", i, e.Stream)
		}
		typ, data, err := x.codec.Encode(e.Event)
		if err != nil {
			return req, err
		}
		req.Events[i] = eventlog.Event{Stream: e.Stream, Type: typ, Data: data, Metadata: x.opts.Metadata}
	}
	return req, nil
}

// expected lists every stream read with the version folded, in read order.
func (a *attempt[S]) expected() []eventlog.ExpectedVersion {
	ev := make([]eventlog.ExpectedVersion, len(a.order))
	for i, s := range a.order {
		ev[i] = eventlog.ExpectedVersion{Stream: s, Version: a.versions[s]}
	}
	return ev
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
