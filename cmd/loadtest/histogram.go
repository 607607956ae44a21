package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

// histogramBins is the number of bars of the latency histogram.
const histogramBins = 60

// writeHistogram writes the histogram of s's latencies to path as a PNG:
// milliseconds up to the 99.9th percentile (the few slower are counted in
// the title), with p50 and p99 marked. Errors: no latencies, or the file
// cannot be written.
func writeHistogram(path string, s load.Summary) error {
	lat := s.Latencies
	if len(lat) == 0 {
		return fmt.Errorf("-histogram: no command was answered")
	}
	limit := load.Percentile(lat, 99.9)
	values := make(plotter.Values, 0, len(lat))
	for _, d := range lat {
		if d <= limit {
			values = append(values, ms(d))
		}
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("latency of %d commands, %d clients (p50 %.2f ms, p99 %.2f ms)",
		len(lat), s.Clients, ms(s.Latency.P50), ms(s.Latency.P99))
	if over := len(lat) - len(values); over > 0 {
		p.Title.Text += fmt.Sprintf("; %d over p99.9 (max %.1f ms) not shown", over, ms(s.Latency.Max))
	}
	p.X.Label.Text = "latency (ms)"
	p.Y.Label.Text = "commands"
	h, err := plotter.NewHist(values, histogramBins)
	if err != nil {
		return fmt.Errorf("-histogram: %w", err)
	}
	p.Add(h)
	top := 0.0
	for _, b := range h.Bins {
		top = max(top, b.Weight)
	}
	for _, m := range []struct {
		name string
		at   time.Duration
	}{{"p50", s.Latency.P50}, {"p99", s.Latency.P99}} {
		line, err := plotter.NewLine(plotter.XYs{{X: ms(m.at), Y: 0}, {X: ms(m.at), Y: top}})
		if err != nil {
			return fmt.Errorf("-histogram: %w", err)
		}
		line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s %.2f ms", m.name, ms(m.at)), line)
	}
	p.Legend.Top = true
	if err := p.Save(9*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return fmt.Errorf("-histogram: %w", err)
	}
	return nil
}

// checkHistogramPath is the flag's check: a .png file name.
func checkHistogramPath(path string) error {
	if !strings.EqualFold(filepath.Ext(path), ".png") {
		return fmt.Errorf("-histogram: %q: want a file name ending in .png", path)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
