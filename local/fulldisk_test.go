package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/tmpfs"
)

// A full event log disk: deposits answer 507 storage_full with
// Retry-After and write nothing, reads go on, the refusals are counted;
// once space is freed the same runner takes deposits again and every
// acknowledged one is in the log and in the balance.
func TestFullEventLogDisk(t *testing.T) {
	disk := tmpfs.Mount(t, 4<<20)
	dir := t.TempDir()
	s := start(t, testEnv(dir, "EVENTCORE_DB", filepath.Join(disk, "events.db"), "EVENTCORE_SYNC", "full"))
	do(t, "POST", s.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"attempts":1`)
	acked := map[string]int64{}
	deposit := func(key string, amount int64) answer {
		return do(t, "POST", s.url+"/commands/deposit", fmt.Sprintf(`{"account":"alice","amount":%d}`, amount), "Idempotency-Key", key)
	}
	for i := range 5 {
		key := fmt.Sprintf("before-%d", i)
		deposit(key, 10).want(t, 200, `"attempts":1`)
		acked[key] = 10
	}
	head := feedHead(t, s.url)

	filler := filepath.Join(disk, "filler")
	tmpfs.Fill(t, filler)
	const refused = 6
	for i := range refused {
		a := deposit(fmt.Sprintf("full-%d", i), 1000).want(t, 507, `"storage_full"`)
		if a.header.Get("Retry-After") == "" {
			t.Fatalf("507 without Retry-After: %v", a.header)
		}
	}
	if got := feedHead(t, s.url); got != head {
		t.Fatalf("the log moved from %d to %d on a full disk", head, got)
	}
	// Reads answer from what they have, their projection being on another disk.
	b := readBalance(t, s.url, fmt.Sprintf("?min_position=%d", head))
	if b.Balance != 50 {
		t.Fatalf("balance %d on a full disk; want 50", b.Balance)
	}
	metrics := do(t, "GET", s.url+"/metrics", "").body
	if m := regexp.MustCompile(`eventcore_storage_errors_total\{kind="full"\} (\d+)`).FindStringSubmatch(metrics); m == nil || m[1] != fmt.Sprint(refused) {
		t.Fatalf("eventcore_storage_errors_total{kind=\"full\"}: %v; want %d", m, refused)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		key := fmt.Sprintf("after-%d", i)
		deposit(key, 100).want(t, 200, `"attempts":1`)
		acked[key] = 100
	}
	keys := feedKeys(t, s.url)
	var want int64
	for key, amount := range acked {
		if len(keys[key]) != 1 {
			t.Fatalf("acknowledged deposit %s: positions %v in the log", key, keys[key])
		}
		want += amount
	}
	for key := range keys {
		if strings.HasPrefix(key, "full-") {
			t.Fatalf("deposit %s answered 507 but is in the log", key)
		}
	}
	if b := readBalance(t, s.url, fmt.Sprintf("?min_position=%d", feedHead(t, s.url))); b.Balance != want {
		t.Fatalf("balance %d; want %d", b.Balance, want)
	}
}

// A full read-model disk never blocks commands: deposits are acknowledged,
// plain reads answer what the projection has, a read that waits for a
// position the projection cannot reach answers 503 projection_behind at
// once, and the projection catches up once space is freed.
func TestFullReadModelDisk(t *testing.T) {
	disk := tmpfs.Mount(t, 4<<20)
	dir := t.TempDir()
	s := start(t, testEnv(dir, "EVENTCORE_READ_DB", filepath.Join(disk, "projections.db"), "EVENTCORE_PROJECTION_INTERVAL", "100ms"))
	do(t, "POST", s.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"attempts":1`)
	do(t, "POST", s.url+"/commands/deposit", `{"account":"alice","amount":10}`).want(t, 200, `"attempts":1`)
	readBalance(t, s.url, fmt.Sprintf("?min_position=%d", feedHead(t, s.url)))

	filler := filepath.Join(disk, "filler")
	tmpfs.Fill(t, filler)
	for range 5 {
		do(t, "POST", s.url+"/commands/deposit", `{"account":"alice","amount":10}`).want(t, 200, `"attempts":1`)
	}
	head := feedHead(t, s.url)
	if b := readBalance(t, s.url, ""); b.Balance != 10 {
		t.Fatalf("plain read on a full read-model disk: balance %d; want the projected 10", b.Balance)
	}
	began := time.Now()
	a := do(t, "GET", fmt.Sprintf("%s/accounts/alice?min_position=%d", s.url, head), "").want(t, 503, `"projection_behind"`)
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("projection_behind took %v", took)
	}
	_ = a
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if b := readBalance(t, s.url, fmt.Sprintf("?min_position=%d", head)); b.Balance != 60 {
		t.Fatalf("balance %d after space came back; want 60", b.Balance)
	}
}

// feedHead is the position of the log's last event, through GET /events.
func feedHead(t *testing.T, url string) uint64 {
	t.Helper()
	var head uint64
	for {
		a := do(t, "GET", fmt.Sprintf("%s/events?after=%d&limit=1000", url, head), "").want(t, 200, `"events"`)
		var page struct {
			Next uint64 `json:"next"`
		}
		if err := json.Unmarshal([]byte(a.body), &page); err != nil {
			t.Fatal(err)
		}
		if page.Next == head {
			return head
		}
		head = page.Next
	}
}

// readBalance reads alice's balance with the query given.
func readBalance(t *testing.T, url, query string) balance {
	t.Helper()
	a := do(t, "GET", url+"/accounts/alice"+query, "").want(t, 200, `"balance"`)
	var b balance
	if err := json.Unmarshal([]byte(a.body), &b); err != nil {
		t.Fatal(err)
	}
	return b
}
