package turns

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A call is answered only by a run that started after it was made, and
// concurrent calls share runs.
func TestACallIsAnsweredByARunThatStartedAfterIt(t *testing.T) {
	var g Group
	var state, started atomic.Int64 // state: what a run has "seen"
	run := func(context.Context) error {
		started.Store(state.Load())
		time.Sleep(time.Millisecond)
		return nil
	}
	var wg sync.WaitGroup
	const callers = 64
	var stale atomic.Int64
	for range callers {
		wg.Go(func() {
			seen := state.Add(1) // a commit made before the call
			if err := g.Do(context.Background(), "test", run); err != nil {
				t.Error(err)
			}
			if started.Load() < seen {
				stale.Add(1)
			}
		})
	}
	wg.Wait()
	if n := stale.Load(); n != 0 {
		t.Fatalf("%d calls were answered by a run that started before them", n)
	}
	if runs := g.Runs(); runs >= callers/2 {
		t.Fatalf("%d runs for %d concurrent callers: not shared", runs, callers)
	}
}

// A failed run answers exactly the calls it covered; the next call runs
// again.
func TestAFailedRunAnswersTheCallsItCovered(t *testing.T) {
	var g Group
	boom := errors.New("boom")
	release := make(chan struct{})
	entered := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- g.Do(context.Background(), "test", func(context.Context) error {
			close(entered)
			<-release
			return boom
		})
	}()
	<-entered
	// This call was made during the failing run: the next run answers it.
	second := make(chan error, 1)
	go func() { second <- g.Do(context.Background(), "test", func(context.Context) error { return nil }) }()
	time.Sleep(10 * time.Millisecond)
	close(release)
	if err := <-first; !errors.Is(err, boom) {
		t.Fatalf("the failed run's caller got %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("a call made during the failed run got %v, want the next run's nil", err)
	}
}

// A caller that leads a run and gives up does not cancel the run the
// others wait on; a waiter that gives up returns its context's error.
func TestTheRunIsDetachedFromItsLeadersCancellation(t *testing.T) {
	var g Group
	leaderCtx, cancel := context.WithCancel(context.Background())
	entered := make(chan struct{})
	release := make(chan struct{})
	var cancelled atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- g.Do(leaderCtx, "test", func(ctx context.Context) error {
			close(entered)
			<-release
			cancelled.Store(ctx.Err() != nil)
			return nil
		})
	}()
	<-entered
	cancel()
	// The run is held until the waiter has given up, so the waiter cannot
	// miss it and run alone.
	waiter, stop := context.WithTimeout(context.Background(), time.Millisecond)
	defer stop()
	err := g.Do(waiter, "test", func(context.Context) error { return nil })
	close(release)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter that gave up got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cancelled.Load() {
		t.Fatal("the run saw its leader's cancellation")
	}
}

// With Gather, the callers a run released are answered together by the
// next run instead of being split across two: steady callers need about
// one run per round of calls.
func TestGatherAnswersTheReturningCallersTogether(t *testing.T) {
	const callers, rounds = 8, 20
	runs := map[bool]uint64{}
	for _, gather := range []bool{false, true} {
		g := Group{Gather: gather}
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for range rounds {
					if err := g.Do(context.Background(), "test", func(context.Context) error {
						// A round trip; long enough that the gathering window
						// (half a run) outlasts a loaded scheduler's delays.
						time.Sleep(40 * time.Millisecond)
						return nil
					}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		runs[gather] = g.Runs()
	}
	t.Logf("runs for %d callers x %d rounds: %d without gathering, %d with", callers, rounds, runs[false], runs[true])
	if runs[true] > rounds+rounds/2 {
		t.Errorf("%d runs with Gather for %d rounds of %d callers, want about one run a round", runs[true], rounds, callers)
	}
	if runs[true] >= runs[false] {
		t.Errorf("Gather made %d runs, no fewer than %d without it", runs[true], runs[false])
	}
}
