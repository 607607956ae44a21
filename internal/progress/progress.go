// Package progress shows long local work (a restore from a replica, a
// projection rebuild) as a bar in a terminal, and nothing anywhere else:
// a log file, a pipe or a Lambda's log collector gets no bar. Only the
// local runner uses it.
package progress

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Unit is what a bar counts.
type Unit int

const (
	// Count counts items (events, positions).
	Count Unit = iota
	// Bytes counts bytes, shown as kB, MB, ...
	Bytes
)

// throttle is the least time between two renderings (a variable for the
// tests).
var throttle = 100 * time.Millisecond

// Bar is the progress of one piece of work. A nil *Bar shows nothing, so
// callers need not check whether they got one. Its methods are safe for
// concurrent use.
type Bar struct {
	mu    sync.Mutex
	w     io.Writer
	bar   *progressbar.ProgressBar
	known bool // the total is known (not a spinner)
	done  bool
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd())) //nolint:gosec // a file descriptor fits an int
}

// New returns a bar of total units (-1 when unknown: a spinner with the
// count and the rate) written to w, or nil when w is not a terminal.
func New(w io.Writer, desc string, total int64, unit Unit) *Bar {
	if !IsTerminal(w) {
		return nil
	}
	return Forced(w, desc, total, unit)
}

// Forced returns a bar written to w whether or not w is a terminal.
func Forced(w io.Writer, desc string, total int64, unit Unit) *Bar {
	if total <= 0 {
		total = -1
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetRenderBlankState(true),
	}
	if unit == Bytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"))
	}
	return &Bar{w: w, known: total > 0, bar: progressbar.NewOptions64(total, opts...)}
}

// Set shows done units of total (total <= 0 leaves the total as it is).
func (b *Bar) Set(done, total int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	if total == 0 {
		return // nothing to do; a bar of 0 cannot be drawn
	}
	if total > 0 && b.known && total != b.bar.GetMax64() {
		b.bar.ChangeMax64(total) // a spinner stays one
	}
	if total > 0 && done > total {
		done = total // a re-read counted twice, a head that moved
	}
	_ = b.bar.Set64(done)
}

// Write counts len(p) units, so that a Bar can sit behind an io.TeeReader.
func (b *Bar) Write(p []byte) (int, error) {
	if b == nil {
		return len(p), nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		n := int64(len(p))
		if max, cur := b.bar.GetMax64(), b.bar.State().CurrentNum; b.known && cur+n > max {
			n = max - cur
		}
		_ = b.bar.Add64(n)
	}
	return len(p), nil
}

// Done ends the bar drawn full: the work is complete.
func (b *Bar) Done() { b.end(true) }

// Close ends the bar as it stands (the work failed or was cut short).
// Ending a bar twice is a no-op.
func (b *Bar) Close() error {
	b.end(false)
	return nil
}

func (b *Bar) end(full bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if full {
		_ = b.bar.Finish()
	} else {
		_ = b.bar.Exit()
	}
	_, _ = io.WriteString(b.w, "\n")
}

// Poll reads how far some work is (done out of total).
type Poll func(ctx context.Context) (done, total int64, err error)

// Watch shows poll's answers on b every interval, in a goroutine, until a
// reading reaches its total (done >= total > 0: the bar is drawn full and
// reached is closed) or the returned stop is called. stop takes a last
// reading, ends the bar (full when complete) and returns once the
// goroutine has ended; calling it after the total was reached, or twice,
// is a no-op. A failed reading is skipped (the work itself reports its
// errors). With a nil b, Watch polls nothing and reached never closes.
func Watch(ctx context.Context, b *Bar, interval time.Duration, poll Poll) (stop func(complete bool), reached <-chan struct{}) {
	if b == nil {
		return func(bool) {}, make(chan struct{})
	}
	ctx, cancel := context.WithCancel(ctx)
	ended, full := make(chan struct{}), make(chan struct{})
	read := func(ctx context.Context) bool {
		done, total, err := poll(ctx)
		if err != nil {
			return false
		}
		b.Set(done, total)
		return total > 0 && done >= total
	}
	go func() {
		defer close(ended)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if read(ctx) {
				b.end(true)
				close(full)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func(complete bool) {
		once.Do(func() {
			cancel()
			<-ended
			read(context.WithoutCancel(ctx))
			b.end(complete)
		})
	}, full
}
