package sqlite

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Synchronous is SQLite's synchronous level for commits.
type Synchronous string

const (
	// SyncFull fsyncs every commit: an acknowledged append survives power
	// loss. The default.
	SyncFull Synchronous = "full"
	// SyncNormal does not fsync on commit in WAL mode: an acknowledged
	// append survives a crash of the process but may be lost on power loss.
	SyncNormal Synchronous = "normal"
)

// Journal is SQLite's journal mode.
type Journal string

const (
	// JournalWAL lets readers run beside the writer. The default; it needs
	// shared memory, so the file must be on a local filesystem.
	JournalWAL Journal = "wal"
	// JournalTruncate is a rollback journal, for network filesystems (EFS)
	// where WAL cannot work. Readers and the writer block each other.
	JournalTruncate Journal = "truncate"
)

// Defaults of Options.
const (
	DefaultBusyTimeout = 10 * time.Second
	DefaultReaders     = 4
	DefaultMaxBatch    = 128
)

// Options configure a Store. The zero value is the default: WAL, synchronous
// FULL, a busy timeout of DefaultBusyTimeout.
type Options struct {
	Synchronous Synchronous   // "" = SyncFull
	Journal     Journal       // "" = JournalWAL
	BusyTimeout time.Duration // 0 = DefaultBusyTimeout; how long to wait for another process's lock
	Readers     int           // 0 = DefaultReaders; size of the reader connection pool
	// MaxBatch bounds how many appends that are waiting together the writer
	// commits in one transaction (group commit); 1 commits each alone.
	// 0 = DefaultMaxBatch.
	MaxBatch int
	// NoAutoCheckpoint turns SQLite's automatic WAL checkpoints off on the
	// writer connection, for a file whose checkpoints are run by a
	// replicator (Litestream) that must see every WAL frame first.
	NoAutoCheckpoint bool
	// Logger receives the store's own reports (a full disk, once per
	// episode; an I/O error and the reopen after it). nil = slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Synchronous == "" {
		o.Synchronous = SyncFull
	}
	if o.Journal == "" {
		o.Journal = JournalWAL
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.Readers == 0 {
		o.Readers = DefaultReaders
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch o.Synchronous {
	case SyncFull, SyncNormal:
	default:
		return o, fmt.Errorf("sqlite: synchronous %q is not full or normal", o.Synchronous)
	}
	switch o.Journal {
	case JournalWAL, JournalTruncate:
	default:
		return o, fmt.Errorf("sqlite: journal %q is not wal or truncate", o.Journal)
	}
	if o.BusyTimeout < 0 || o.Readers < 0 || o.MaxBatch < 0 {
		return o, fmt.Errorf("sqlite: negative option")
	}
	return o, nil
}

// ParseSynchronous parses "full" or "normal" (any case).
func ParseSynchronous(s string) (Synchronous, error) {
	switch v := Synchronous(strings.ToLower(s)); v {
	case SyncFull, SyncNormal:
		return v, nil
	}
	return "", fmt.Errorf("%q is not full or normal", s)
}

// ParseJournal parses "wal" or "truncate" (any case).
func ParseJournal(s string) (Journal, error) {
	switch v := Journal(strings.ToLower(s)); v {
	case JournalWAL, JournalTruncate:
		return v, nil
	}
	return "", fmt.Errorf("%q is not wal or truncate", s)
}

// DSN returns the modernc.org/sqlite data source name that opens path with
// these options' pragmas. txlock is "immediate" for the writer and
// "deferred" for readers. It is exported so that baselines and tools open
// the file exactly as the store does. path must not contain '?'.
func (o Options) DSN(path string, txlock string) string {
	o, _ = o.withDefaults()
	q := []string{
		fmt.Sprintf("_busy_timeout=%d", o.BusyTimeout.Milliseconds()),
		"_journal_mode=" + string(o.Journal),
		"_synchronous=" + string(o.Synchronous),
		"_txlock=" + txlock,
	}
	if o.NoAutoCheckpoint {
		q = append(q, "_pragma=wal_autocheckpoint(0)")
	}
	return path + "?" + strings.Join(q, "&")
}

// Pragmas of a read-model database (see ReadModelDSN).
const (
	// ReadModelCacheKiB is the page cache of each connection, in KiB
	// (SQLite's default is 2 MiB): a batch's writes land all over the read
	// models' B-trees.
	ReadModelCacheKiB = 16 << 10
	// ReadModelCheckpointPages is the WAL size, in pages, that triggers an
	// automatic checkpoint (SQLite's default is 1,000).
	ReadModelCheckpointPages = 4000
)

// ReadModelDSN returns the data source name of a projection runner's
// read-model database at path, which holds only what the event log can
// rebuild, and whose checkpoints commit with the rows they cover. With
// these options' journal and busy timeout, it differs from the event
// log's DSN (writer, "immediate") in three pragmas:
//   - in WAL mode, synchronous NORMAL whatever o.Synchronous says: a
//     commit is not fsynced, so a power loss can take back the last
//     batches, each with its checkpoint, and they are applied again from
//     the log (a crash of the process loses nothing; WAL keeps the file
//     consistent either way). A rollback journal keeps o.Synchronous,
//     whose NORMAL could corrupt the file on power loss;
//   - a page cache of ReadModelCacheKiB per connection;
//   - temporary files in memory (temp_store): the statement journal a
//     multi-row write keeps so that it can fail alone, and sorts;
//
// and, unless o.NoAutoCheckpoint turns them off, automatic checkpoints
// every ReadModelCheckpointPages pages of WAL. path must not contain '?'.
func (o Options) ReadModelDSN(path string) string {
	o, _ = o.withDefaults()
	if o.Journal == JournalWAL {
		o.Synchronous = SyncNormal
	}
	dsn := o.DSN(path, "immediate") + fmt.Sprintf("&_pragma=cache_size(-%d)&_pragma=temp_store(memory)", ReadModelCacheKiB)
	if !o.NoAutoCheckpoint {
		dsn += fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", ReadModelCheckpointPages)
	}
	return dsn
}
