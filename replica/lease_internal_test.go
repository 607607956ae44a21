package replica

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

// scriptedLease is a leaseStore whose lease lasts what the test answers,
// and whose ensure blocks until the test answers it.
type scriptedLease struct {
	left    atomic.Int64 // nanoseconds the lease lasted when last answered
	at      atomic.Int64 // when, in Unix nanoseconds
	calls   atomic.Int64
	entered chan struct{}           // receives once per ensure call
	answer  chan scriptedLeaseReply // what the blocked ensure returns
}

type scriptedLeaseReply struct {
	acquired bool
	left     time.Duration
	err      error
}

func newScriptedLease() *scriptedLease {
	return &scriptedLease{entered: make(chan struct{}, 16), answer: make(chan scriptedLeaseReply)}
}

func (s *scriptedLease) ensure(ctx context.Context, _ time.Duration) (bool, error) {
	s.calls.Add(1)
	s.entered <- struct{}{}
	select {
	case r := <-s.answer:
		if r.err == nil {
			s.left.Store(int64(r.left))
			s.at.Store(time.Now().UnixNano())
		}
		return r.acquired, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (s *scriptedLease) expiry() (until, renewFrom time.Time) {
	at := time.Unix(0, s.at.Load())
	left := time.Duration(s.left.Load())
	return at.Add(left), at.Add(left / 2)
}

func (s *scriptedLease) release(context.Context) error { s.left.Store(0); return nil }

// renewalDue makes the lease l holds due for renewal now.
func renewalDue(l *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.renewFrom = time.Now()
}

func noCheck(context.Context) error { return nil }

// waitEntered waits for a call of ensure.
func (s *scriptedLease) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("ensure was not called")
	}
}

// While one caller renews a lease that still lasts long enough, the
// others are answered at once, without I/O and without waiting for it.
func TestLeaseRenewalDoesNotStallOtherCallers(t *testing.T) {
	ctx := context.Background()
	store := newScriptedLease()
	l := &lease{store: store, timeout: time.Minute}
	go func() {
		store.waitEntered(t)
		store.answer <- scriptedLeaseReply{acquired: true, left: time.Minute}
	}()
	if err := l.hold(ctx, time.Second, noCheck); err != nil {
		t.Fatal(err)
	}

	renewalDue(l) // half the TTL is gone
	renewing := make(chan error, 1)
	go func() { renewing <- l.hold(ctx, time.Second, noCheck) }()
	store.waitEntered(t) // one caller renews, and blocks there
	others, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for range 100 {
		if err := l.hold(others, time.Second, noCheck); err != nil {
			t.Fatalf("a caller waited for another's renewal: %v", err)
		}
	}
	if n := store.calls.Load(); n != 2 {
		t.Fatalf("ensure called %d times, want 2 (the acquisition and the one renewal)", n)
	}
	select {
	case err := <-renewing:
		t.Fatalf("the renewing caller returned (%v) before its renewal was answered", err)
	default:
	}
	store.answer <- scriptedLeaseReply{left: time.Minute}
	if err := <-renewing; err != nil {
		t.Fatal(err)
	}
}

// Callers that need the lease while it is being acquired wait for that
// acquisition and share its outcome, including its check; a failed check
// is not taken as held, and the next call runs it again.
func TestLeaseAcquisitionIsCheckedBeforeAnyCallerWrites(t *testing.T) {
	ctx := context.Background()
	store := newScriptedLease()
	l := &lease{store: store, timeout: time.Minute}
	moved := errors.New("the replica moved")
	var checks atomic.Int64
	check := func(context.Context) error {
		if checks.Add(1) == 1 {
			return moved
		}
		return nil
	}

	const waiters = 8
	var wg sync.WaitGroup
	errs := make(chan error, waiters+1)
	wg.Go(func() { errs <- l.hold(ctx, time.Second, check) })
	store.waitEntered(t)
	waiting, queued := signalWaits(ctx, waiters)
	for range waiters {
		wg.Go(func() { errs <- l.hold(waiting, time.Second, check) })
	}
	for range waiters { // the waiters queue behind the acquisition
		<-queued
	}
	store.answer <- scriptedLeaseReply{acquired: true, left: time.Minute}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, moved) {
			t.Fatalf("a caller of a held lease whose check failed got %v, want the check's error", err)
		}
	}
	if n := store.calls.Load(); n != 1 {
		t.Fatalf("ensure called %d times for one acquisition", n)
	}

	// The lease is held, but not checked: the next call checks again.
	go func() {
		store.waitEntered(t)
		store.answer <- scriptedLeaseReply{left: time.Minute}
	}()
	if err := l.hold(ctx, time.Second, check); err != nil {
		t.Fatal(err)
	}
	if n := checks.Load(); n != 2 {
		t.Fatalf("check ran %d times, want 2", n)
	}
	// Now held and checked: answered without the store.
	before := store.calls.Load()
	if err := l.hold(ctx, time.Second, check); err != nil || store.calls.Load() != before {
		t.Fatalf("a held, checked lease: err %v, ensure calls %d -> %d", err, before, store.calls.Load())
	}
}

// signalWaits returns a context that sends on queued each time a caller
// asks for its Done channel, which hold does only to wait for an attempt
// in flight: the test knows a caller waits, instead of guessing with a
// sleep. n is how many waiters the test expects.
func signalWaits(ctx context.Context, n int) (context.Context, <-chan struct{}) {
	queued := make(chan struct{}, n)
	return waitSignal{Context: ctx, queued: queued}, queued
}

type waitSignal struct {
	context.Context
	queued chan<- struct{}
}

func (w waitSignal) Done() <-chan struct{} {
	select {
	case w.queued <- struct{}{}:
	default:
	}
	return w.Context.Done()
}

// A caller that needs a lease that is too short waits for the renewal in
// flight and gets its error; one that gives up waiting gets ErrUnavailable.
func TestLeaseTooShortWaitsForTheRenewal(t *testing.T) {
	ctx := context.Background()
	store := newScriptedLease()
	l := &lease{store: store, timeout: time.Minute, checked: true, until: time.Now().Add(500 * time.Millisecond), renewFrom: time.Now()}
	first := make(chan error, 1)
	go func() { first <- l.hold(ctx, time.Second, noCheck) }()
	store.waitEntered(t)

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := l.hold(short, time.Second, noCheck); !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("a caller that gave up waiting got %v, want ErrUnavailable", err)
	}
	second := make(chan error, 1)
	waiting, queued := signalWaits(ctx, 1)
	go func() { second <- l.hold(waiting, time.Second, noCheck) }()
	<-queued
	down := errors.New("lease store down")
	store.answer <- scriptedLeaseReply{err: down}
	for _, ch := range []chan error{first, second} {
		if err := <-ch; !errors.Is(err, down) {
			t.Fatalf("got %v, want the renewal's error", err)
		}
	}
	if n := store.calls.Load(); n != 1 {
		t.Fatalf("ensure called %d times, want 1 (waiters share the attempt)", n)
	}
}

// A lease that expired and is taken anew is not seen as held by any
// caller until the acquisition's check has passed: a caller arriving
// while the check runs waits for it, and gets its error.
func TestLeaseTakenAnewIsNotHeldDuringItsCheck(t *testing.T) {
	ctx := context.Background()
	store := newScriptedLease()
	// Held and checked earlier; expired since.
	l := &lease{store: store, timeout: time.Minute, checked: true, until: time.Now().Add(-time.Second), renewFrom: time.Now().Add(-time.Minute)}
	inCheck, endCheck := make(chan struct{}), make(chan struct{})
	check := func(context.Context) error { close(inCheck); <-endCheck; return errStale }
	first := make(chan error, 1)
	go func() { first <- l.hold(ctx, time.Second, check) }()
	store.waitEntered(t)
	store.answer <- scriptedLeaseReply{acquired: true, left: time.Minute} // taken anew
	<-inCheck
	second := make(chan error, 1)
	go func() { second <- l.hold(ctx, time.Second, check) }()
	select {
	case err := <-second:
		t.Fatalf("a caller was answered (%v) while the acquisition's check was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(endCheck)
	for _, ch := range []chan error{first, second} {
		if err := <-ch; !errors.Is(err, errStale) {
			t.Fatalf("got %v, want the check's error", err)
		}
	}
}

// After release, hold never takes the lease again: a closing writer must
// not lock its successor out.
func TestReleasedLeaseIsNeverHeldAgain(t *testing.T) {
	store := newScriptedLease()
	l := &lease{store: store, timeout: time.Minute}
	if err := l.release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.hold(context.Background(), time.Second, noCheck); !errors.Is(err, eventlog.ErrNotWriter) {
		t.Fatalf("hold after release: %v, want ErrNotWriter", err)
	}
	if n := store.calls.Load(); n != 0 {
		t.Fatalf("hold after release called the store %d times", n)
	}
}
