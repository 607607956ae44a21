// Package metricstest runs a real Prometheus Pushgateway (Debian's
// prometheus-pushgateway) and a real Prometheus server (Debian's
// prometheus) for tests, and reads back what the gateway holds.
package metricstest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/internal/syncbuf"
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
	addr := FreeAddr(t)
	// Debian's gateway persists to /var/lib/prometheus/pushgateway.data by
	// default: every test gateway would share what earlier ones held.
	startServer(t, Binary, "prometheus-pushgateway", addr, "--web.listen-address="+addr, "--persistence.file=")
	return "http://" + addr
}

// startServer starts bin (installed by the Debian package pkg) with args,
// in its own process group that is killed when the test ends, and waits
// until http://addr/-/ready answers 200. A missing binary fails the test
// under CI=true and skips it otherwise.
func startServer(t testing.TB, bin, pkg, addr string, args ...string) {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		if isCI() {
			t.Fatalf("%s is not installed (apt-get install %s)", bin, pkg)
		}
		t.Skipf("%s is not installed (apt-get install %s)", bin, pkg)
	}
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	probe := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := probe.Get("http://" + addr + "/-/ready")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", bin, waitErr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become ready: %v\n%s", bin, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PrometheusBinary is the Prometheus server's executable (Debian's
// prometheus package).
const PrometheusBinary = "prometheus"

// StartPrometheus starts a Prometheus server on a free 127.0.0.1 port that
// scrapes the Pushgateway at gatewayURL every second, keeping the pushed
// job and instance labels (honor_labels), with its storage in a temporary
// directory. It returns the server's base URL and stops it when the test
// ends. It fails the test when the binary is missing and CI=true, and
// skips it otherwise.
func StartPrometheus(t testing.TB, gatewayURL string) string {
	t.Helper()
	gw, err := url.Parse(gatewayURL)
	if err != nil || gw.Host == "" {
		t.Fatalf("gateway URL %q: %v", gatewayURL, err)
	}
	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: [%q]
`, gw.Host)
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	startServer(t, PrometheusBinary, "prometheus", addr,
		"--config.file="+configPath, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	return "http://" + addr
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
