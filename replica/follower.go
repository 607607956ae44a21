package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"sync"
	"sync/atomic"

	"github.com/benbjohnson/litestream"
	"github.com/superfly/ltx"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// Follower is a read-only event log kept up to date from another
// process's replica: a full restore when it opens (and whenever the
// replica's incremental files no longer reach back to where it stands),
// then, at each CatchUp, only the transactions written since.
//
// It implements eventlog.Store for reading; Append fails with
// sqlite.ErrReadOnly. Reads may run concurrently with each other and with
// the part of CatchUp that asks the replica what is new and downloads it;
// only while it changes the file does CatchUp wait for reads in progress
// and hold new ones back. One CatchUp runs at a time. Before the replica
// holds anything, the log reads as empty.
type Follower struct {
	opts      Options
	storeOpts sqlite.Options
	client    litestream.ReplicaClient

	// catchMu serialises CatchUp; txid and checksum change only under
	// both it and mu.
	catchMu  sync.Mutex
	mu       sync.RWMutex
	store    *sqlite.Store // nil while the replica is empty
	txid     ltx.TXID      // last transaction applied
	checksum ltx.Checksum  // database checksum after it, 0 when unknown
	broken   error         // the last full restore's failure, until one succeeds
	closed   bool

	fullRestores, applied atomic.Int64
}

var _ eventlog.Store = (*Follower)(nil)

// OpenFollower restores the replica at opts.URL into opts.Path (replacing
// whatever is there) and opens it read-only. Errors: a URL that cannot be
// used, a replica that cannot be read or does not restore to a sound
// database.
func OpenFollower(ctx context.Context, opts Options, storeOpts sqlite.Options) (*Follower, error) {
	opts = opts.withDefaults()
	client, err := newClient(ctx, opts.URL, opts.Logger)
	if err != nil {
		return nil, err
	}
	f := &Follower{opts: opts, storeOpts: storeOpts, client: client}
	if err := f.fullRestore(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Stats returns how many full restores and incremental files the follower
// has applied, for tests and logs.
func (f *Follower) Stats() (fullRestores, incremental int64) {
	return f.fullRestores.Load(), f.applied.Load()
}

// fullRestore replaces the local copy with the replica's newest state;
// f.mu is held or f is not shared yet.
func (f *Follower) fullRestore(ctx context.Context) (err error) {
	defer func() {
		// Until a restore succeeds, reads fail instead of showing a log
		// that is empty or partial.
		f.broken = err
		if err != nil {
			f.broken = fmt.Errorf("%w: the local copy of the log could not be restored: %w", eventlog.ErrUnavailable, err)
		}
	}()
	if f.store != nil {
		_ = f.store.Close()
		f.store = nil
	}
	// Until the restore succeeds the copy holds nothing: the next CatchUp
	// restores again.
	f.txid, f.checksum = 0, 0
	top, err := head(ctx, f.client)
	if err != nil {
		return fmt.Errorf("replica %s: %w", redact(f.opts.URL), err)
	}
	if err := wipe(f.opts.Path); err != nil {
		return err
	}
	if top == 0 {
		return nil
	}
	// Exactly top: incremental catch-up continues from it.
	if err := restore(ctx, f.client, top, f.opts); err != nil {
		return err
	}
	if err := rollbackJournalHeader(f.opts.Path); err != nil {
		return err
	}
	store, err := sqlite.OpenReadOnly(ctx, f.opts.Path, f.storeOpts)
	if err != nil {
		return err
	}
	f.store, f.txid = store, top
	f.fullRestores.Add(1)
	return nil
}

// rollbackJournalHeader marks the restored file as a rollback-journal
// database (header bytes 18 and 19), so that it opens read-only without
// WAL shared memory.
func rollbackJournalHeader(path string) error {
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if _, err := file.WriteAt([]byte{1, 1}, 18); err != nil {
		_ = file.Close()
		return err
	}
	return errors.Join(file.Sync(), file.Close())
}

// CatchUp applies the transactions the replica received since the last
// call and reports how many LTX files it applied, with one listing of the
// level-0 files after its transaction when nothing is new. When those
// files no longer start right after the local copy (compacted away), or
// the chain of checksums does not continue, it restores fully instead. On an error the local copy is left readable at its previous
// state, or empty until the next CatchUp after a failed restore.
func (f *Follower) CatchUp(ctx context.Context) (int, error) {
	f.catchMu.Lock()
	defer f.catchMu.Unlock()
	f.mu.RLock()
	closed, txid := f.closed, f.txid
	f.mu.RUnlock()
	if closed {
		return 0, eventlog.ErrClosed
	}
	if txid == 0 {
		f.mu.Lock()
		defer f.mu.Unlock()
		if err := f.fullRestore(ctx); err != nil {
			return 0, err
		}
		if f.txid == 0 {
			return 0, nil
		}
		return 1, nil
	}
	itr, err := f.client.LTXFiles(ctx, 0, txid+1, false)
	if err != nil {
		return 0, fmt.Errorf("replica %s: %w", redact(f.opts.URL), err)
	}
	var infos []*ltx.FileInfo
	for itr.Next() {
		if it := itr.Item(); it.MaxTXID > txid {
			copied := *it
			infos = append(infos, &copied)
		}
	}
	if err := itr.Close(); err != nil {
		return 0, fmt.Errorf("replica %s: %w", redact(f.opts.URL), err)
	}
	if len(infos) == 0 {
		// Nothing newer anywhere: Litestream writes every transaction as a
		// level-0 file of its own and its retention never deletes the
		// newest level-0 file, so a newer transaction would be listed here.
		return 0, nil
	}
	next, gap := txid+1, false
	for _, info := range infos {
		gap = gap || info.MinTXID != next // those files were compacted away
		next = info.MaxTXID + 1
	}
	var files [][]byte
	if !gap {
		// Downloaded before the reads are held back.
		files = f.download(ctx, infos)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, eventlog.ErrClosed
	}
	if gap {
		return 1, f.fullRestore(ctx)
	}
	if f.store != nil {
		if err := f.store.Close(); err != nil {
			return 0, err
		}
		f.store = nil
	}
	n, applyErr := f.apply(ctx, infos, files)
	if applyErr != nil {
		f.opts.Logger.Warn("incremental catch-up failed; restoring fully", "error", applyErr.Error())
		if err := f.fullRestore(ctx); err != nil {
			return n, errors.Join(applyErr, err)
		}
		return n, nil
	}
	store, err := sqlite.OpenReadOnly(ctx, f.opts.Path, f.storeOpts)
	if err != nil {
		return n, errors.Join(err, f.fullRestore(ctx))
	}
	f.store = store
	return n, nil
}

// maxPrefetch bounds what CatchUp downloads before it holds the reads
// back; larger catch-ups stream the files while holding them.
const maxPrefetch = 16 << 20

// download reads the files of infos into memory, or returns nil when they
// are larger than maxPrefetch in all or one cannot be read (apply then
// reads them from the replica itself, and reports the error).
func (f *Follower) download(ctx context.Context, infos []*ltx.FileInfo) [][]byte {
	var total int64
	for _, info := range infos {
		total += info.Size
	}
	if total > maxPrefetch {
		return nil
	}
	files := make([][]byte, len(infos))
	for i, info := range infos {
		rc, err := f.client.OpenLTXFile(ctx, info.Level, info.MinTXID, info.MaxTXID, 0, 0)
		if err != nil {
			return nil
		}
		files[i], err = io.ReadAll(io.LimitReader(rc, maxPrefetch+1))
		_ = rc.Close()
		if err != nil || len(files[i]) > maxPrefetch {
			return nil
		}
	}
	return files
}

// apply writes the pages of each file into the local copy, in order:
// from files (downloaded beforehand) when not nil, else from the replica.
func (f *Follower) apply(ctx context.Context, infos []*ltx.FileInfo, files [][]byte) (int, error) {
	file, err := os.OpenFile(f.opts.Path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer func() { _ = file.Close() }()
	for i, info := range infos {
		var src io.ReadCloser
		if files != nil {
			src = io.NopCloser(bytes.NewReader(files[i]))
		} else if src, err = f.client.OpenLTXFile(ctx, info.Level, info.MinTXID, info.MaxTXID, 0, 0); err != nil {
			return i, fmt.Errorf("open ltx %d-%d: %w", info.MinTXID, info.MaxTXID, err)
		}
		err := f.applyOne(file, src, info)
		_ = src.Close()
		if err != nil {
			return i, fmt.Errorf("apply ltx %d-%d: %w", info.MinTXID, info.MaxTXID, err)
		}
		f.applied.Add(1)
	}
	return len(infos), file.Sync()
}

func (f *Follower) applyOne(file *os.File, src io.Reader, info *ltx.FileInfo) error {
	dec := ltx.NewDecoder(src)
	if err := dec.DecodeHeader(); err != nil {
		return err
	}
	hdr := dec.Header()
	// Litestream may write files without database checksums (both zero);
	// when it does write them, they must chain.
	if f.checksum != 0 && hdr.PreApplyChecksum != 0 && hdr.PreApplyChecksum != f.checksum {
		return fmt.Errorf("checksum chain broken: file starts from %s, the local copy is at %s", hdr.PreApplyChecksum, f.checksum)
	}
	data := make([]byte, hdr.PageSize)
	for {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, data); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		if ph.Pgno == 1 && len(data) >= 20 {
			data[18], data[19] = 1, 1 // stay a rollback-journal file
		}
		if _, err := file.WriteAt(data, int64(ph.Pgno-1)*int64(hdr.PageSize)); err != nil {
			return err
		}
	}
	if err := dec.Close(); err != nil {
		return err
	}
	if hdr.Commit > 0 {
		if err := file.Truncate(int64(hdr.Commit) * int64(hdr.PageSize)); err != nil {
			return err
		}
	}
	f.txid, f.checksum = info.MaxTXID, dec.Trailer().PostApplyChecksum
	return nil
}

// Close closes the local copy. It is idempotent.
func (f *Follower) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.store == nil {
		return nil
	}
	err := f.store.Close()
	f.store = nil
	return err
}

// read runs fn on the current store, or reports that the log is empty.
func (f *Follower) read() (*sqlite.Store, func(), error) {
	f.mu.RLock()
	if f.closed {
		f.mu.RUnlock()
		return nil, nil, eventlog.ErrClosed
	}
	if f.broken != nil {
		err := f.broken
		f.mu.RUnlock()
		return nil, nil, err
	}
	return f.store, f.mu.RUnlock, nil
}

// Append implements eventlog.Store: a follower never writes.
func (f *Follower) Append(context.Context, eventlog.AppendRequest) (eventlog.AppendResult, error) {
	return eventlog.AppendResult{}, sqlite.ErrReadOnly
}

// ReadStream implements eventlog.Store. The follower is held for reading
// for the whole iteration, so CatchUp waits for it to end.
func (f *Follower) ReadStream(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) iter.Seq2[eventlog.Record, error] {
	return func(yield func(eventlog.Record, error) bool) {
		s, done, err := f.read()
		if err != nil {
			yield(eventlog.Record{}, err)
			return
		}
		defer done()
		if s == nil {
			return
		}
		for rec, err := range s.ReadStream(ctx, stream, after) {
			if !yield(rec, err) {
				return
			}
		}
	}
}

// StreamVersions implements eventlog.Store.
func (f *Follower) StreamVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	s, done, err := f.read()
	if err != nil {
		return nil, err
	}
	defer done()
	if s == nil {
		return make([]eventlog.Version, len(streams)), nil
	}
	return s.StreamVersions(ctx, streams)
}

// ReadFeed implements eventlog.Store.
func (f *Follower) ReadFeed(ctx context.Context, q eventlog.FeedQuery) ([]eventlog.Record, error) {
	s, done, err := f.read()
	if err != nil {
		return nil, err
	}
	defer done()
	if s == nil {
		return nil, q.Validate()
	}
	return s.ReadFeed(ctx, q)
}

// LookupCommand implements eventlog.Store.
func (f *Follower) LookupCommand(ctx context.Context, commandID string) ([]eventlog.Record, bool, error) {
	s, done, err := f.read()
	if err != nil {
		return nil, false, err
	}
	defer done()
	if s == nil {
		return nil, false, nil
	}
	return s.LookupCommand(ctx, commandID)
}

// Head implements eventlog.Store.
func (f *Follower) Head(ctx context.Context) (eventlog.Position, error) {
	s, done, err := f.read()
	if err != nil {
		return 0, err
	}
	defer done()
	if s == nil {
		return 0, nil
	}
	return s.Head(ctx)
}
