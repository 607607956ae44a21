package executor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
)

// TestStreamEventsUnderConcurrentTransfers: goroutines sharing one cache
// run transfers between random pairs of a few accounts, so that commands
// fold each other's streams from memory while others extend them, and
// conflict (no admission). The money is conserved and every cold read
// agrees with what the warm commands decided; a command started cold on the
// final log decides as a warm one does.
func TestStreamEventsUnderConcurrentTransfers(t *testing.T) {
	const accounts, goroutines, each = 6, 16, 40
	store := openBankStore(t)
	ctx := context.Background()
	name := func(i int) string { return fmt.Sprintf("s%d", i) }
	for i := range accounts {
		if _, err := bank.Execute(ctx, store, bank.OpenAccount{Account: name(i), Owner: "owner"}, cold); err != nil {
			t.Fatal(err)
		}
		if _, err := bank.Execute(ctx, store, bank.Deposit{Account: name(i), Amount: 1000}, cold); err != nil {
			t.Fatal(err)
		}
	}
	c := cache.New(time.Minute, 1<<20).AdmitEveryKey()
	opts := executor.Options{Cache: c, SnapshotThreshold: -1,
		Retry: executor.ExponentialBackoff{MaxRetries: 1000, Initial: 100 * time.Microsecond, Max: 5 * time.Millisecond, Jitter: 1}}
	codec := bank.NewCodec()
	var wg sync.WaitGroup
	var mu sync.Mutex
	recalled := 0
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for k := range each {
				from := rng.IntN(accounts)
				to := (from + 1 + rng.IntN(accounts-1)) % accounts
				transfer := bank.Transfer{ID: fmt.Sprintf("t-%d-%d", g, k), From: name(from), To: name(to), Amount: 1 + rng.Int64N(5)}
				res, err := executor.Execute[bank.State](ctx, store, codec, transfer, opts)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				recalled += res.Recalled
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if recalled == 0 {
		t.Fatal("no command folded cached stream events")
	}
	// Every stream's cached events are the store's, decoded.
	var total int64
	for i := range accounts {
		stream := bank.StreamOf(name(i))
		var stored []executor.Event[bank.Event]
		var balance bank.State
		for r, err := range store.ReadStream(ctx, stream, 0) {
			if err != nil {
				t.Fatal(err)
			}
			ev, err := codec.Decode(r)
			if err != nil {
				t.Fatal(err)
			}
			stored = append(stored, ev)
			balance.Apply(ev.Data)
		}
		cached, ok := executor.CachedStreamEvents(c, codec, stream)
		if !ok {
			t.Errorf("%s: no cached events; cache %+v", stream, c.Stats())
		}
		if len(cached) > len(stored) {
			t.Fatalf("%s: %d events cached, %d stored", stream, len(cached), len(stored))
		}
		for v, ev := range cached {
			if ev.Version != stored[v].Version || ev.Position != stored[v].Position || !reflect.DeepEqual(ev.Data, stored[v].Data) {
				t.Fatalf("%s version %d: cached %+v, stored %+v", stream, v+1, ev, stored[v])
			}
		}
		b := balance.Account(name(i)).Balance
		if b < 0 {
			t.Errorf("%s: balance %d", name(i), b)
		}
		total += b
	}
	if total != accounts*1000 {
		t.Fatalf("the accounts hold %d, want %d", total, accounts*1000)
	}
}
