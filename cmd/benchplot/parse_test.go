package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/eventcore-go/eventcore/examples/bank/bankbench
BenchmarkTransfer/sync=full/callers=1/impl=executor-2   	    3000	      2000 commands/s	         0.41 p50-ms	         1.1 p99-ms
BenchmarkTransfer/sync=full/callers=1/impl=executor-2   	    3000	      3000 commands/s	         0.41 p50-ms	         1.1 p99-ms
BenchmarkTransfer/sync=full/callers=8/impl=executor-2   	    3000	      5000 commands/s	         1.4 p50-ms	         4.2 p99-ms
BenchmarkTransfer/sync=normal/callers=8/impl=raw-2      	    3000	     10000 commands/s
--- some test log
PASS
pkg: github.com/eventcore-go/eventcore/executor
BenchmarkDepositByHistory/events=1000/warm-2            	     200	    306000 ns/op	       306 us/command	         0 replayed/command
BenchmarkDepositByHistory/events=10/cold-2              	     200	    454000 ns/op	       454 us/command	        28 replayed/command
ok  	github.com/eventcore-go/eventcore/executor	12.3s
`

func TestParse(t *testing.T) {
	points, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	find := func(bench, unit string, params ...string) (Point, bool) {
		for _, p := range points {
			ok := p.Bench == bench && p.Unit == unit
			for i := 0; i+1 < len(params); i += 2 {
				ok = ok && p.Params[params[i]] == params[i+1]
			}
			if ok {
				return p, true
			}
		}
		return Point{}, false
	}
	// Two runs of one sub-benchmark are averaged.
	if p, ok := find("Transfer", "commands/s", "sync", "full", "callers", "1", "impl", "executor"); !ok || p.Value != 2500 {
		t.Fatalf("%+v %v", p, ok)
	}
	if p, ok := find("Transfer", "p99-ms", "callers", "8", "sync", "full"); !ok || p.Value != 4.2 {
		t.Fatalf("%+v %v", p, ok)
	}
	// Units are kept as the benchmark wrote them; positional parts are key=key.
	if p, ok := find("DepositByHistory", "us/command", "events", "1000", "warm", "warm"); !ok || p.Value != 306 {
		t.Fatalf("%+v %v", p, ok)
	}
	if x, ok := (Point{Params: map[string]string{"events": "1000"}}).Param("events"); !ok || x != 1000 {
		t.Fatal(x, ok)
	}
	if _, err := Parse(strings.NewReader("BenchmarkX-2 10 abc ns/op\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a malformed line: %v", err)
	}
}

func TestRunDrawsCharts(t *testing.T) {
	in := filepath.Join(t.TempDir(), "bench.txt")
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out strings.Builder
	if err := run([]string{"-o", dir, in}, nil, &out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"bench-transfer.png", "bench-history.png"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bench-managed.png")); err == nil {
		t.Error("a chart without points was drawn")
	}
	if err := run([]string{"-o", dir}, strings.NewReader("PASS\n"), &out); err == nil {
		t.Error("no curve: no error")
	}
}

// FuzzParse: any input is parsed or refused with an error, never a panic,
// and every point has a benchmark name and a unit.
func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add("BenchmarkA/x=1/y-8 1 2 u\n")
	f.Add("BenchmarkA 1 NaN ns/op\n")
	f.Add("BenchmarkA/=/== 1 1e309 x/op\n")
	f.Add("key: value\nBenchmark\n")
	f.Fuzz(func(t *testing.T, in string) {
		points, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, p := range points {
			if p.Unit == "" || p.Params == nil {
				t.Fatalf("point %+v", p)
			}
		}
	})
}
