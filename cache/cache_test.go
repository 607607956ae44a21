package cache_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
)

func entry(state string, version eventlog.Version) cache.Entry {
	return cache.Entry{
		Streams: []eventlog.ExpectedVersion{{Stream: eventlog.MustStreamID("account-a"), Version: version}},
		State:   []byte(state),
	}
}

func TestGetPutDelete(t *testing.T) {
	c := cache.New(time.Minute, 1<<20)
	if _, ok := c.Get("k"); ok {
		t.Fatal("empty cache returned an entry")
	}
	c.Put("k", entry(`{"n":1}`, 1))
	got, ok := c.Get("k")
	if !ok || string(got.State) != `{"n":1}` || got.Streams[0].Version != 1 {
		t.Fatalf("Get = %+v, %v", got, ok)
	}
	c.Put("k", entry(`{"n":2}`, 2))
	if got, _ := c.Get("k"); string(got.State) != `{"n":2}` {
		t.Fatalf("replaced entry reads %s", got.State)
	}
	if st := c.Stats(); st.Entries != 1 {
		t.Fatalf("entries = %d after a replace, want 1", st.Entries)
	}
	c.Delete("k")
	if _, ok := c.Get("k"); ok {
		t.Fatal("deleted entry still there")
	}
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("after delete: %+v", st)
	}
}

func TestExpiry(t *testing.T) {
	c := cache.New(50*time.Millisecond, 1<<20)
	c.Put("k", entry("{}", 1))
	time.Sleep(120 * time.Millisecond)
	if _, ok := c.Get("k"); ok {
		t.Fatal("entry outlived its TTL")
	}
}

func TestMemoryCapEvictsOldestFirst(t *testing.T) {
	state := strings.Repeat("x", 1000)
	c := cache.New(time.Minute, 10_000)
	for i := range 30 {
		c.Put(fmt.Sprintf("k%02d", i), entry(state, eventlog.Version(i+1)))
		if st := c.Stats(); st.Bytes > st.MaxBytes {
			t.Fatalf("after put %d: %d bytes held, cap %d", i, st.Bytes, st.MaxBytes)
		}
	}
	st := c.Stats()
	if st.Evictions == 0 || st.Entries == 0 || st.Entries >= 30 {
		t.Fatalf("stats %+v: want some entries evicted and some kept", st)
	}
	if _, ok := c.Get("k29"); !ok {
		t.Fatal("the newest entry was evicted")
	}
	if _, ok := c.Get("k00"); ok {
		t.Fatal("the oldest entry survived")
	}
	// The kept entries are exactly the newest ones.
	for i := range 30 {
		_, ok := c.Get(fmt.Sprintf("k%02d", i))
		if want := i >= 30-st.Entries; ok != want {
			t.Fatalf("k%02d present = %v, want %v (entries %d)", i, ok, want, st.Entries)
		}
	}
}

func TestRewrittenEntryIsNotEvictedAsOld(t *testing.T) {
	state := strings.Repeat("x", 1000)
	c := cache.New(time.Minute, 5_000)
	c.Put("hot", entry(state, 1))
	for i := range 10 {
		c.Put(fmt.Sprintf("cold%d", i), entry(state, 1))
		c.Put("hot", entry(state, eventlog.Version(i+2))) // rewritten: now the newest
	}
	if _, ok := c.Get("hot"); !ok {
		t.Fatal("an entry rewritten after every other put was evicted")
	}
}

func TestOversizedEntryIsNotStored(t *testing.T) {
	c := cache.New(time.Minute, 100)
	c.Put("big", entry(strings.Repeat("x", 200), 1))
	if _, ok := c.Get("big"); ok {
		t.Fatal("an entry larger than the cap was stored")
	}
	if st := c.Stats(); st.Bytes != 0 {
		t.Fatalf("bytes = %d", st.Bytes)
	}
}

func TestCounters(t *testing.T) {
	c := cache.New(0, 0)
	c.RecordHit()
	c.RecordPartialHit(7)
	c.RecordPartialHit(3)
	c.RecordMiss()
	c.RecordInvalidation()
	st := c.Stats()
	if st.Hits != 1 || st.PartialHits != 2 || st.CaughtUp != 10 || st.Misses != 1 || st.Invalidations != 1 {
		t.Fatalf("stats %+v", st)
	}
	if st.TTL != cache.DefaultTTL || st.MaxBytes != cache.DefaultMaxBytes {
		t.Fatalf("defaults: %+v", st)
	}
}

func TestConcurrentUseKeepsAccounting(t *testing.T) {
	c := cache.New(20*time.Millisecond, 50_000)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				key := fmt.Sprintf("k%d", (g*7+i)%97)
				switch i % 5 {
				case 0:
					c.Delete(key)
				case 1, 2:
					c.Get(key)
				default:
					c.Put(key, entry(strings.Repeat("y", 100+i%300), eventlog.Version(i+1)))
				}
				if st := c.Stats(); st.Bytes > st.MaxBytes || st.Bytes < 0 {
					t.Errorf("bytes %d outside [0, %d]", st.Bytes, st.MaxBytes)
					return
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(60 * time.Millisecond) // let entries expire
	for i := range 97 {
		c.Get(fmt.Sprintf("k%d", i))
	}
	c.Put("last", entry("{}", 1))
	c.Delete("last")
	// Every remaining entry is expired; once go-cache's janitor removes them
	// the accounting must come back to zero.
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Entries != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("after expiry: %+v", st)
	}
}

// The doorkeeper admits a key the second time it is offered, or at once
// when it has an entry; a key offered once is only remembered. Turned
// off, it admits every key.
func TestDoorkeeperAdmitsRepeatedKeys(t *testing.T) {
	c := cache.New(time.Minute, 1<<20)
	if c.Admit("a") {
		t.Fatal("a key offered for the first time was admitted")
	}
	if !c.Admit("a") {
		t.Fatal("a key offered a second time was not admitted")
	}
	c.Put("b", cache.Entry{State: []byte(`{}`)})
	if !c.Admit("b") {
		t.Fatal("a key with an entry (a write-through) was not admitted")
	}
	for i := range 1000 {
		if c.Admit(fmt.Sprintf("once-%d", i)) {
			t.Fatalf("one-off key %d admitted", i)
		}
	}
	if !cache.New(time.Minute, 1<<20).AdmitEveryKey().Admit("c") {
		t.Fatal("AdmitEveryKey did not admit a new key")
	}
}
