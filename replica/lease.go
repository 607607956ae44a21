package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/benbjohnson/litestream"
	lsfile "github.com/benbjohnson/litestream/file"
	lss3 "github.com/benbjohnson/litestream/s3"
	"golang.org/x/sys/unix"

	"github.com/eventcore-go/eventcore/eventlog"
)

// leaseStore is where one replica's single-writer lease lives: a file
// lock or an S3 object. A lease calls its methods one at a time.
type leaseStore interface {
	// ensure makes sure the lease is held for at least margin more,
	// acquiring or renewing it as needed. acquired is true when the lease
	// had to be taken anew (someone else may have written in between).
	// Errors wrap eventlog.ErrNotWriter when another process holds it, or
	// eventlog.ErrUnavailable when the lease store cannot be reached.
	ensure(ctx context.Context, margin time.Duration) (acquired bool, err error)
	// expiry is when the lease held ends, and from when it should be
	// renewed (both zero when not held).
	expiry() (until, renewFrom time.Time)
	// release gives the lease up, if held.
	release(ctx context.Context) error
}

// lease is the single-writer lease of one replica, shared by every caller
// of a Writer. Checking it costs no I/O while it lasts long enough; one
// caller at a time renews or acquires it, and callers for which the lease
// still lasts long enough do not wait for that.
type lease struct {
	store   leaseStore
	timeout time.Duration // bound of one renewal or acquisition

	mu sync.Mutex
	// until and renewFrom are what the last successful attempt
	// established: the lease, checked, lasts until until and is due for
	// renewal from renewFrom. Only an attempt that succeeded moves them,
	// so a lease the store has just taken anew is not seen as held before
	// its check has passed.
	until, renewFrom time.Time
	// checked is false from an acquisition until its check has passed.
	checked  bool
	attempt  *leaseAttempt // the renewal or acquisition running, or nil
	released bool          // release was called: the lease is never held again
}

// leaseAttempt is one renewal or acquisition; done is closed when it ends,
// with err its outcome (including the acquisition's check).
type leaseAttempt struct {
	done chan struct{}
	err  error
}

// errReleased answers a writer whose lease was released (it is closing).
var errReleased = fmt.Errorf("%w: the writer lease was released; this writer is closing", eventlog.ErrNotWriter)

// hold returns nil when this process holds the lease for at least margin
// more. When the lease had to be taken anew, checkAcquired runs before any
// caller is told so, and its error is the answer of every caller that
// waited for that acquisition; a failed check is run again by the next
// hold. A renewal that is due while the lease still lasts more than
// margin runs in the caller that found it due; the others go on. The
// attempt is bounded by the lease's timeout, not by the caller's ctx: a
// caller that gives up must not fail the others waiting on it. Errors:
// those of leaseStore.ensure, checkAcquired's, errReleased after release,
// or ctx's (wrapping eventlog.ErrUnavailable) for a caller that gave up
// waiting for another's attempt.
func (l *lease) hold(ctx context.Context, margin time.Duration, checkAcquired func(context.Context) error) error {
	l.mu.Lock()
	var waited *leaseAttempt
	for {
		if l.released {
			l.mu.Unlock()
			return errReleased
		}
		now := time.Now()
		if l.checked && l.until.Sub(now) > margin && (l.attempt != nil || now.Before(l.renewFrom)) {
			l.mu.Unlock()
			return nil
		}
		if waited != nil && waited.err != nil {
			l.mu.Unlock()
			return waited.err
		}
		if l.attempt == nil {
			break
		}
		waited = l.attempt
		l.mu.Unlock()
		select {
		case <-waited.done:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for the writer lease: %w", eventlog.ErrUnavailable, ctx.Err())
		}
		l.mu.Lock()
	}
	a := &leaseAttempt{done: make(chan struct{}), err: errors.New("replica: the lease attempt did not end")}
	l.attempt = a
	checked := l.checked
	l.mu.Unlock()
	defer func() { // also when ensure or the check panics
		l.mu.Lock()
		l.attempt = nil
		close(a.done)
		l.mu.Unlock()
	}()

	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.timeout)
	defer cancel()
	acquired, err := l.store.ensure(actx, margin)
	if acquired {
		checked = false
	}
	if err == nil && !checked {
		err = checkAcquired(actx)
		checked = err == nil
	}

	l.mu.Lock()
	l.checked, a.err = checked, err
	if err == nil {
		l.until, l.renewFrom = l.store.expiry()
	}
	l.mu.Unlock()
	return err
}

// heldFor reports, without I/O, whether the lease is held and checked for
// at least margin more.
func (l *lease) heldFor(margin time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.released && l.checked && time.Until(l.until) > margin
}

// release gives the lease up, after any renewal or acquisition running;
// from then on hold answers errReleased.
func (l *lease) release(ctx context.Context) error {
	l.mu.Lock()
	l.released = true
	for l.attempt != nil {
		a := l.attempt
		l.mu.Unlock()
		select {
		case <-a.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		l.mu.Lock()
	}
	defer l.mu.Unlock()
	l.checked, l.until, l.renewFrom = false, time.Time{}, time.Time{}
	return l.store.release(ctx)
}

func newLeaser(ctx context.Context, client litestream.ReplicaClient, opts Options) (*lease, error) {
	switch c := client.(type) {
	case *lsfile.ReplicaClient:
		if err := os.MkdirAll(c.Path(), 0o755); err != nil {
			return nil, fmt.Errorf("replica %s: %w", c.Path(), err)
		}
		return &lease{store: &fileLease{path: filepath.Join(c.Path(), "writer.lock")}, timeout: opts.SyncTimeout}, nil
	case *lss3.ReplicaClient:
		api, err := leaseClient(ctx, c)
		if err != nil {
			return nil, err
		}
		l := lss3.NewLeaser()
		l.SetClient(api)
		l.Bucket, l.Path, l.TTL = c.Bucket, c.Path, opts.LeaseTTL
		if opts.Owner != "" {
			l.Owner = opts.Owner
		}
		l.SetLogger(opts.Logger)
		return &lease{store: &s3Lease{leaser: l, ttl: opts.LeaseTTL}, timeout: opts.SyncTimeout}, nil
	}
	return nil, fmt.Errorf("replica: no writer lease for %s replicas", client.Type())
}

// leaseClient builds an S3 client with the settings Litestream parsed from
// the replica URL, for the lease object beside the replica.
func leaseClient(ctx context.Context, c *lss3.ReplicaClient) (*s3.Client, error) {
	region := c.Region
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = lss3.DefaultRegion
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(region)}
	if c.AccessKeyID != "" && c.SecretAccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("replica lease: aws configuration: %w", err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = c.ForcePathStyle
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
	}), nil
}

// fileLease is an exclusive flock(2) on a file in the replica directory:
// the kernel releases it when the process dies, so it never outlives its
// holder, and it needs no renewal.
type fileLease struct {
	path string
	held atomic.Pointer[os.File]
}

func (l *fileLease) ensure(context.Context, time.Duration) (bool, error) {
	if l.held.Load() != nil {
		return false, nil
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, fmt.Errorf("%w: writer lock %s: %w", eventlog.ErrUnavailable, l.path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, fmt.Errorf("%w: another process holds %s", eventlog.ErrNotWriter, l.path)
		}
		return false, fmt.Errorf("%w: writer lock %s: %w", eventlog.ErrUnavailable, l.path, err)
	}
	l.held.Store(f)
	return true, nil
}

// forever is the expiry of a lease that needs no renewal.
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (l *fileLease) expiry() (until, renewFrom time.Time) {
	if l.held.Load() == nil {
		return time.Time{}, time.Time{}
	}
	return forever, forever
}

func (l *fileLease) release(context.Context) error {
	if f := l.held.Swap(nil); f != nil {
		return f.Close() // closing the descriptor drops the lock
	}
	return nil
}

// s3Lease is Litestream's S3 lease: an object written with conditional
// puts, valid until its expiry. Nothing renews it in the background (a
// Lambda instance is frozen between invocations): it is due for renewal
// when less than half its TTL is left, and a holder that was frozen past
// the expiry renews it only if nobody took it meanwhile (the object's ETag
// is unchanged), otherwise it has lost it.
type s3Lease struct {
	leaser *lss3.Leaser
	ttl    time.Duration
	held   atomic.Pointer[litestream.Lease]
}

func (l *s3Lease) expiry() (until, renewFrom time.Time) {
	cur := l.held.Load()
	if cur == nil {
		return time.Time{}, time.Time{}
	}
	return cur.ExpiresAt, cur.ExpiresAt.Add(-l.ttl / 2)
}

func (l *s3Lease) ensure(ctx context.Context, margin time.Duration) (bool, error) {
	cur := l.held.Load()
	if cur != nil && cur.TTL() > l.ttl/2 && cur.TTL() > margin {
		return false, nil
	}
	if cur != nil {
		renewed, err := l.leaser.RenewLease(ctx, cur)
		switch {
		case err == nil:
			l.held.Store(renewed)
			return false, l.check(renewed, margin)
		case errors.Is(err, litestream.ErrLeaseNotHeld):
			l.held.Store(nil) // taken by someone else since: try to acquire anew
		default:
			if cur.TTL() > margin {
				return false, nil // still ours for long enough; renew next time
			}
			if cur.TTL() > 0 {
				// Still ours but too short, and the store did not answer:
				// nobody else can take it before it expires, and acquiring
				// anew would refuse our own unexpired lease.
				return false, fmt.Errorf("%w: renew writer lease: %w", eventlog.ErrUnavailable, err)
			}
			// Expired, and the renewal failed otherwise than by a changed
			// ETag (S3 answers 404 to a conditional PUT on a deleted, that
			// is released, lease): take it anew below. That counts as an
			// acquisition, so the caller re-checks the replica's head.
			l.held.Store(nil)
		}
	}
	acquired, err := l.leaser.AcquireLease(ctx)
	if err != nil {
		var taken *litestream.LeaseExistsError
		if errors.As(err, &taken) {
			return false, fmt.Errorf("%w: %w", eventlog.ErrNotWriter, taken)
		}
		return false, fmt.Errorf("%w: acquire writer lease: %w", eventlog.ErrUnavailable, err)
	}
	l.held.Store(acquired)
	return true, l.check(acquired, margin)
}

func (l *s3Lease) check(held *litestream.Lease, margin time.Duration) error {
	if held.TTL() <= margin {
		return fmt.Errorf("%w: the writer lease (TTL %s) is shorter than a sync", eventlog.ErrNotWriter, l.ttl)
	}
	return nil
}

func (l *s3Lease) release(ctx context.Context) error {
	cur := l.held.Swap(nil)
	if cur == nil {
		return nil
	}
	err := l.leaser.ReleaseLease(ctx, cur)
	if errors.Is(err, lss3.ErrLeaseAlreadyReleased) || errors.Is(err, litestream.ErrLeaseNotHeld) {
		return nil
	}
	return err
}
