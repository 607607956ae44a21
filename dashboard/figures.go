package dashboard

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	dto "github.com/prometheus/client_model/go"

	"github.com/eventcore-go/eventcore/metrics"
)

// reading is what one gathering of the registry held: cumulative counters
// and current gauges.
type reading struct {
	at         time.Time
	outcomes   map[string]float64 // commands by outcome
	commands   float64
	events     float64
	conflicts  float64
	retries    float64
	admissions float64 // commands admitted
	admitFast  float64 // of them, those that waited at most admitFastBound
	admitSum   float64 // seconds waited, in total
	hits       float64
	partial    float64
	misses     float64
	cacheBytes float64
	active     float64
	heap       float64
	rss        float64
	goroutines float64
	head       float64
	hasHead    bool
	lag        map[string]float64
	checkpoint map[string]float64
	dead       map[string]float64
}

// admitFastBound is the admission wait under which a command is not
// counted as one that waited: the first bucket of
// eventcore_admission_wait_seconds.
const admitFastBound = 0.0001

// read sums the families the dashboard shows.
func read(at time.Time, families []*dto.MetricFamily) reading {
	r := reading{at: at, outcomes: map[string]float64{}, lag: map[string]float64{}, checkpoint: map[string]float64{}, dead: map[string]float64{}}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := value(m)
			switch f.GetName() {
			case "eventcore_commands_total":
				r.commands += v
				r.outcomes[label(m, "outcome")] += v
			case "eventcore_events_written_total":
				r.events += v
			case "eventcore_version_conflicts_total":
				r.conflicts += v
			case "eventcore_command_retries_total":
				r.retries += v
			case "eventcore_admission_wait_seconds":
				h := m.GetHistogram()
				r.admissions += float64(h.GetSampleCount())
				r.admitSum += h.GetSampleSum()
				for _, b := range h.GetBucket() {
					if b.GetUpperBound() <= admitFastBound*1.0000001 {
						r.admitFast = float64(b.GetCumulativeCount())
					}
				}
			case "eventcore_cache_hits_total":
				r.hits += v
			case "eventcore_cache_partial_hits_total":
				r.partial += v
			case "eventcore_cache_misses_total":
				r.misses += v
			case "eventcore_cache_bytes":
				r.cacheBytes += v
			case "eventcore_active_streams":
				r.active += v
			case "go_memstats_heap_inuse_bytes":
				r.heap = v
			case "process_resident_memory_bytes":
				r.rss = v
			case "go_goroutines":
				r.goroutines = v
			case "eventcore_projection_head_position":
				r.head, r.hasHead = v, true
			case "eventcore_projection_lag_events":
				r.lag[label(m, "projection")] = v
			case "eventcore_projection_checkpoint_position":
				r.checkpoint[label(m, "projection")] = v
			case "eventcore_projection_dead_letters":
				r.dead[label(m, "projection")] = v
			}
		}
	}
	return r
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Figure is one row of the dashboard: a value, its text, a line of detail
// and the values of the last samples, oldest first (the chart).
type Figure struct {
	ID      string    `json:"id"`
	Group   string    `json:"group"`
	Label   string    `json:"label"`
	Value   float64   `json:"value"`
	Text    string    `json:"text"`
	Detail  string    `json:"detail"`
	History []float64 `json:"history"`
}

// figures computes the rows from the current reading, the previous one
// (for rates; nil at the first sample), the recent latencies and the
// previous cache ratio (kept while no command looked the cache up).
func figures(cur reading, prev *reading, lat metrics.Quantiles, lastRatio float64) []Figure {
	dt := 0.0
	if prev != nil {
		dt = cur.at.Sub(prev.at).Seconds()
	}
	rate := func(get func(r reading) float64) float64 {
		if prev == nil || dt <= 0 {
			return 0
		}
		return max(0, get(cur)-get(*prev)) / dt
	}
	delta := func(get func(r reading) float64) float64 {
		if prev == nil {
			return get(cur)
		}
		return max(0, get(cur)-get(*prev))
	}
	var out []Figure
	add := func(group, id, lbl string, v float64, text, detail string) {
		out = append(out, Figure{ID: id, Group: group, Label: lbl, Value: v, Text: text, Detail: detail})
	}

	cps := rate(func(r reading) float64 { return r.commands })
	add("throughput", "commands_per_second", "commands/s", cps, fmt.Sprintf("%.1f", cps), "commands answered per second, every outcome")
	eps := rate(func(r reading) float64 { return r.events })
	add("throughput", "events_per_second", "events/s", eps, fmt.Sprintf("%.1f", eps), "events appended to the log per second")
	add("throughput", "commands_total", "commands", cur.commands, count(cur.commands), outcomes(cur.outcomes))
	add("throughput", "events_total", "events written", cur.events, count(cur.events), "since the runner started")

	latDetail := fmt.Sprintf("exact, last %s: %d commands, max %s", lat.Span, lat.Count, millis(lat.Max, lat.Count))
	for _, q := range []struct {
		id, label string
		d         time.Duration
	}{{"latency_p50", "p50 latency", lat.P50}, {"latency_p95", "p95 latency", lat.P95}, {"latency_p99", "p99 latency", lat.P99}} {
		add("latency", q.id, q.label, float64(q.d)/float64(time.Millisecond), millis(q.d, lat.Count), latDetail)
	}

	conflicts := rate(func(r reading) float64 { return r.conflicts })
	add("contention", "conflicts_per_second", "conflicts/s", conflicts, fmt.Sprintf("%.1f", conflicts),
		fmt.Sprintf("%s version conflicts in all", count(cur.conflicts)))
	retries := rate(func(r reading) float64 { return r.retries })
	add("contention", "retries_per_second", "retries/s", retries, fmt.Sprintf("%.1f", retries),
		fmt.Sprintf("%s retries in all", count(cur.retries)))
	waited := func(r reading) float64 { return r.admissions - r.admitFast }
	waits := rate(waited)
	meanWait := "no command admitted in the last second"
	if n := delta(func(r reading) float64 { return r.admissions }); n > 0 {
		meanWait = fmt.Sprintf("mean wait %.3f ms over the last %.0f admitted", 1000*delta(func(r reading) float64 { return r.admitSum })/n, n)
	}
	add("contention", "admission_waits_per_second", "admission waits/s", waits, fmt.Sprintf("%.1f", waits),
		fmt.Sprintf("%s commands waited over %.1f ms for others on their streams; %s", count(waited(cur)), admitFastBound*1000, meanWait))

	lookups := delta(func(r reading) float64 { return r.hits + r.partial + r.misses })
	ratio := lastRatio
	if lookups > 0 {
		ratio = delta(func(r reading) float64 { return r.hits }) / lookups
	}
	all := cur.hits + cur.partial + cur.misses
	ratioText := "–"
	if all > 0 {
		ratioText = fmt.Sprintf("%.1f%%", 100*ratio)
	}
	add("cache", "cache_hit_ratio", "cache hit ratio", 100*ratio, ratioText,
		fmt.Sprintf("all time: %s hits, %s partial, %s misses; %s cached", count(cur.hits), count(cur.partial), count(cur.misses), humanize.IBytes(uint64(max(0, cur.cacheBytes)))))

	if cur.hasHead {
		add("projections", "head_position", "head position", cur.head, count(cur.head), "the last position of the event log")
	}
	names := make([]string, 0, len(cur.lag))
	for n := range cur.lag {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		add("projections", "lag/"+n, "lag "+n, cur.lag[n], count(cur.lag[n]),
			fmt.Sprintf("events behind the head; checkpoint %s", count(cur.checkpoint[n])))
		add("projections", "dead_letters/"+n, "dead letters "+n, cur.dead[n], count(cur.dead[n]), "events skipped as dead letters")
	}

	add("process", "memory_heap", "memory (heap in use)", cur.heap/(1<<20), humanize.IBytes(uint64(max(0, cur.heap))),
		fmt.Sprintf("resident %s, %s goroutines", humanize.IBytes(uint64(max(0, cur.rss))), count(cur.goroutines)))
	add("process", "active_streams", "active streams", cur.active, count(cur.active), "distinct streams read or written")
	return out
}

func count(v float64) string { return humanize.Comma(int64(math.Round(v))) }

func millis(d time.Duration, n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func outcomes(by map[string]float64) string {
	parts := make([]string, 0, 4)
	for _, o := range []string{metrics.OutcomeOK, metrics.OutcomeRejected, metrics.OutcomeConflict, metrics.OutcomeError} {
		parts = append(parts, count(by[o])+" "+o)
	}
	return strings.Join(parts, ", ")
}
