// Package replica keeps an SQLite file alive beyond the instance that
// writes it, by replicating it with an embedded Litestream to S3 (or an
// S3-compatible store) or to a directory.
//
// A Writer belongs to the one process that writes a file: it restores the
// file at start when it is missing or differs from the replica, holds the
// single-writer lease, and makes every commit durable in the replica when
// Sync returns. A Follower keeps a read-only copy of someone else's file up
// to date from the replica, applying only the transactions it has not seen.
//
// Nothing here runs in the background: on AWS Lambda the instance is frozen
// between invocations, so syncing, checkpoints, compaction and lease renewal
// all happen inside calls made by an invocation (Sync, Begin, Maintain).
package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/benbjohnson/litestream"
	_ "github.com/benbjohnson/litestream/file" // registers file:// replicas
	lss3 "github.com/benbjohnson/litestream/s3"
	"github.com/superfly/ltx"
)

// Defaults of Options.
const (
	DefaultSyncTimeout      = 5 * time.Second
	DefaultLeaseTTL         = lss3.DefaultLeaseTTL
	DefaultSnapshotInterval = time.Hour
	DefaultRetention        = 24 * time.Hour
)

// Options configure a Writer or a Follower.
type Options struct {
	// URL is the replica: s3://bucket/path (AWS configuration from the
	// environment; ?endpoint=...&region=...&forcePathStyle=true for an
	// S3-compatible store, as Litestream parses them) or file:///path.
	URL string
	// Path is the local SQLite file.
	Path string
	// SyncTimeout bounds one Sync, including the S3 client's retries.
	SyncTimeout time.Duration
	// LeaseTTL is how long the S3 writer lease lasts unless renewed; a
	// frozen or dead holder blocks a successor for at most this long.
	LeaseTTL time.Duration
	// Owner names this process in the lease (default host:pid).
	Owner string
	// SnapshotInterval is how often Maintain writes a full snapshot, which
	// bounds what a restore must replay. Retention is how long snapshots
	// (and the files between them) are kept.
	SnapshotInterval, Retention time.Duration
	// StartWithoutLease lets OpenWriter and Start succeed while another
	// process holds the writer lease (a crashed or frozen predecessor whose
	// lease has not expired yet): the file is restored, writes answer
	// eventlog.ErrNotWriter until the lease is free, and Begin then reloads
	// the file if the replica moved meanwhile. For Lambda, where failing the
	// start would fail invocations instead of answering 503.
	StartWithoutLease bool
	Logger            *slog.Logger
	// RestoreProgress, when set, is told how a restore from the replica
	// advances (the local runner draws a bar in its terminal). It is
	// called as a restore starts, with the local path and the bytes the
	// restore will read from the replica (-1 when they could not be
	// listed); each byte read is then written to read, and end is called
	// with the restore's result.
	RestoreProgress func(path string, total int64) (read io.Writer, end func(error))
}

func (o Options) withDefaults() Options {
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = DefaultSyncTimeout
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = DefaultSnapshotInterval
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// ValidateURL checks that u is a replica URL this package can use, without
// contacting it: s3://bucket[/path][?endpoint=...] or file:///absolute/path.
func ValidateURL(u string) error {
	_, err := clientFromURL(u)
	return err
}

// SameReplica reports whether two replica URLs name the same place (their
// query strings, such as an endpoint, aside).
func SameReplica(a, b string) bool {
	return strings.TrimRight(redact(a), "/") == strings.TrimRight(redact(b), "/")
}

// clientFromURL checks u and builds its Litestream client, not yet
// initialised.
func clientFromURL(u string) (litestream.ReplicaClient, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", u)
	}
	switch parsed.Scheme {
	case "s3":
		if parsed.Host == "" {
			return nil, fmt.Errorf("%q names no bucket (s3://bucket/path)", u)
		}
	case "file":
		if parsed.Host != "" || !filepath.IsAbs(parsed.Path) {
			return nil, fmt.Errorf("%q is not file:///absolute/path", u)
		}
	default:
		return nil, fmt.Errorf("%q is not an s3:// or file:// URL", u)
	}
	client, err := litestream.NewReplicaClientFromURL(u)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", u, err)
	}
	return client, nil
}

// newClient builds and initialises the Litestream client of u.
func newClient(ctx context.Context, u string, logger *slog.Logger) (litestream.ReplicaClient, error) {
	client, err := clientFromURL(u)
	if err != nil {
		return nil, err
	}
	client.SetLogger(logger)
	if err := client.Init(ctx); err != nil {
		return nil, fmt.Errorf("replica %s: %w", redact(u), err)
	}
	return client, nil
}

// redact drops the query string, which may carry credentials.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

// levels are the levels a replica holds files at: Litestream's default
// compaction levels (which Writer.Maintain uses) and the snapshot level.
func levels() []int {
	out := make([]int, 0, len(litestream.DefaultCompactionLevels)+1)
	for _, lvl := range litestream.DefaultCompactionLevels {
		out = append(out, lvl.Level)
	}
	return append(out, litestream.SnapshotLevel)
}

// newestFile returns the replica's file holding its newest transaction,
// or nil when the replica holds nothing. At equal transaction ids the
// lowest level wins: level 0 is the file the writer itself made.
func newestFile(ctx context.Context, client litestream.ReplicaClient) (*ltx.FileInfo, error) {
	var newest *ltx.FileInfo
	for _, level := range levels() {
		itr, err := client.LTXFiles(ctx, level, 0, false)
		if err != nil {
			return nil, err
		}
		for itr.Next() {
			if it := itr.Item(); newest == nil || it.MaxTXID > newest.MaxTXID {
				copied := *it
				newest = &copied
			}
		}
		if err := itr.Close(); err != nil {
			return nil, err
		}
	}
	return newest, nil
}

// head returns the newest transaction id the replica holds at any level,
// 0 when it holds nothing.
func head(ctx context.Context, client litestream.ReplicaClient) (ltx.TXID, error) {
	newest, err := newestFile(ctx, client)
	if err != nil || newest == nil {
		return 0, err
	}
	return newest.MaxTXID, nil
}

// headFile returns newestFile and that file's trailer (a few bytes read
// from its end).
func headFile(ctx context.Context, client litestream.ReplicaClient) (*ltx.FileInfo, ltx.Trailer, error) {
	newest, err := newestFile(ctx, client)
	if err != nil || newest == nil {
		return nil, ltx.Trailer{}, err
	}
	if newest.Size < ltx.HeaderSize+ltx.TrailerSize {
		return nil, ltx.Trailer{}, fmt.Errorf("ltx file %d-%d: %d bytes is too short", newest.MinTXID, newest.MaxTXID, newest.Size)
	}
	rc, err := client.OpenLTXFile(ctx, newest.Level, newest.MinTXID, newest.MaxTXID, newest.Size-ltx.TrailerSize, ltx.TrailerSize)
	if err != nil {
		return nil, ltx.Trailer{}, err
	}
	defer func() { _ = rc.Close() }()
	tr, err := readTrailer(rc)
	if err != nil {
		return nil, ltx.Trailer{}, fmt.Errorf("ltx file %d-%d: %w", newest.MinTXID, newest.MaxTXID, err)
	}
	return newest, tr, nil
}

// readTrailer reads an LTX trailer from r.
func readTrailer(r io.Reader) (ltx.Trailer, error) {
	buf := make([]byte, ltx.TrailerSize)
	if _, err := io.ReadFull(r, buf); err != nil {
		return ltx.Trailer{}, err
	}
	var tr ltx.Trailer
	return tr, tr.UnmarshalBinary(buf)
}

// sameAsLocal reports whether the replica's newest file is the very file
// Litestream made locally for path's newest transaction (same level-0
// range and same file checksum), which proves the local file is the
// replica's newest state and not a fork that reached the same id.
func sameAsLocal(path string, remote *ltx.FileInfo, remoteTrailer ltx.Trailer) bool {
	db := litestream.NewDB(path)
	minTXID, maxTXID, err := db.MaxLTX()
	if err != nil || remote.Level != 0 || remote.MinTXID != minTXID || remote.MaxTXID != maxTXID {
		return false
	}
	f, err := os.Open(db.LTXPath(0, minTXID, maxTXID))
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil || info.Size() < ltx.HeaderSize+ltx.TrailerSize {
		return false
	}
	if _, err := f.Seek(info.Size()-ltx.TrailerSize, io.SeekStart); err != nil {
		return false
	}
	local, err := readTrailer(f)
	return err == nil && local.FileChecksum == remoteTrailer.FileChecksum
}

// restore writes the replica's state at transaction top (its newest, as
// the caller read it) to path, which must not exist. With top 0 (an empty
// replica) it writes nothing. A replica that cannot be read, holds no
// snapshot the transactions can be restored from, or does not pass
// SQLite's quick integrity check is an error: starting empty would
// silently drop history.
func restore(ctx context.Context, client litestream.ReplicaClient, top ltx.TXID, opts Options) (err error) {
	if top == 0 {
		return nil
	}
	path, logger := opts.Path, opts.Logger
	if opts.RestoreProgress != nil {
		read, end := opts.RestoreProgress(path, restoreSize(ctx, client, top, logger))
		defer func() { end(err) }()
		client = &countingClient{ReplicaClient: client, read: read}
	}
	r := litestream.NewReplicaWithClient(nil, client)
	opt := litestream.NewRestoreOptions()
	opt.OutputPath = path
	opt.TXID = top
	opt.IntegrityCheck = litestream.IntegrityCheckQuick
	start := time.Now()
	if err := r.Restore(ctx, opt); err != nil {
		if errors.Is(err, litestream.ErrTxNotAvailable) || errors.Is(err, litestream.ErrNoSnapshots) {
			return fmt.Errorf("restore %s: the replica holds transactions up to %d but no snapshot they can be restored from: %w", path, top, err)
		}
		return fmt.Errorf("restore %s: %w", path, err)
	}
	var size int64
	if info, err := os.Stat(path); err == nil {
		size = info.Size()
	}
	logger.Info("restored from replica", "path", path, "txid", uint64(top), "bytes", size, "duration", time.Since(start).String())
	return nil
}

// restoreSize is the bytes of the files a restore to top reads, or -1
// when they cannot be listed (the restore then reports the error).
func restoreSize(ctx context.Context, client litestream.ReplicaClient, top ltx.TXID, logger *slog.Logger) int64 {
	plan, err := litestream.CalcRestorePlan(ctx, client, top, time.Time{}, logger)
	if err != nil {
		return -1
	}
	var n int64
	for _, info := range plan {
		n += info.Size
	}
	return n
}

// countingClient writes every byte a restore reads from its LTX files to
// read. Litestream's restore has no progress callback of its own.
type countingClient struct {
	litestream.ReplicaClient
	read io.Writer
}

func (c *countingClient) OpenLTXFile(ctx context.Context, level int, minTXID, maxTXID ltx.TXID, offset, size int64) (io.ReadCloser, error) {
	rc, err := c.ReplicaClient.OpenLTXFile(ctx, level, minTXID, maxTXID, offset, size)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(rc, c.read), rc}, nil
}

// metaPath is where Litestream keeps its local state of path.
func metaPath(path string) string {
	dir, file := filepath.Split(path)
	return filepath.Join(dir, "."+file+litestream.MetaDirSuffix)
}

// wipe removes path with its journal files and Litestream's local state.
func wipe(path string) error {
	var errs []error
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal", path + ".tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(metaPath(path)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// exists reports whether path exists.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
