package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/internal/syncbuf"
	"github.com/eventcore-go/eventcore/internal/tmpfs"
)

// TestFullDisk fills the filesystem under the log: appends (alone and in
// group commits) fail with ErrStorageFull and write nothing, the episode
// is logged once, and once space is freed the same store commits again and
// has every acknowledged append.
func TestFullDisk(t *testing.T) {
	dir := tmpfs.Mount(t, 4<<20)
	for _, journal := range []sqlite.Journal{sqlite.JournalWAL, sqlite.JournalTruncate} {
		t.Run(string(journal), func(t *testing.T) {
			testFullDisk(t, filepath.Join(dir, string(journal)), journal)
		})
	}
}

func testFullDisk(t *testing.T, dir string, journal sqlite.Journal) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	s := openStore(t, filepath.Join(dir, "events.db"), sqlite.Options{Journal: journal, Logger: logger})
	ctx := context.Background()
	// Events large enough that each append needs new pages.
	data := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 16<<10))
	appendN := func(stream string, n int) (acked []eventlog.AppendResult, errs []error) {
		type out struct {
			res eventlog.AppendResult
			err error
		}
		outs := make(chan out, n)
		for i := range n {
			go func() {
				st := sid(fmt.Sprintf("%s-%d", stream, i))
				res, err := s.Append(ctx, eventlog.AppendRequest{
					CommandID: st.String(),
					Expected:  []eventlog.ExpectedVersion{{Stream: st}},
					Events:    []eventlog.Event{{Stream: st, Type: "Padded", Data: []byte(data)}},
				})
				outs <- out{res, err}
			}()
		}
		for range n {
			o := <-outs
			if o.err != nil {
				errs = append(errs, o.err)
			} else {
				acked = append(acked, o.res)
			}
		}
		return acked, errs
	}
	before, errs := appendN("before", 8)
	if len(errs) > 0 {
		t.Fatalf("appends before the disk was full: %v", errs)
	}
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}

	filler := filepath.Join(dir, "filler")
	tmpfs.Fill(t, filler)
	for round := range 3 {
		acked, errs := appendN(fmt.Sprintf("full%d", round), 8)
		if len(acked) > 0 {
			t.Fatalf("round %d: %d appends acknowledged on a full disk", round, len(acked))
		}
		for _, err := range errs {
			if !errors.Is(err, eventlog.ErrStorageFull) {
				t.Fatalf("round %d: append on a full disk: %v; want ErrStorageFull", round, err)
			}
		}
	}
	if got, err := s.Head(ctx); err != nil || got != head {
		t.Fatalf("head %d (%v) after refused appends; want %d: something was written", got, err, head)
	}
	if n := strings.Count(logs.String(), "storage is full"); n != 1 {
		t.Fatalf("the full disk was logged %d times; want once:\n%s", n, logs.String())
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after, errs := appendN("after", 8)
	if len(errs) > 0 {
		t.Fatalf("appends after space was freed: %v", errs)
	}
	if n := strings.Count(logs.String(), "has space again"); n != 1 {
		t.Fatalf("the end of the episode was logged %d times; want once:\n%s", n, logs.String())
	}

	// A second episode is an episode of its own: logged when it begins and
	// when it ends, once each.
	tmpfs.Fill(t, filler)
	if acked, errs := appendN("again", 4); len(acked) > 0 || len(errs) != 4 {
		t.Fatalf("the second time the disk was full: %d acknowledged, %v", len(acked), errs)
	}
	if n := strings.Count(logs.String(), "storage is full"); n != 2 {
		t.Fatalf("two episodes were logged %d times; want twice:\n%s", n, logs.String())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	last, errs := appendN("last", 8)
	if len(errs) > 0 {
		t.Fatalf("appends after space was freed again: %v", errs)
	}
	if n := strings.Count(logs.String(), "has space again"); n != 2 {
		t.Fatalf("the ends of two episodes were logged %d times; want twice:\n%s", n, logs.String())
	}
	after = append(after, last...)
	for _, res := range append(before, after...) {
		got, found, err := s.LookupCommand(ctx, res.Records[0].Metadata.CommandID)
		if err != nil || !found || len(got) != 1 || got[0].Position != res.Records[0].Position {
			t.Fatalf("acknowledged append %s: %v %v %v", res.Records[0].Metadata.CommandID, got, found, err)
		}
	}
	if n := len(readAll(t, s)); n != 24 {
		t.Fatalf("%d events in the log; want the 24 acknowledged", n)
	}
	var check string
	if err := s.DB().QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q %v", check, err)
	}
}
