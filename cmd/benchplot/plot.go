package main

import (
	"fmt"
	"image/color"
	"maps"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Chart is one PNG: Bench's figure Unit (y) against the numeric parameter
// X, one line per value of the parameters named in Series.
type Chart struct {
	File, Title    string
	Bench, Unit, X string
	Series         []string
	XLabel, YLabel string
	LogX, LogY     bool
	LegendLeft     bool // the legend in the top left corner, else the top right
}

// Charts are the curves `make bench-plot` draws.
var Charts = []Chart{
	{File: "bench-transfer.png", Title: "transfers between 1,000 accounts (examples/bank/bankbench)",
		Bench: "Transfer", Unit: "commands/s", X: "callers", Series: []string{"impl", "sync"},
		XLabel: "concurrent callers", YLabel: "commands/s", LogX: true},
	{File: "bench-history.png", Title: "a deposit against the stream's history (executor)",
		Bench: "DepositByHistory", Unit: "us/command", X: "events", Series: []string{"cold", "snapshot", "warm"},
		XLabel: "events in the stream", YLabel: "µs per command", LogX: true, LogY: true, LegendLeft: true},
	{File: "bench-managed.png", Title: "transfers through Lambda Managed Instances under the emulator (functions)",
		Bench: "ManagedInstances", Unit: "commands/s", X: "concurrency", Series: []string{"mode"},
		XLabel: "invocations at once", YLabel: "commands/s", LogX: true, LegendLeft: true},
}

// lines groups the chart's points into named lines sorted by x. A point
// without a numeric x is skipped.
func (c Chart) lines(points []Point) map[string]plotter.XYs {
	out := map[string]plotter.XYs{}
	for _, p := range points {
		if p.Bench != c.Bench || p.Unit != c.Unit {
			continue
		}
		x, ok := p.Param(c.X)
		if !ok {
			continue
		}
		var name []string
		for _, s := range c.Series {
			if v, ok := p.Params[s]; ok {
				if v == s {
					name = append(name, v)
				} else {
					name = append(name, s+"="+v)
				}
			}
		}
		n := strings.Join(name, ", ")
		out[n] = append(out[n], plotter.XY{X: x, Y: p.Value})
	}
	for _, xys := range out {
		slices.SortFunc(xys, func(a, b plotter.XY) int {
			switch {
			case a.X < b.X:
				return -1
			case a.X > b.X:
				return 1
			}
			return 0
		})
	}
	return out
}

// Draw writes the chart of points to path; it returns false without
// writing when no point belongs to it.
func (c Chart) Draw(points []Point, path string) (bool, error) {
	lines := c.lines(points)
	if len(lines) == 0 {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text, p.Y.Label.Text = c.XLabel, c.YLabel
	if c.LogX {
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	}
	if c.LogY {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	} else {
		p.Y.Min = 0
	}
	p.Add(plotter.NewGrid())
	for i, name := range slices.Sorted(maps.Keys(lines)) {
		l, s, err := plotter.NewLinePoints(lines[name])
		if err != nil {
			return false, fmt.Errorf("%s: %s: %w", c.File, name, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7)
		s.Color, s.Shape = l.Color, plotutil.Shape(i)
		p.Add(l, s)
		p.Legend.Add(name, l, s)
	}
	p.Legend.Top, p.Legend.Left = true, c.LegendLeft
	p.Legend.TextStyle.Color = color.Black
	if err := p.Save(8*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return false, fmt.Errorf("%s: %w", c.File, err)
	}
	return true, nil
}
