package storekit

import (
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
)

func TestGateClosesOnceAfterCallsInProgress(t *testing.T) {
	var g Gate
	if err := g.Enter(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan bool)
	go func() { closed <- g.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a call was in progress")
	case <-time.After(20 * time.Millisecond):
	}
	g.Leave()
	if !<-closed {
		t.Fatal("the first Close reported the gate closed before")
	}
	if err := g.Enter(); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("Enter after Close: %v", err)
	}
	if g.Close() {
		t.Fatal("a second Close reported the first")
	}
}

// Close returns only once every call that entered has left, however many
// enter at once; none enters after it.
func TestGateConcurrentCalls(t *testing.T) {
	var g Gate
	var inside atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 200 {
				if g.Enter() == nil {
					inside.Add(1)
					time.Sleep(100 * time.Microsecond)
					inside.Add(-1)
					g.Leave()
				}
			}
		})
	}
	time.Sleep(time.Millisecond)
	g.Close()
	if n := inside.Load(); n != 0 {
		t.Errorf("%d calls still inside after Close", n)
	}
	wg.Wait()
}

func TestSnapshotRoundTrip(t *testing.T) {
	snap := eventlog.Snapshot{Key: "k", Streams: []eventlog.ExpectedVersion{
		{Stream: eventlog.MustStreamID("a"), Version: 3}, {Stream: eventlog.MustStreamID("b"), Version: 4},
	}}
	enc, total, err := EncodeSnapshot(snap)
	if err != nil || total != 7 {
		t.Fatalf("encode: %v, total %d", err, total)
	}
	got, err := DecodeSnapshotStreams(enc)
	if err != nil || !reflect.DeepEqual(got, snap.Streams) {
		t.Fatalf("decode: %v %v", got, err)
	}
	for _, bad := range []eventlog.Snapshot{{}, {Key: "k"}, {Key: "k", Streams: []eventlog.ExpectedVersion{{Version: 1}}}} {
		if _, _, err := EncodeSnapshot(bad); !errors.Is(err, eventlog.ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func FuzzDecodeSnapshotStreams(f *testing.F) {
	f.Add([]byte(`[{"stream":"a","version":1}]`))
	f.Add([]byte(`[{"stream":"","version":1}]`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		streams, err := DecodeSnapshotStreams(data)
		if err != nil {
			return
		}
		for _, s := range streams {
			if s.Stream.IsZero() {
				t.Fatalf("decoded an empty stream id from %q", data)
			}
		}
	})
}
