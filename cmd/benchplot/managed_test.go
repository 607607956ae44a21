package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// managedSample is BenchmarkManagedInstances's output as `make bench-plot`
// saves it, with its goal lines.
const managedSample = `goos: linux
goarch: amd64
pkg: github.com/eventcore-go/eventcore/functions
cpu: AMD EPYC
BenchmarkManagedInstances/mode=file/concurrency=1-2         	     500	         0 409/op	       580.4 commands/s	         1.458 p50-ms	         7.664 p99-ms	         0 resends/op
BenchmarkManagedInstances/mode=file/concurrency=8-2         	     500	         0 409/op	       832.3 commands/s	         8.687 p50-ms	        25.37 p99-ms	         0.5600 resends/op
BenchmarkManagedInstances/mode=file/concurrency=64-2        	     500	         0 409/op	      1024 commands/s	        52.39 p50-ms	       176.2 p99-ms	         0.6440 resends/op
BenchmarkManagedInstances/mode=litestream/concurrency=1-2   	     500	         0 409/op	        35.76 commands/s	         0.9921 commands/sync	        26.73 p50-ms	        46.48 p99-ms	         0 resends/op
BenchmarkManagedInstances/mode=litestream/concurrency=8-2   	     500	         0 409/op	       159.0 commands/s	         4.950 commands/sync	        53.96 p50-ms	       107.6 p99-ms	         0.6180 resends/op
BenchmarkManagedInstances/mode=litestream/concurrency=64-2  	     500	         0 409/op	       803.8 commands/s	        27.78 commands/sync	        72.40 p50-ms	       169.8 p99-ms	         0.5980 resends/op
--- BENCH: BenchmarkManagedInstances/mode=litestream/concurrency=64-2
    managed_bench_test.go:105: goal mode=litestream/concurrency=64 >= 12.0 x mode=litestream/concurrency=1: 804 / 36 commands/s = 22.48: met
PASS
ok  	github.com/eventcore-go/eventcore/functions	29.350s
`

func TestManagedChart(t *testing.T) {
	points, err := Parse(strings.NewReader(managedSample))
	if err != nil {
		t.Fatal(err)
	}
	var managed Chart
	for _, c := range Charts {
		if c.File == "bench-managed.png" {
			managed = c
		}
	}
	lines := managed.lines(points)
	if len(lines) != 2 {
		t.Fatalf("lines %v, want mode=file and mode=litestream", lines)
	}
	for name, want := range map[string][3]float64{"mode=file": {580.4, 832.3, 1024}, "mode=litestream": {35.76, 159.0, 803.8}} {
		xys := lines[name]
		if len(xys) != 3 {
			t.Fatalf("%s: %v", name, xys)
		}
		for i, x := range []float64{1, 8, 64} {
			if xys[i].X != x || xys[i].Y != want[i] {
				t.Errorf("%s point %d = %v, want (%v, %v)", name, i, xys[i], x, want[i])
			}
		}
	}
	dir := t.TempDir()
	var out strings.Builder
	if err := run([]string{"-o", dir}, strings.NewReader(managedSample), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "wrote "+filepath.Join(dir, "bench-managed.png")+"\n" {
		t.Fatalf("wrote %q; want only the managed chart", out.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "bench-managed.png"))
	if err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Fatalf("bench-managed.png: %v", err)
	}
}
