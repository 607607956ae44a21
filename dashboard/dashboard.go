// Package dashboard is the live dashboard of one instance, fed from its
// own metrics: commands/s and events/s, exact p50/p95/p99 command latency,
// conflicts, retries and admission waits, the cache hit ratio, lag and
// dead letters per projection, and memory, each with a short rolling
// chart.
//
// A Dashboard samples a prometheus.Gatherer (the instance's registry) once
// an interval and serves:
//
//	GET /                      the page: a server-rendered table with SVG
//	                           charts, usable without JavaScript; a small
//	                           script refreshes it from data.json
//	GET /dashboard/data.json   the current View as JSON
//	GET /dashboard/static/...  the page's script and style sheet
//
// Every asset is embedded (go:embed); nothing is loaded from elsewhere.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventcore-go/eventcore/metrics"
)

// Defaults of Options.
const (
	DefaultInterval = time.Second
	DefaultHistory  = 60
)

//go:embed static
var staticFiles embed.FS

//go:embed page.html.tmpl
var pageText string

var page = template.Must(template.New("page").Funcs(template.FuncMap{"points": Points}).Parse(pageText))

// Options tune a Dashboard; zero values take the defaults.
type Options struct {
	// Interval is the time between samples (DefaultInterval).
	Interval time.Duration
	// History is the number of samples each chart shows (DefaultHistory).
	History int
	// Logger receives gathering errors (slog.Default()).
	Logger *slog.Logger
}

// Dashboard samples an instance's metrics and serves them. Its methods
// are safe for concurrent use.
type Dashboard struct {
	gather  prometheus.Gatherer
	latency func(time.Time) metrics.Quantiles
	opts    Options
	static  http.Handler

	mu      sync.Mutex
	prev    *reading
	ratio   float64
	history map[string][]float64
	view    View
	sampled bool
}

// View is what the page shows: the figures of the last sample.
type View struct {
	Time            time.Time `json:"time"`
	IntervalSeconds float64   `json:"interval_seconds"`
	Figures         []Figure  `json:"figures"`
}

// New returns a dashboard over g, with latency giving the exact recent
// quantiles (metrics.Metrics.RecentLatency). It samples nothing until Run
// or Sample is called; a page asked for before that samples once.
func New(g prometheus.Gatherer, latency func(time.Time) metrics.Quantiles, opts Options) *Dashboard {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.History <= 0 {
		opts.History = DefaultHistory
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	sub, _ := fs.Sub(staticFiles, "static")
	return &Dashboard{
		gather: g, latency: latency, opts: opts, history: map[string][]float64{},
		static: http.StripPrefix("/dashboard/static/", http.FileServerFS(sub)),
	}
}

// Run samples every Interval until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.opts.Interval)
	defer t.Stop()
	d.Sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.Sample(now)
		}
	}
}

// Sample gathers the metrics once, as of now, and makes them the View. A
// family that cannot be gathered (the projection status, while its
// database is busy) is left out of this sample, the others are kept.
func (d *Dashboard) Sample(now time.Time) {
	families, err := d.gather.Gather()
	if err != nil {
		d.opts.Logger.Warn("dashboard: metrics partly gathered", "error", err.Error())
	}
	cur := read(now, families)
	var lat metrics.Quantiles
	if d.latency != nil {
		lat = d.latency(now)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	figs := figures(cur, d.prev, lat, d.ratio)
	seen := map[string]bool{}
	for i := range figs {
		f := &figs[i]
		seen[f.ID] = true
		d.history[f.ID] = append(d.history[f.ID], f.Value)
		if h := d.history[f.ID]; len(h) > d.opts.History {
			d.history[f.ID] = slices.Clone(h[len(h)-d.opts.History:])
		}
		f.History = slices.Clip(d.history[f.ID])
		if f.ID == "cache_hit_ratio" {
			d.ratio = f.Value / 100
		}
	}
	for id := range d.history {
		if !seen[id] {
			delete(d.history, id)
		}
	}
	d.prev = &cur
	d.view = View{Time: now, IntervalSeconds: d.opts.Interval.Seconds(), Figures: figs}
	d.sampled = true
}

// View returns the figures of the last sample, sampling first when none
// was taken.
func (d *Dashboard) View() View {
	d.mu.Lock()
	sampled := d.sampled
	d.mu.Unlock()
	if !sampled {
		d.Sample(time.Now())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.view
}

// ServeHTTP serves the page, its data and its assets (see the package
// documentation); any other path is answered 404, a method other than GET
// or HEAD 405.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case r.URL.Path == "/":
		v := d.View()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		span := time.Duration(d.opts.History) * d.opts.Interval
		if err := page.Execute(w, pageData{View: v, Groups: groups(v.Figures), Span: span.String()}); err != nil {
			d.opts.Logger.Warn("dashboard: page", "error", err.Error())
		}
	case r.URL.Path == "/dashboard/data.json":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d.View())
	case strings.HasPrefix(r.URL.Path, "/dashboard/static/"):
		d.static.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Handles reports whether path is one the dashboard serves, for a server
// that routes everything else elsewhere.
func Handles(path string) bool {
	return path == "/" || strings.HasPrefix(path, "/dashboard/")
}

type pageData struct {
	View   View
	Groups []group
	Span   string // what a chart spans
}

type group struct {
	Name    string
	Figures []Figure
}

// groups splits figures into runs of the same group, in order.
func groups(figs []Figure) []group {
	var out []group
	for _, f := range figs {
		if len(out) == 0 || out[len(out)-1].Name != f.Group {
			out = append(out, group{Name: f.Group})
		}
		out[len(out)-1].Figures = append(out[len(out)-1].Figures, f)
	}
	return out
}

// Chart size, in the SVG's user units; static/dashboard.js draws the same.
const (
	chartWidth  = 160
	chartHeight = 28
)

// Points returns the SVG polyline points of a chart of values over a
// chartWidth x chartHeight box: the x axis spans the values, the y axis
// runs from the lower of 0 and the smallest value to the largest (a flat
// line sits at the bottom). static/dashboard.js computes the same.
func Points(values []float64) string {
	if len(values) == 0 {
		return ""
	}
	lo, hi := 0.0, 0.0
	for _, v := range values {
		lo, hi = min(lo, v), max(hi, v)
	}
	var b strings.Builder
	for i, v := range values {
		x := 0.0
		if len(values) > 1 {
			x = float64(i) * chartWidth / float64(len(values)-1)
		}
		y := float64(chartHeight - 1)
		if hi > lo {
			y = 1 + (hi-v)/(hi-lo)*(chartHeight-2)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatFloat(x, 'f', 1, 64))
		b.WriteByte(',')
		b.WriteString(strconv.FormatFloat(y, 'f', 1, 64))
	}
	return b.String()
}

// String describes the view in one line per figure, for logs and tests.
func (v View) String() string {
	var b strings.Builder
	for _, f := range v.Figures {
		fmt.Fprintf(&b, "%s: %s (%s)\n", f.Label, f.Text, f.Detail)
	}
	return b.String()
}
