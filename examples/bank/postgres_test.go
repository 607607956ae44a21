package bank_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/pgtest"
	"github.com/eventcore-go/eventcore/internal/testproc"
)

// The PostgreSQL invariant test: several writer processes, the shape of
// many Lambda instances, on one database.
const (
	pgProcesses = 4
	pgWorkers   = 32
	pgChildEnv  = "BANK_PG_CHILD" // the child's transfer id prefix
	pgURLEnv    = "BANK_PG_URL"
	// Ten accounts shared by 128 callers in four processes conflict on
	// almost every transfer, and a conflict between processes costs a
	// retry with backoff: fewer transfers than the one-process test keep
	// the run under a minute.
	pgProcTransfers = concTransfers / 10
)

func openPostgres(t testing.TB, url string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// TestConcurrentTransfersPostgresProcesses runs the transfers from four
// child processes (the test binary re-executed) of 32 goroutines each,
// through the executor, on one PostgreSQL database at the same time: money
// is conserved, every acknowledged transfer is in the log exactly once at
// the positions it was answered, nothing else is, and positions run from 1
// without a gap.
func TestConcurrentTransfersPostgresProcesses(t *testing.T) {
	if prefix := os.Getenv(pgChildEnv); prefix != "" {
		runPostgresChild(t, prefix)
		return
	}
	url := pgtest.NewDatabase(t)
	s := openPostgres(t, url)
	deposited := setupConcAccounts(t, s)
	seed := uint64(time.Now().UnixNano())

	type child struct {
		proc   *testproc.Child
		prefix string
		out    []string
	}
	children := make([]*child, pgProcesses)
	for i := range children {
		c := &child{prefix: "p" + strconv.Itoa(i)}
		c.proc = testproc.Start(t, "TestConcurrentTransfersPostgresProcesses", []string{
			pgChildEnv + "=" + c.prefix, pgURLEnv + "=" + url, concSeedEnv + "=" + strconv.FormatUint(seed+uint64(i), 10),
		}, "-test.timeout=10m")
		children[i] = c
	}
	readUntil := func(c *child, prefix string) (string, bool) {
		for c.proc.Lines.Scan() {
			line := c.proc.Lines.Text()
			c.out = append(c.out, line)
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				return rest, true
			}
		}
		return "", false
	}
	failed := func(c *child, what string) {
		werr := c.proc.CloseAndWait()
		t.Fatalf("child %s %s (%v)\nstdout:\n%s\nstderr:\n%s", c.prefix, what, werr, strings.Join(c.out, "\n"), c.proc.Stderr())
	}
	for _, c := range children {
		if _, ok := readUntil(c, "ready"); !ok {
			failed(c, "did not get ready")
		}
	}
	start := time.Now()
	for _, c := range children { // all start together
		if _, err := io.WriteString(c.proc.Stdin, "go\n"); err != nil {
			failed(c, "did not read go: "+err.Error())
		}
	}
	var all concOutcome
	for _, c := range children {
		line, ok := readUntil(c, concAcksLine)
		if !ok {
			failed(c, "printed no outcome")
		}
		if err := c.proc.CloseAndWait(); err != nil {
			failed(c, "failed: "+err.Error())
		}
		var out concOutcome
		if err := json.Unmarshal([]byte(line), &out); err != nil {
			t.Fatalf("child %s outcome: %v", c.prefix, err)
		}
		t.Logf("child %s: %d acknowledged, %d insufficient_funds, %d errors, %d retries",
			c.prefix, len(out.Acks), len(out.Refused), len(out.Errors), out.Retries)
		if len(out.Acks) == 0 {
			t.Errorf("child %s acknowledged nothing", c.prefix)
		}
		all.Acks = append(all.Acks, out.Acks...)
		all.Refused = append(all.Refused, out.Refused...)
		all.Errors = append(all.Errors, out.Errors...)
		all.Retries += out.Retries
	}
	elapsed := time.Since(start)
	t.Logf("seed %d: %d transfers from %d processes x %d goroutines in %v (%.0f/s), %d retries",
		seed, pgProcesses*pgProcTransfers, pgProcesses, pgWorkers, elapsed.Round(time.Millisecond),
		float64(pgProcesses*pgProcTransfers)/elapsed.Seconds(), all.Retries)

	checkConcLog(t, s, deposited, all, pgProcesses*pgProcTransfers)
	for i, r := range readAll(t, s) {
		if r.Position != eventlog.Position(i+1) {
			t.Fatalf("record %d has position %d: the positions have a gap", i, r.Position)
		}
	}
	if head, err := s.Head(context.Background()); err != nil || int(head) != 2*concAccounts+countEvents(all.Acks) {
		t.Errorf("head %d (%v), want %d", head, err, 2*concAccounts+countEvents(all.Acks))
	}
	if all.Retries == 0 {
		t.Error("no conflict was retried: the transfers did not run concurrently")
	}
	// The processes ran at the same time: their transfers alternate often
	// in the log.
	acks := slices.Clone(all.Acks)
	slices.SortFunc(acks, func(a, b concAck) int { return int(a.Positions[0]) - int(b.Positions[0]) })
	switches := 0
	for i := 1; i < len(acks); i++ {
		if procOf(acks[i].ID) != procOf(acks[i-1].ID) {
			switches++
		}
	}
	if switches < 2*pgProcesses {
		t.Errorf("the processes' transfers alternate only %d times in the log: they did not run at the same time", switches)
	}
}

func procOf(id string) string {
	p, _, _ := strings.Cut(id, "-")
	return p
}

// runPostgresChild opens the database, says it is ready, waits for go on
// stdin, runs its transfers and prints its outcome as one JSON line.
func runPostgresChild(t *testing.T, prefix string) {
	seed, err := strconv.ParseUint(os.Getenv(concSeedEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s := openPostgres(t, os.Getenv(pgURLEnv))
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("waiting for go: %v", err)
	}
	out := runConcTransfers(s, prefix, pgProcTransfers, pgWorkers, seed)
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(concAcksLine + string(data))
}
