package executor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// Commands with overlapping streams never hold a stream at the same time,
// whatever order they name their streams in, and all of them get in (no
// deadlock).
func TestAdmissionNeverAdmitsTwoHoldersOfAStream(t *testing.T) {
	a := NewAdmission()
	names := []string{"a", "b", "c", "d", "e"}
	var mu sync.Mutex
	holders := map[eventlog.StreamID]int{}
	var overlaps atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 50 {
				n := 1 + rand.IntN(3)
				var streams []eventlog.StreamID
				for range n {
					streams = append(streams, sid(names[rand.IntN(len(names))])) // duplicates too
				}
				release, err := a.Admit(context.Background(), streams)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, s := range uniq(streams) {
					if holders[s]++; holders[s] > 1 {
						overlaps.Add(1)
					}
				}
				mu.Unlock()
				time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
				mu.Lock()
				for _, s := range uniq(streams) {
					holders[s]--
				}
				mu.Unlock()
				release()
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Fatalf("%d times a stream had two holders", n)
	}
	if len(a.held) != 0 || len(a.waiting) != 0 {
		t.Fatalf("%d streams held and %d waiters left after every command left", len(a.held), len(a.waiting))
	}
}

func uniq(streams []eventlog.StreamID) []eventlog.StreamID {
	seen := map[eventlog.StreamID]bool{}
	var out []eventlog.StreamID
	for _, s := range streams {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// A waiter whose context ends gets its error and holds nothing: the
// streams it had already taken are free for the next command.
func TestAdmissionWaiterGivesUp(t *testing.T) {
	a := NewAdmission()
	ctx := context.Background()
	releaseB, err := a.Admit(ctx, sids("b"))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := a.Admit(short, sids("a", "b")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter that gave up got %v", err)
	}
	got := make(chan error, 1)
	go func() {
		release, err := a.Admit(ctx, sids("a"))
		if err == nil {
			release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream a stayed held by a waiter that gave up")
	}
	releaseB()
}

// A waiting command is overtaken by later ones whose streams are free, but
// at most MaxOvertakes times: then it reserves its streams, and the next
// command on them waits behind it.
func TestAdmissionOvertakingIsBounded(t *testing.T) {
	a := NewAdmission()
	ctx := context.Background()
	releaseA, err := a.Admit(ctx, sids("a"))
	if err != nil {
		t.Fatal(err)
	}
	waiter := make(chan func(), 1)
	go func() {
		release, err := a.Admit(ctx, sids("b", "a"))
		if err != nil {
			t.Error(err)
		}
		waiter <- release
	}()
	for {
		a.mu.Lock()
		n := len(a.waiting)
		a.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// b is free: commands on b alone overtake the waiter, MaxOvertakes times.
	for i := range MaxOvertakes {
		admitted := make(chan func(), 1)
		go func() {
			release, _ := a.Admit(ctx, sids("b"))
			admitted <- release
		}()
		select {
		case release := <-admitted:
			release()
		case <-time.After(5 * time.Second):
			t.Fatalf("overtake %d: a command on a free stream was not admitted", i+1)
		}
	}
	// The next one waits behind the waiter, which runs once a is released.
	next := make(chan func(), 1)
	go func() {
		release, _ := a.Admit(ctx, sids("b"))
		next <- release
	}()
	select {
	case <-next:
		t.Fatal("a command overtook a waiter that had been overtaken MaxOvertakes times")
	case <-time.After(50 * time.Millisecond):
	}
	releaseA()
	releaseWaiter := <-waiter
	select {
	case <-next:
		t.Fatal("the next command ran while the waiter held b")
	case <-time.After(20 * time.Millisecond):
	}
	releaseWaiter()
	select {
	case release := <-next:
		release()
	case <-time.After(5 * time.Second):
		t.Fatal("the next command was never admitted")
	}
}

// Inside one process, concurrent commands on one hot stream are ordered,
// not raced: none retries. Without admission the same load conflicts,
// which shows what the test would see if admission did not work.
func TestAdmissionRemovesConflictsInOneProcess(t *testing.T) {
	const workers, each = 8, 15
	for _, admitted := range []bool{true, false} {
		t.Run(fmt.Sprintf("admission=%v", admitted), func(t *testing.T) {
			store := openStoreWith(t, sqlite.Options{Synchronous: sqlite.SyncNormal})
			opts := Options{Retry: ExponentialBackoff{MaxRetries: 1000, Initial: time.Millisecond, Max: 10 * time.Millisecond, Jitter: 1}}
			var waits atomic.Int64
			if admitted {
				opts.Admission = NewAdmission()
				opts.OnAdmit = func(time.Duration) { waits.Add(1) }
			}
			var wg sync.WaitGroup
			var retries atomic.Int64
			for range workers {
				wg.Go(func() {
					for range each {
						res, err := Execute[counterState](context.Background(), store, newCounterCodec(), increment{Counter: "hot", By: 1}, opts)
						if err != nil {
							t.Error(err)
							return
						}
						retries.Add(int64(res.Attempts - 1))
					}
				})
			}
			wg.Wait()
			if n := len(readAll(t, store, "hot")); n != workers*each {
				t.Fatalf("%d events, want %d", n, workers*each)
			}
			switch {
			case admitted && retries.Load() != 0:
				t.Fatalf("%d retries with admission", retries.Load())
			case admitted && waits.Load() != workers*each:
				t.Fatalf("OnAdmit told %d times for %d commands", waits.Load(), workers*each)
			case !admitted && retries.Load() == 0:
				t.Fatal("no retries without admission: the load does not conflict, so it cannot show admission's effect")
			}
			t.Logf("%d commands, %d retries", workers*each, retries.Load())
		})
	}
}
