package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/eventlogtest"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/internal/testproc"
)

// Environment of a child process started by these tests.
const (
	childURLEnv  = "EVENTCORE_PGTEST_CHILD_URL"
	childNameEnv = "EVENTCORE_PGTEST_CHILD_NAME"
	childNEnv    = "EVENTCORE_PGTEST_CHILD_N" // appends per goroutine; 0 = until killed
)

const (
	transferStreams    = 6
	transferGoroutines = 8
)

// transfer appends one event to each of two distinct random streams of
// transferStreams, at the versions it read, under command id id, reading
// again after each conflict. It returns the first position recorded.
func transfer(ctx context.Context, s eventlog.Store, rng *rand.Rand, id string) (eventlog.Position, error) {
	a := rng.IntN(transferStreams)
	b := (a + 1 + rng.IntN(transferStreams-1)) % transferStreams
	streams := []eventlog.StreamID{sid(fmt.Sprintf("account-%d", a)), sid(fmt.Sprintf("account-%d", b))}
	for {
		vs, err := s.StreamVersions(ctx, streams)
		if err != nil {
			return 0, err
		}
		res, err := s.Append(ctx, eventlog.AppendRequest{
			Expected: []eventlog.ExpectedVersion{{Stream: streams[0], Version: vs[0]}, {Stream: streams[1], Version: vs[1]}},
			Events: []eventlog.Event{
				{Stream: streams[0], Type: "Debited", Data: json.RawMessage(`{"amount":1}`)},
				{Stream: streams[1], Type: "Credited", Data: json.RawMessage(`{"amount":1}`)},
			},
			CommandID: id,
		})
		var conflict *eventlog.ConflictError
		switch {
		case err == nil:
			return res.Records[0].Position, nil
		case errors.As(err, &conflict) && errors.Is(err, eventlog.ErrConflict):
			continue
		default:
			return 0, err
		}
	}
}

// runTransfers runs transferGoroutines goroutines of n transfers each (n = 0:
// until ctx ends) and calls ack for each acknowledged one.
func runTransfers(ctx context.Context, s eventlog.Store, name string, n int, ack func(id string, pos eventlog.Position)) error {
	var wg sync.WaitGroup
	errs := make([]error, transferGoroutines)
	for g := range transferGoroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for i := 0; n == 0 || i < n; i++ {
				id := fmt.Sprintf("%s/%d/%d", name, g, i)
				pos, err := transfer(ctx, s, rng, id)
				if err != nil {
					if ctx.Err() == nil {
						errs[g] = fmt.Errorf("%s: %w", id, err)
					}
					return
				}
				ack(id, pos)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// TestChildProcess is the body of the child processes of the tests below;
// it does nothing unless started by one. It prints "ack ID POSITION" for
// every acknowledged transfer and "done" at the end.
func TestChildProcess(t *testing.T) {
	url := os.Getenv(childURLEnv)
	if url == "" {
		t.Skip("runs only as a child process of TestProcesses and TestKilledWriter")
	}
	n, _ := strconv.Atoi(os.Getenv(childNEnv))
	s, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	err = runTransfers(context.Background(), s, os.Getenv(childNameEnv), n, func(id string, pos eventlog.Position) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("ack %s %d\n", id, pos)
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("done")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// acks collects acknowledged transfers: command id -> first position.
type acks struct {
	mu sync.Mutex
	m  map[string]eventlog.Position
}

func (a *acks) add(t testing.TB, id string, pos eventlog.Position) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.m[id]; dup {
		t.Errorf("command %s acknowledged twice", id)
	}
	a.m[id] = pos
}

// readChild records the child's acks until it prints "done" or its output
// ends, calling each after every ack.
func readChild(t testing.TB, c *testproc.Child, a *acks, each func()) bool {
	for c.Lines.Scan() {
		line := c.Lines.Text()
		if line == "done" {
			return true
		}
		if f := strings.Fields(line); len(f) == 3 && f[0] == "ack" {
			pos, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				t.Errorf("child line %q: %v", line, err)
			}
			a.add(t, f[1], eventlog.Position(pos))
			if each != nil {
				each()
			}
		}
	}
	return false
}

// checkLog checks the whole log: positions 1..n without gaps (count =
// max = head), streams' versions without gaps, each acknowledged transfer
// recorded exactly once at the position its Append returned, and nothing
// recorded twice.
func checkLog(t *testing.T, s *postgres.Store, a *acks) {
	t.Helper()
	ctx := context.Background()
	var count, maxPos, head int64
	if err := s.Pool().QueryRow(ctx, `SELECT count(*), COALESCE(max(position), 0), (SELECT position FROM log_head) FROM events`).Scan(&count, &maxPos, &head); err != nil {
		t.Fatal(err)
	}
	if count != maxPos || head != maxPos {
		t.Fatalf("count(*) = %d, max(position) = %d, head = %d: positions are not gapless", count, maxPos, head)
	}
	var feed []eventlog.Record
	q := eventlog.FeedQuery{Limit: eventlog.MaxFeedLimit}
	for {
		page, err := s.ReadFeed(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		feed = append(feed, page...)
		if len(page) < q.Limit {
			break
		}
		q.After = page[len(page)-1].Position
	}
	eventlogtest.CheckLog(t, feed)
	byCommand := map[string][]eventlog.Position{}
	for _, r := range feed {
		byCommand[r.Metadata.CommandID] = append(byCommand[r.Metadata.CommandID], r.Position)
	}
	for id, ps := range byCommand {
		if len(ps) != 2 || ps[1] != ps[0]+1 {
			t.Errorf("command %s recorded at positions %v, want two consecutive", id, ps)
		}
	}
	for id, pos := range a.m {
		ps := byCommand[id]
		if len(ps) == 0 {
			t.Errorf("acknowledged command %s is missing", id)
		} else if ps[0] != pos {
			t.Errorf("acknowledged command %s at position %d, recorded at %d", id, pos, ps[0])
		}
	}
	t.Logf("%d events, %d commands recorded, %d acknowledged", count, len(byCommand), len(a.m))
}

// TestProcesses appends transfers over a few shared streams from this
// process and two child processes at once.
func TestProcesses(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := openStore(t, url, postgres.Options{})
	const perGoroutine = 40
	a := &acks{m: map[string]eventlog.Position{}}
	var wg sync.WaitGroup
	for p := range 2 {
		child := testproc.Start(t, "TestChildProcess", []string{
			childURLEnv + "=" + url, childNameEnv + "=child" + strconv.Itoa(p), childNEnv + "=" + strconv.Itoa(perGoroutine)})
		wg.Go(func() {
			if !readChild(t, child, a, nil) {
				t.Errorf("child %d did not finish: %s", p, child.Stderr())
			}
			if err := child.CloseAndWait(); err != nil {
				t.Errorf("child %d: %v: %s", p, err, child.Stderr())
			}
		})
	}
	if err := runTransfers(context.Background(), s, "parent", perGoroutine, func(id string, pos eventlog.Position) { a.add(t, id, pos) }); err != nil {
		t.Error(err)
	}
	wg.Wait()
	if want := 3 * transferGoroutines * perGoroutine; len(a.m) != want {
		t.Errorf("%d transfers acknowledged, want %d", len(a.m), want)
	}
	checkLog(t, s, a)
}

// TestKilledWriter kills a writer process with SIGKILL in the middle of
// its appends: what it had acknowledged is in the log, positions have no
// gap, and appends after the restart continue from the head.
func TestKilledWriter(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := &acks{m: map[string]eventlog.Position{}}
	for round := range 3 {
		child := testproc.Start(t, "TestChildProcess", []string{
			childURLEnv + "=" + url, childNameEnv + "=victim" + strconv.Itoa(round), childNEnv + "=0"})
		seen := 0
		killAt := 100 + rand.IntN(200)
		readChild(t, child, a, func() {
			if seen++; seen == killAt {
				if err := child.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Errorf("kill: %v", err)
				}
			}
		})
		_ = child.CloseAndWait()
		if seen < killAt {
			t.Fatalf("round %d: the child stopped after %d acks: %s", round, seen, child.Stderr())
		}
	}
	s := openStore(t, url, postgres.Options{})
	checkLog(t, s, a)
	head, err := s.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	res := appendOne(t, s, sid("after-restart"), 0, "")
	if res.Records[0].Position != head+1 {
		t.Errorf("append after restart at position %d, want %d", res.Records[0].Position, head+1)
	}
}
