package storekit

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A call withdrawn before the committer takes it answers ctx's error and
// cannot be taken; a taken one answers its outcome even when ctx ends.
func TestHandoffWithdrawOrTake(t *testing.T) {
	var withdrawn Handoff[int]
	withdrawn.Init()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := withdrawn.Await(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("withdrawn call: %v", err)
	}
	if withdrawn.Take() {
		t.Fatal("the committer took a withdrawn call")
	}

	var taken Handoff[int]
	taken.Init()
	if !taken.Take() {
		t.Fatal("a queued call could not be taken")
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		cancel()
		time.Sleep(20 * time.Millisecond)
		taken.Deliver(7)
	}()
	if out, err := taken.Await(ctx); err != nil || out != 7 {
		t.Fatalf("taken call answered %d, %v; want its outcome 7", out, err)
	}
}
