package testproc

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fanout spreads b.N operations over processes children, each running the
// test testName with env and NEnv set to its share: every child prints
// "ready", waits for a line on stdin, runs its share and prints the
// latencies of its operations on one line (see Serve). The benchmark's
// timer runs from the "go" sent to all of them to the last answer. It
// returns every latency and the elapsed time.
func Fanout(b *testing.B, processes int, testName, nEnv string, env []string) ([]time.Duration, time.Duration) {
	b.Helper()
	children := make([]*Child, processes)
	for p := range processes {
		n := b.N / processes
		if p < b.N%processes {
			n++
		}
		children[p] = Start(b, testName, append([]string{nEnv + "=" + strconv.Itoa(n)}, env...))
		if !children[p].Lines.Scan() || children[p].Lines.Text() != "ready" {
			b.Fatalf("child %d: %s", p, children[p].Stderr())
		}
	}
	b.ResetTimer()
	start := time.Now()
	for _, c := range children {
		_, _ = c.Stdin.Write([]byte("go\n"))
	}
	var lat []time.Duration
	for p, c := range children {
		if !c.Lines.Scan() {
			b.Fatalf("child %d: %s", p, c.Stderr())
		}
		for _, f := range strings.Fields(c.Lines.Text()) {
			us, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				b.Fatalf("child %d: %v", p, err)
			}
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	for p, c := range children {
		if err := c.CloseAndWait(); err != nil {
			b.Fatalf("child %d: %v: %s", p, err, c.Stderr())
		}
	}
	return lat, elapsed
}

// Serve is a Fanout child's side: it reads its share from nEnv, prints
// "ready", waits for the parent's line, runs run(n) and prints the
// latencies it returns, in microseconds, on one line.
func Serve(t *testing.T, nEnv string, run func(n int) ([]time.Duration, error)) {
	t.Helper()
	n, err := strconv.Atoi(os.Getenv(nEnv))
	if err != nil {
		t.Fatalf("%s: %v", nEnv, err)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	lat, err := run(n)
	if err != nil {
		t.Fatal(err)
	}
	us := make([]string, len(lat))
	for i, d := range lat {
		us[i] = strconv.FormatInt(d.Microseconds(), 10)
	}
	fmt.Println(strings.Join(us, " "))
}
