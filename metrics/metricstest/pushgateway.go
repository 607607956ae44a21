// Package metricstest runs a real Prometheus Pushgateway (Debian's
// prometheus-pushgateway) for tests, and reads back what it holds.
package metricstest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Binary is the gateway's executable.
const Binary = "prometheus-pushgateway"

// StartPushgateway starts a gateway on a free 127.0.0.1 port, waits until
// it is ready and stops it when the test ends. It fails the test when the
// binary is missing and CI=true, and skips it otherwise.
func StartPushgateway(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if isCI() {
			t.Fatalf("%s is not installed (apt-get install prometheus-pushgateway)", Binary)
		}
		t.Skipf("%s is not installed (apt-get install prometheus-pushgateway)", Binary)
	}
	addr := FreeAddr(t)
	// Debian's gateway persists to /var/lib/prometheus/pushgateway.data by
	// default: every test gateway would share what earlier ones held.
	cmd := exec.Command(bin, "--web.listen-address="+addr, "--persistence.file=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	url := "http://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url + "/-/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pushgateway did not become ready: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FreeAddr returns a 127.0.0.1 address with a port free at the time of the
// call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// BlackHole starts a listener that accepts connections and never answers;
// it returns its URL and closes when the test ends.
func BlackHole(t testing.TB) string {
	t.Helper()
	url, _ := CountingBlackHole(t)
	return url
}

// CountingBlackHole is BlackHole that also returns how many connections it
// has accepted so far: a client that gives up on a push and tries again
// opens a new one, so the count is the number of push attempts.
func CountingBlackHole(t testing.TB) (url string, accepted func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var count atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			count.Add(1)
			conns = append(conns, c) // held open, never read or answered
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String(), count.Load
}

// Families fetches and parses the gateway's /metrics.
func Families(ctx context.Context, gatewayURL string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, gatewayURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// Value returns the value of the series of family name whose labels include
// every label given, and whether there is exactly one such series.
// Counters, gauges and untyped values are returned as they are; for a
// histogram it is the sample count.
func Value(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	var found []float64
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			found = append(found, m.GetCounter().GetValue())
		case m.Gauge != nil:
			found = append(found, m.GetGauge().GetValue())
		case m.Histogram != nil:
			found = append(found, float64(m.GetHistogram().GetSampleCount()))
		case m.Untyped != nil:
			found = append(found, m.GetUntyped().GetValue())
		}
	}
	if len(found) != 1 {
		return 0, false
	}
	return found[0], true
}

// Instances returns the instance labels of the series of family name that
// carry job.
func Instances(families map[string]*dto.MetricFamily, name, job string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range families[name].GetMetric() {
		if !hasLabels(m, map[string]string{"job": job}) {
			continue
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == "instance" && !seen[l.GetValue()] {
				seen[l.GetValue()] = true
				out = append(out, l.GetValue())
			}
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		ok := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func isCI() bool {
	v, ok := os.LookupEnv("CI")
	return ok && v == "true"
}
