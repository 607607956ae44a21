package replica_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/replica"
	"github.com/eventcore-go/eventcore/replica/replicatest"
)

// BenchmarkRestore measures a cold start's restore (what a new Lambda
// instance pays before its first command) as the log grows: a log of N
// events (appended 100 per transaction, each append synced), after one
// maintenance pass (compaction and a snapshot), restored into an empty
// directory from a file replica and from the S3 fake. It reports the
// restore's milliseconds and the database's size, beside the time to copy
// the same file with the filesystem (the floor of any restore here).
func BenchmarkRestore(b *testing.B) {
	s3 := replicatest.StartS3(b)
	for _, events := range []int{1_000, 10_000, 100_000} {
		for _, kind := range []string{"file", "s3"} {
			b.Run(fmt.Sprintf("events=%d/replica=%s", events, kind), func(b *testing.B) {
				ctx := context.Background()
				url := "file://" + filepath.Join(b.TempDir(), "replica")
				if kind == "s3" {
					url = s3.URL(fmt.Sprintf("restore-%d", events))
				}
				src := filepath.Join(b.TempDir(), "events.db")
				n, err := openNode(b, ctx, replica.Options{URL: url, Path: src})
				if err != nil {
					b.Fatal(err)
				}
				stream := eventlog.MustStreamID("bench-1")
				for i := 0; i < events; i += 100 {
					evs := make([]eventlog.Event, 100)
					for j := range evs {
						evs[j] = eventlog.Event{Stream: stream, Type: "Noted", Data: []byte(fmt.Sprintf(`{"i":%d,"pad":"0123456789abcdef0123456789abcdef"}`, i+j))}
					}
					expected := []eventlog.ExpectedVersion{{Stream: stream, Version: eventlog.Version(i)}}
					if _, err := n.store.Append(ctx, eventlog.AppendRequest{Expected: expected, Events: evs}); err != nil {
						b.Fatal(err)
					}
					if err := n.w.Sync(ctx); err != nil {
						b.Fatal(err)
					}
				}
				if err := n.w.Maintain(ctx); err != nil {
					b.Fatal(err)
				}
				if err := n.close(ctx); err != nil {
					b.Fatal(err)
				}
				info, err := os.Stat(src)
				if err != nil {
					b.Fatal(err)
				}
				copyMs := copyMillis(b, src)
				b.ResetTimer()
				for b.Loop() {
					dst := filepath.Join(b.TempDir(), "restored.db")
					f, err := replica.OpenFollower(ctx, replica.Options{URL: url, Path: dst}, sqlite.Options{})
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if h, err := f.Head(ctx); err != nil || int(h) != events {
						b.Fatalf("restored head %d, %v; want %d", h, err, events)
					}
					_ = f.Close()
					b.StartTimer()
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/restore")
				b.ReportMetric(float64(info.Size())/(1<<20), "MiB")
				b.ReportMetric(copyMs, "copy-ms")
			})
		}
	}
}

// copyMillis is the mean time of copying path to a new file and fsyncing
// it, over three copies.
func copyMillis(b *testing.B, path string) float64 {
	b.Helper()
	start := time.Now()
	for range 3 {
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(filepath.Join(b.TempDir(), "copy.db"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
	return float64(time.Since(start).Microseconds()) / 3000
}
