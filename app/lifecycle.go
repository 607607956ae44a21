package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/internal/turns"
	"github.com/eventcore-go/eventcore/replica"
)

// Work is what a unit of work does, which decides what follows it.
type Work int

const (
	// Request is a command or a read: an HTTP request or a direct
	// invocation.
	Request Work = iota
	// Scheduled is the periodic round: the projections caught up (the
	// project function's schedule, the local runner's timer), then the
	// replicas' maintenance when it is due.
	Scheduled
	// Maintenance is Litestream's periodic work alone (the execute
	// function's schedule).
	Maintenance
)

// MaintenanceInterval is how often a Scheduled unit runs the replicas'
// maintenance (compaction, snapshots, retention).
const MaintenanceInterval = 30 * time.Second

// catchUpTimeout bounds one catch-up of the project role's copy of the
// log from the replica (a full restore included).
const catchUpTimeout = time.Minute

// lifecycle is the state the units of work of one instance share.
type lifecycle struct {
	// swap is held for reading by every unit of work, and for writing
	// while a replica reloads (which replaces the store and the handlers)
	// and from Shutdown on: a reload lets the units in flight finish and
	// holds new ones back, so that none sees a half-swapped instance.
	swap sync.RWMutex

	// pmu guards pending: the parts whose reload has not completed, so
	// that the next unit tries again.
	pmu     sync.Mutex
	pending map[*replica.Writer]bool

	// catchUps shares the follower's catch-ups among concurrent units:
	// each sees what the replica held when it began.
	catchUps turns.Group

	mmu        sync.Mutex
	maintained time.Time // last maintenance of a Scheduled unit

	shutdown sync.Once
	shutErr  error
	stopping atomic.Bool // Shutdown has begun
}

// Do runs work as one unit of this instance's life: a Lambda invocation
// (any number at once in one execution environment), a request of the
// local runner, or one of its projection rounds. Every caller shares these
// steps:
//
//  1. The project role's copy of the log catches up from the replica
//     (concurrent units share catch-ups); a writer whose replica another
//     writer moved reloads it, letting the units in flight finish and
//     holding new ones back meanwhile. Failures are logged: the handlers
//     answer for them (503s, or reads of the copy as it is).
//  2. work runs; the instance stays as it is (no reload) until it returns.
//  3. The read models are synced to their replica, if they have one and
//     the unit may have written them (the project role, or a Scheduled
//     unit); a Scheduled unit then runs the maintenance when due.
//  4. In the lambda shape, where an instance is frozen between
//     invocations and nothing runs in the background, the unit that
//     crosses EVENTCORE_PUSH_INTERVAL since the last push pushes the
//     metrics (every unit with an interval of 0); elsewhere Background
//     pushes them on the interval. Counters and histograms are cumulative,
//     so a unit that does not push loses nothing: the next push carries
//     its increments. A dead gateway is backed off (see metrics.Pusher).
//
// Do returns work's error, or one wrapping eventlog.ErrUnavailable without
// running work once Shutdown has begun. It is safe for concurrent use.
func (a *App) Do(ctx context.Context, kind Work, work func(context.Context) error) error {
	if a.life.stopping.Load() {
		return errShutDown
	}
	err := a.held(ctx, kind, work)
	if a.Pusher != nil && a.pushInUnits() {
		_ = a.Pusher.PushIfDue(ctx, a.Config.PushInterval)
	}
	return err
}

// errShutDown answers a unit of work that arrives after Shutdown began.
var errShutDown = fmt.Errorf("%w: the instance is shutting down", eventlog.ErrUnavailable)

// held runs steps 1 to 3 of Do, holding swap for reading from the end of
// step 1 on; it lets go of it even when work panics.
func (a *App) held(ctx context.Context, kind Work, work func(context.Context) error) error {
	a.enter(ctx)
	defer a.life.swap.RUnlock()
	err := work(ctx)
	if a.readWriter != nil && (kind != Request || a.Role == RoleProject) {
		a.SyncReadModels(ctx)
	}
	if kind == Scheduled && a.maintenanceDue() {
		if err := a.Maintain(ctx); err != nil && ctx.Err() == nil {
			a.Logger.WarnContext(ctx, "replica maintenance failed", "error", err.Error())
		}
	}
	return err
}

// enter is step 1 of Do; it returns holding swap for reading.
func (a *App) enter(ctx context.Context) {
	if a.follower != nil {
		err := a.life.catchUps.Do(ctx, "catch-up from the replica", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
			defer cancel()
			_, err := a.follower.CatchUp(ctx)
			return err
		})
		if err != nil {
			a.Logger.ErrorContext(ctx, "event log catch-up from the replica failed", "error", err.Error())
		}
	}
	if len(a.parts()) > 0 && len(a.staleParts(ctx)) > 0 {
		a.life.swap.Lock()
		// Another unit may have reloaded meanwhile.
		for _, p := range a.staleParts(ctx) {
			if err := a.reload(ctx, p); err != nil {
				a.Logger.ErrorContext(ctx, "reloading from the replica failed", "database", p.name, "error", err.Error())
			}
		}
		a.life.swap.Unlock()
	}
	a.life.swap.RLock()
}

// maintenanceDue reports whether MaintenanceInterval has passed since the
// last maintenance, and if so counts this call as the next one.
func (a *App) maintenanceDue() bool {
	if len(a.parts()) == 0 {
		return false
	}
	a.life.mmu.Lock()
	defer a.life.mmu.Unlock()
	if time.Since(a.life.maintained) < MaintenanceInterval {
		return false
	}
	a.life.maintained = time.Now()
	return true
}

// pushInUnits reports whether the units of work push the metrics (step 4
// of Do) rather than Background: in the lambda shape, and whenever
// EVENTCORE_PUSH_INTERVAL is 0 (a push after every unit).
func (a *App) pushInUnits() bool {
	return a.Config.PushInterval == 0 || a.Config.OnLambda && a.Config.MaxConcurrency <= 1
}

// Background does the instance's work that belongs to no unit, until ctx
// ends: where the metrics are not pushed after every unit (Lambda Managed
// Instances, the local runner), it pushes them every
// EVENTCORE_PUSH_INTERVAL. It returns at once when there is nothing to do.
func (a *App) Background(ctx context.Context) {
	if a.Pusher == nil || a.pushInUnits() {
		return
	}
	// Ticks at half the interval, so that a push is due at every other
	// tick; a failed push backs the next off from the interval on.
	ticker := time.NewTicker(max(a.Config.PushInterval/2, 10*time.Millisecond))
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			_ = a.Pusher.PushIfDue(ctx, a.Config.PushInterval)
		}
	}
}

// Shutdown ends the instance within ctx's deadline (on Lambda, the time
// between SIGTERM and SIGKILL, about 500 ms): the units in flight get
// half the time left to finish, while new ones are refused (Do answers
// ErrUnavailable) or, if already past that check, wait and never start;
// then, at the same time, the instance's metrics group is deleted from the
// Pushgateway and the databases are closed, each replica synced a last
// time while its lease is held and the lease released, so that a
// successor (a new environment of a deployment) takes over at once
// instead of waiting for the lease to expire. A unit still in flight
// after that is not acknowledged: its sync fails. Shutdown is idempotent;
// it returns the errors of closing.
func (a *App) Shutdown(ctx context.Context) error {
	a.life.shutdown.Do(func() {
		a.life.stopping.Store(true)
		drained := make(chan struct{})
		go func() {
			a.life.swap.Lock() // never unlocked: nothing runs after shutdown
			close(drained)
		}()
		wait := time.Minute
		if deadline, ok := ctx.Deadline(); ok {
			wait = time.Until(deadline) / 2
		}
		select {
		case <-drained:
		case <-time.After(wait):
			a.Logger.WarnContext(ctx, "shutting down with units of work in flight; they will not be acknowledged")
		}
		var wg sync.WaitGroup
		if a.Pusher != nil {
			wg.Go(func() { _ = a.Pusher.Delete() })
		}
		a.life.shutErr = a.closeAll(ctx)
		wg.Wait()
	})
	return a.life.shutErr
}

// staleParts renews each writer's lease when due and returns the parts
// that must reload: their replica moved, or an earlier reload failed.
func (a *App) staleParts(ctx context.Context) []replicatedPart {
	var stale []replicatedPart
	for _, p := range a.parts() {
		moved, err := p.writer.Begin(ctx)
		a.life.pmu.Lock()
		pending := a.life.pending[p.writer]
		a.life.pmu.Unlock()
		switch {
		case moved || pending:
			stale = append(stale, p)
		case err != nil:
			a.Logger.WarnContext(ctx, "writer lease", "database", p.name, "error", err.Error())
		}
	}
	return stale
}

// reload replaces p with its replica's state; swap is held for writing.
// Until it has completed the handlers answer from a closed database
// (errors, never stale data) and the next unit tries again. Nothing local
// is synced: the local transactions were never acknowledged.
func (a *App) reload(ctx context.Context, p replicatedPart) error {
	a.Logger.WarnContext(ctx, "another writer changed the replica; reloading it", "database", p.name)
	a.setPending(p.writer, true)
	if err := errors.Join(p.close(), p.writer.Reload(ctx)); err != nil {
		return err
	}
	if err := p.reopen(ctx); err != nil {
		return err
	}
	a.setPending(p.writer, false)
	return nil
}

func (a *App) setPending(w *replica.Writer, pending bool) {
	a.life.pmu.Lock()
	defer a.life.pmu.Unlock()
	if a.life.pending == nil {
		a.life.pending = map[*replica.Writer]bool{}
	}
	if pending {
		a.life.pending[w] = true
	} else {
		delete(a.life.pending, w)
	}
}
