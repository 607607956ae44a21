package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchClient sends the benchmarks' requests to a local runner at base
// and times each one, answer read.
type benchClient struct {
	b    *testing.B
	base string
	http *http.Client
}

func newBenchClient(b *testing.B, base string, clients int) *benchClient {
	return &benchClient{b: b, base: base, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 30 * time.Second}}
}

// startBench starts a runner on a temporary directory, opens the accounts
// PREFIX-0 to PREFIX-(accounts-1) and returns a client's send for clients
// callers.
func startBench(b *testing.B, clients, accounts int, prefix string) func(method, target, body string) (int, string, time.Duration) {
	b.Helper()
	send := newBenchClient(b, start(b, testEnv(b.TempDir())).url, clients).send
	for i := range accounts {
		if status, out, _ := send("POST", "/commands/open-account", fmt.Sprintf(`{"account":"%s-%d","owner":"B"}`, prefix, i)); status != 200 {
			b.Fatalf("open account: %d %s", status, out)
		}
	}
	return send
}

// send sends one request and answers its status, body and duration; a
// transport error is reported to the benchmark and answered as status 0.
func (c *benchClient) send(method, target, body string) (int, string, time.Duration) {
	start := time.Now()
	req, err := http.NewRequest(method, c.base+target, strings.NewReader(body))
	if err != nil {
		c.b.Error(err)
		return 0, "", 0
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.b.Error(err)
		return 0, "", 0
	}
	out, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		c.b.Error(err)
	}
	return resp.StatusCode, string(out), time.Since(start)
}

// reportQuantiles reports the p50 and p99 of d, in milliseconds, as
// NAME-p50-ms and NAME-p99-ms; it sorts d.
func reportQuantiles(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(d[len(d)/2]), name+"-p50-ms")
	b.ReportMetric(ms(d[len(d)*99/100]), name+"-p99-ms")
}
