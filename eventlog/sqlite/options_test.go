package sqlite_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

// A read-model database opened with ReadModelDSN runs with the pragmas its
// doc comment lists: synchronous NORMAL only under WAL, a bigger page
// cache, statement journals in memory, and automatic checkpoints unless
// they are off.
func TestReadModelDSN(t *testing.T) {
	for _, c := range []struct {
		name       string
		opts       sqlite.Options
		journal    string
		sync       int // 1 NORMAL, 2 FULL
		checkpoint int
	}{
		{"wal", sqlite.Options{}, "wal", 1, sqlite.ReadModelCheckpointPages},
		{"wal, FULL asked", sqlite.Options{Synchronous: sqlite.SyncFull}, "wal", 1, sqlite.ReadModelCheckpointPages},
		{"truncate keeps FULL", sqlite.Options{Journal: sqlite.JournalTruncate}, "truncate", 2, sqlite.ReadModelCheckpointPages},
		{"replicated", sqlite.Options{NoAutoCheckpoint: true}, "wal", 1, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, err := sql.Open("sqlite", c.opts.ReadModelDSN(filepath.Join(t.TempDir(), "read.db")))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = db.Close() }()
			db.SetMaxOpenConns(1)
			var journal string
			var sync, tempStore, cache, checkpoint int
			for _, q := range []struct {
				pragma string
				into   any
			}{
				{"journal_mode", &journal}, {"synchronous", &sync}, {"temp_store", &tempStore},
				{"cache_size", &cache}, {"wal_autocheckpoint", &checkpoint},
			} {
				if err := db.QueryRow("PRAGMA " + q.pragma).Scan(q.into); err != nil {
					t.Fatalf("PRAGMA %s: %v", q.pragma, err)
				}
			}
			if journal != c.journal || sync != c.sync || tempStore != 2 || cache != -sqlite.ReadModelCacheKiB || checkpoint != c.checkpoint {
				t.Errorf("journal %s, synchronous %d, temp_store %d, cache_size %d, wal_autocheckpoint %d; want %s, %d, 2, %d, %d",
					journal, sync, tempStore, cache, checkpoint, c.journal, c.sync, -sqlite.ReadModelCacheKiB, c.checkpoint)
			}
		})
	}
}
