package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

// leaser is the single-writer lease of one replica.
type leaser interface {
	// hold makes sure the lease is held for at least margin more,
	// acquiring or renewing it as needed. acquired is true when the lease
	// had to be taken anew (someone else may have written in between).
	// Errors wrap eventlog.ErrNotWriter when another process holds it, or
	// eventlog.ErrUnavailable when the lease store cannot be reached.
	hold(ctx context.Context, margin time.Duration) (acquired bool, err error)
	// release gives the lease up, if held.
	release(ctx context.Context) error
}

func newLeaser(ctx context.Context, client litestream.ReplicaClient, opts Options) (leaser, error) {
	switch c := client.(type) {
	case *lsfile.ReplicaClient:
		if err := os.MkdirAll(c.Path(), 0o755); err != nil {
			return nil, fmt.Errorf("replica %s: %w", c.Path(), err)
		}
		return &fileLease{path: filepath.Join(c.Path(), "writer.lock")}, nil
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
		return &s3Lease{leaser: l, ttl: opts.LeaseTTL}, nil
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
// holder.
type fileLease struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (l *fileLease) hold(context.Context, time.Duration) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
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
	l.f = f
	return true, nil
}

func (l *fileLease) release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the lock
	l.f = nil
	return err
}

// s3Lease is Litestream's S3 lease: an object written with conditional
// puts, valid until its expiry. Nothing renews it in the background (a
// Lambda instance is frozen between invocations): hold renews it when less
// than half its TTL is left, and a holder that was frozen past the expiry
// renews it only if nobody took it meanwhile (the object's ETag is
// unchanged), otherwise it has lost it.
type s3Lease struct {
	leaser *lss3.Leaser
	ttl    time.Duration
	mu     sync.Mutex
	lease  *litestream.Lease
}

func (l *s3Lease) hold(ctx context.Context, margin time.Duration) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lease != nil && l.lease.TTL() > l.ttl/2 && l.lease.TTL() > margin {
		return false, nil
	}
	if l.lease != nil {
		renewed, err := l.leaser.RenewLease(ctx, l.lease)
		switch {
		case err == nil:
			l.lease = renewed
			return false, l.check(margin)
		case errors.Is(err, litestream.ErrLeaseNotHeld):
			l.lease = nil // taken by someone else since: try to acquire anew
		default:
			if l.lease.TTL() > margin {
				return false, nil // still ours for long enough; renew next time
			}
			if l.lease.TTL() > 0 {
				// Still ours but too short, and the store did not answer:
				// nobody else can take it before it expires, and acquiring
				// anew would refuse our own unexpired lease.
				return false, fmt.Errorf("%w: renew writer lease: %w", eventlog.ErrUnavailable, err)
			}
			// Expired, and the renewal failed otherwise than by a changed
			// ETag (S3 answers 404 to a conditional PUT on a deleted, that
			// is released, lease): take it anew below. That counts as an
			// acquisition, so the caller re-checks the replica's head.
			l.lease = nil
		}
	}
	lease, err := l.leaser.AcquireLease(ctx)
	if err != nil {
		var held *litestream.LeaseExistsError
		if errors.As(err, &held) {
			return false, fmt.Errorf("%w: %w", eventlog.ErrNotWriter, held)
		}
		return false, fmt.Errorf("%w: acquire writer lease: %w", eventlog.ErrUnavailable, err)
	}
	l.lease = lease
	return true, l.check(margin)
}

func (l *s3Lease) check(margin time.Duration) error {
	if l.lease.TTL() <= margin {
		return fmt.Errorf("%w: the writer lease (TTL %s) is shorter than a sync", eventlog.ErrNotWriter, l.ttl)
	}
	return nil
}

func (l *s3Lease) release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lease == nil {
		return nil
	}
	err := l.leaser.ReleaseLease(ctx, l.lease)
	l.lease = nil
	if errors.Is(err, lss3.ErrLeaseAlreadyReleased) || errors.Is(err, litestream.ErrLeaseNotHeld) {
		return nil
	}
	return err
}
