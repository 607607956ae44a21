package progress_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/progress"
)

// syncBuffer is a bytes.Buffer safe for the bar's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNonTerminalGetsNoBar(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var buf bytes.Buffer
	for name, w := range map[string]interface{ Write([]byte) (int, error) }{"file": f, "buffer": &buf} {
		if progress.IsTerminal(w) {
			t.Fatalf("%s: IsTerminal = true", name)
		}
		if b := progress.New(w, "restore", 100, progress.Bytes); b != nil {
			t.Fatalf("%s: New returned a bar", name)
		}
	}
	// A nil bar takes every call and shows nothing.
	var b *progress.Bar
	b.Set(5, 10)
	if n, err := b.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatalf("nil Write = %d, %v", n, err)
	}
	b.Done()
	_ = b.Close()
	stop, _ := progress.Watch(context.Background(), nil, time.Millisecond, func(context.Context) (int64, int64, error) {
		t.Error("a nil bar was polled")
		return 0, 0, nil
	})
	stop(true)
	if info, err := f.Stat(); err != nil || info.Size() != 0 || buf.Len() != 0 {
		t.Fatalf("something was written: %v, %d", err, buf.Len())
	}
}

func TestForcedBarMoves(t *testing.T) {
	defer progress.SetThrottle(0)()
	var out syncBuffer
	b := progress.Forced(&out, "rebuild balances", 200, progress.Count)
	if !strings.Contains(out.String(), "0%") {
		t.Fatalf("no blank state drawn: %q", out.String())
	}
	b.Set(50, 200)
	if !strings.Contains(out.String(), "25%") {
		t.Fatalf("25%% not drawn: %q", out.String())
	}
	b.Done()
	s := out.String()
	if !strings.Contains(s, "100%") || !strings.Contains(s, "rebuild balances") || !strings.HasSuffix(s, "\n") {
		t.Fatalf("end not drawn: %q", s)
	}
	before := len(s)
	b.Set(10, 200)
	b.Done()
	if len(out.String()) != before {
		t.Fatal("an ended bar drew again")
	}
}

func TestWriteCountsBytesUpToTotal(t *testing.T) {
	defer progress.SetThrottle(0)()
	var out syncBuffer
	b := progress.Forced(&out, "restore", 1000, progress.Bytes)
	_, _ = b.Write(make([]byte, 600))
	_, _ = b.Write(make([]byte, 600)) // a re-read: clamped to the total
	s := out.String()
	if !strings.Contains(s, "60%") || !strings.Contains(s, "100%") {
		t.Fatalf("bytes not drawn: %q", s)
	}
	_ = b.Close()
}

func TestUnknownTotalSpins(t *testing.T) {
	defer progress.SetThrottle(0)()
	var out syncBuffer
	b := progress.Forced(&out, "restore", -1, progress.Bytes)
	_, _ = b.Write(make([]byte, 2048))
	if s := out.String(); !strings.Contains(s, "2.0 kB") {
		t.Fatalf("count not drawn: %q", s)
	}
	b.Set(4096, -1)
	_ = b.Close()
	if s := out.String(); !strings.Contains(s, "4.1 kB") || strings.Contains(s, "%") {
		t.Fatalf("the spinner did not count on: %q", s)
	}
}

func TestWatchPollsUntilStopped(t *testing.T) {
	defer progress.SetThrottle(0)()
	var out syncBuffer
	b := progress.Forced(&out, "rebuild", 100, progress.Count)
	var done atomic.Int64
	var polls atomic.Int32
	stop, reached := progress.Watch(context.Background(), b, 5*time.Millisecond, func(context.Context) (int64, int64, error) {
		polls.Add(1)
		return done.Load(), 100, nil
	})
	deadline := time.Now().Add(5 * time.Second)
	for polls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	done.Store(40)
	for !strings.Contains(out.String(), "40%") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	done.Store(70)
	stop(false)
	n := polls.Load()
	s := out.String()
	if n < 3 {
		t.Fatalf("polled %d times", n)
	}
	if !strings.Contains(s, "40%") || !strings.Contains(s, "70%") || strings.Contains(s, "100%") {
		t.Fatalf("the bar did not follow the polls (or was drawn full): %q", s)
	}
	time.Sleep(20 * time.Millisecond)
	if polls.Load() != n {
		t.Fatal("polled after stop")
	}
	stop(true) // a second stop is a no-op
	select {
	case <-reached:
		t.Fatal("reached closed below the total")
	default:
	}
}

func TestWatchEndsAtTheTotal(t *testing.T) {
	defer progress.SetThrottle(0)()
	var out syncBuffer
	b := progress.Forced(&out, "rebuild", 10, progress.Count)
	var done atomic.Int64
	stop, reached := progress.Watch(context.Background(), b, time.Millisecond, func(context.Context) (int64, int64, error) {
		return done.Add(1), 10, nil
	})
	select {
	case <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end at its total")
	}
	n := done.Load()
	if !strings.Contains(out.String(), "100%") {
		t.Fatalf("not drawn full: %q", out.String())
	}
	time.Sleep(20 * time.Millisecond)
	if done.Load() != n {
		t.Fatal("polled after the total was reached")
	}
	stop(false) // no-op once reached
	if got := strings.Count(out.String(), "\n"); got != 1 {
		t.Fatalf("%d line ends, want 1: %q", got, out.String())
	}
}
