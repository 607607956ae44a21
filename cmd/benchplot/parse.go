package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// Point is one measured figure of one sub-benchmark: Bench is the
// top-level name without "Benchmark" (Transfer), Params the key=value
// parts of its sub-benchmark name (sync=FULL, callers=8), Unit the figure's
// unit (commands/s), Value the mean over the runs that reported it.
type Point struct {
	Bench  string
	Params map[string]string
	Unit   string
	Value  float64
}

// Param returns the parameter key as a number, and whether it is one.
func (p Point) Param(key string) (float64, bool) {
	v, err := strconv.ParseFloat(p.Params[key], 64)
	return v, err == nil
}

// Parse reads `go test -bench` output (the Go benchmark format, through
// golang.org/x/perf/benchfmt) and returns its figures, the runs of one
// sub-benchmark averaged (-count). Lines that are not results (test logs,
// PASS, ok) are skipped; a malformed result line is an error naming its
// line. Sub-benchmark name parts without "=" are kept as key=key
// (events=1000/warm gives events=1000 and warm=warm).
func Parse(r io.Reader) ([]Point, error) {
	type key struct{ name, unit string }
	sums := map[key]float64{}
	counts := map[key]int{}
	var order []key
	points := map[key]Point{}
	br := benchfmt.NewReader(r, "input")
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			return nil, fmt.Errorf("line %d: %s", rec.Line, rec.Msg)
		case *benchfmt.Result:
			base, parts := rec.Name.Parts()
			bench := strings.TrimPrefix(string(base), "Benchmark")
			params := map[string]string{}
			for _, raw := range parts {
				part := strings.TrimPrefix(string(raw), "/")
				if strings.HasPrefix(part, "-") { // the GOMAXPROCS suffix
					continue
				}
				k, v, ok := strings.Cut(part, "=")
				if !ok {
					v = k
				}
				params[k] = v
			}
			for _, v := range rec.Values {
				unit, value := v.Unit, v.Value
				if v.OrigUnit != "" { // as the benchmark reported it, not tidied
					unit, value = v.OrigUnit, v.OrigValue
				}
				k := key{string(rec.Name.Full()), unit}
				if _, seen := counts[k]; !seen {
					order = append(order, k)
					points[k] = Point{Bench: bench, Params: params, Unit: unit}
				}
				sums[k] += value
				counts[k]++
			}
		}
	}
	if err := br.Err(); err != nil {
		return nil, err
	}
	out := make([]Point, 0, len(order))
	for _, k := range order {
		p := points[k]
		p.Value = sums[k] / float64(counts[k])
		out = append(out, p)
	}
	return out, nil
}
