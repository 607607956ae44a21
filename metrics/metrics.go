// Package metrics holds the Prometheus collectors of an instance, on a
// registry of its own, and the pusher that sends them to a Pushgateway at
// the end of each invocation (a Lambda instance cannot be scraped and is
// frozen as soon as its handler returns).
//
// Names follow the Prometheus conventions under the eventcore_ prefix:
// counters end in _total, durations are _seconds histograms, sizes _bytes.
package metrics

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/projection"
)

// Command outcomes, the values of the outcome label.
const (
	OutcomeOK       = "ok"       // events recorded, or nothing to record
	OutcomeRejected = "rejected" // a business rule or invalid input (4xx)
	OutcomeConflict = "conflict" // retries exhausted (409)
	OutcomeError    = "error"    // anything else (5xx)
)

// Store operations, the values of the operation label.
const (
	OpAppend     = "append"
	OpReadStream = "read_stream"
	OpReadFeed   = "read_feed"
	OpProbe      = "probe"
)

// maxActiveStreams bounds the set behind eventcore_active_streams.
const maxActiveStreams = 1 << 20

// Metrics is every collector of an instance. Its methods are safe for
// concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	extra atomic.Pointer[prometheus.Gatherer] // series gathered beside the registry's

	commands       *prometheus.CounterVec
	commandSeconds *prometheus.HistogramVec
	attempts       *prometheus.HistogramVec
	eventsWritten  prometheus.Counter
	storeSeconds   *prometheus.HistogramVec
	conflicts      prometheus.Counter
	retries        prometheus.Counter
	pushFailures   prometheus.Counter
	storageErrors  *prometheus.CounterVec
	admissionWait  prometheus.Histogram
	applied        *prometheus.CounterVec

	mu      sync.Mutex
	streams map[eventlog.StreamID]struct{}
	src     Sources

	projecting atomic.Bool // ObserveApplied was called

	recent *Window // the latest command latencies, for exact quantiles
}

// Sources are what the collectors read at scrape (or push) time; any may be
// nil.
type Sources struct {
	Cache       *cache.Cache
	Projections *projection.Runner
	// Databases maps a name (events, projections) to an SQLite file whose
	// size (with its -wal file) is reported.
	Databases map[string]string
}

// Include adds g's series to what Gatherer returns (and so to pushes and
// the local runner's /metrics): libraries that register on their own
// registry, such as Litestream's litestream_* series on Prometheus's
// default one. Their names must not collide with the registry's.
func (m *Metrics) Include(g prometheus.Gatherer) { m.extra.Store(&g) }

// Gatherer returns the registry and what Include added.
func (m *Metrics) Gatherer() prometheus.Gatherer {
	if g := m.extra.Load(); g != nil {
		return prometheus.Gatherers{m.Registry, *g}
	}
	return m.Registry
}

// Prefixed returns the families of g whose names start with prefix.
func Prefixed(g prometheus.Gatherer, prefix string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		all, err := g.Gather()
		kept := all[:0]
		for _, f := range all {
			if strings.HasPrefix(f.GetName(), prefix) {
				kept = append(kept, f)
			}
		}
		return kept, err
	})
}

// New returns the collectors registered on a new registry, with the Go
// runtime's and the process's collectors beside them.
func New(src Sources) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry(), streams: map[eventlog.StreamID]struct{}{}, src: src,
		recent: NewWindow(DefaultWindow, DefaultWindowSamples)}
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eventcore_commands_total", Help: "Commands executed, by command and outcome (ok, rejected, conflict, error).",
	}, []string{"command", "outcome"})
	m.commandSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "eventcore_command_duration_seconds", Help: "Time to execute a command, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"command"})
	m.attempts = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "eventcore_command_attempts", Help: "Attempts a command took (1 without a conflict).",
		Buckets: []float64{1, 2, 3, 4, 5, 8, 16},
	}, []string{"command"})
	m.eventsWritten = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "eventcore_events_written_total", Help: "Events appended to the log.",
	})
	m.storeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "eventcore_store_operation_duration_seconds", Help: "Event store operation latency, by operation (append, read_stream, read_feed, probe).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	}, []string{"operation"})
	m.conflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "eventcore_version_conflicts_total", Help: "Appends refused because a stream moved.",
	})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "eventcore_command_retries_total", Help: "Command attempts retried after a version conflict.",
	})
	m.applied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eventcore_projection_events_applied_total", Help: "Events applied by each projection in this instance.",
	}, []string{"projection"})
	m.admissionWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "eventcore_admission_wait_seconds",
		Help:    "Time a command waited for the commands ahead of it on its streams in this instance.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.pushFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "eventcore_metrics_push_failures_total", Help: "Pushes to the Pushgateway that failed (they reach it with the next push that succeeds).",
	})
	m.storageErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eventcore_storage_errors_total",
		Help: "Appends the event log's storage failed, by kind: full (no space left; nothing written) or io (an I/O error; outcome unknown).",
	}, []string{"kind"})
	m.Registry.MustRegister(m.storageErrors)
	m.Registry.MustRegister(m.commands, m.commandSeconds, m.attempts, m.eventsWritten, m.storeSeconds,
		m.conflicts, m.retries, m.applied, m.pushFailures, m.admissionWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{m: m})
	return m
}

// Watch replaces the sources read at collection time, for sources made
// after the collectors (a projection runner over the instrumented store).
func (m *Metrics) Watch(src Sources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.src = src
}

// ObserveCommand records one executed command.
func (m *Metrics) ObserveCommand(command, outcome string, took time.Duration, attempts, events int) {
	m.commands.WithLabelValues(command, outcome).Inc()
	m.commandSeconds.WithLabelValues(command).Observe(took.Seconds())
	m.recent.Observe(time.Now(), took)
	if attempts > 0 {
		m.attempts.WithLabelValues(command).Observe(float64(attempts))
	}
	m.eventsWritten.Add(float64(events))
}

// RecentLatency returns exact quantiles of the command latencies of the
// last DefaultWindow (at most DefaultWindowSamples of them): what a
// dashboard shows, finer than the histogram's buckets.
func (m *Metrics) RecentLatency(now time.Time) Quantiles { return m.recent.Quantiles(now) }

// ObserveRetry counts a retry after a version conflict.
func (m *Metrics) ObserveRetry() { m.retries.Inc() }

// ObserveAdmission records how long a command waited for admission.
func (m *Metrics) ObserveAdmission(wait time.Duration) { m.admissionWait.Observe(wait.Seconds()) }

// ObserveApplied counts events applied by a projection.
// A call, even with n = 0, marks this instance as one that runs
// projections: only such an instance reports the projection gauges, so that
// the execute function's pushed groups hold no stale lag figures.
func (m *Metrics) ObserveApplied(name string, n int) {
	m.projecting.Store(true)
	if n > 0 {
		m.applied.WithLabelValues(name).Add(float64(n))
	}
}

func (m *Metrics) observeStore(op string, start time.Time) {
	m.storeSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *Metrics) seeStreams(streams ...eventlog.StreamID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range streams {
		if len(m.streams) >= maxActiveStreams {
			return
		}
		m.streams[s] = struct{}{}
	}
}

// stateCollector reports values read at collection time: cache counters,
// active streams, database sizes and projection positions.
type stateCollector struct {
	m *Metrics
}

var (
	descCacheHits      = prometheus.NewDesc("eventcore_cache_hits_total", "Warm commands whose cached state was current: no events read.", nil, nil)
	descCachePartial   = prometheus.NewDesc("eventcore_cache_partial_hits_total", "Warm commands that read only the events after their cached state.", nil, nil)
	descCacheCaughtUp  = prometheus.NewDesc("eventcore_cache_caught_up_events_total", "Events read and folded by partial hits.", nil, nil)
	descCacheMisses    = prometheus.NewDesc("eventcore_cache_misses_total", "Commands with no usable cached state: a full replay.", nil, nil)
	descCacheEvictions = prometheus.NewDesc("eventcore_cache_evictions_total", "Cache entries evicted for memory or expiry.", nil, nil)
	descCacheBytes     = prometheus.NewDesc("eventcore_cache_bytes", "Bytes of state held by the cache.", nil, nil)
	descActiveStreams  = prometheus.NewDesc("eventcore_active_streams", "Distinct streams this instance has read or written.", nil, nil)
	descDBSize         = prometheus.NewDesc("eventcore_database_size_bytes", "Size of an SQLite database file with its WAL.", []string{"database"}, nil)
	descCheckpoint     = prometheus.NewDesc("eventcore_projection_checkpoint_position", "Last position a projection applied.", []string{"projection"}, nil)
	descHead           = prometheus.NewDesc("eventcore_projection_head_position", "Head position of the event log.", nil, nil)
	descLag            = prometheus.NewDesc("eventcore_projection_lag_events", "Events a projection is behind the head.", []string{"projection"}, nil)
	descDeadLetters    = prometheus.NewDesc("eventcore_projection_dead_letters", "Events a projection skipped as dead letters.", []string{"projection"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheHits, descCachePartial, descCacheCaughtUp, descCacheMisses, descCacheEvictions,
		descCacheBytes, descActiveStreams, descDBSize, descCheckpoint, descHead, descLag, descDeadLetters} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	src, active := c.m.src, len(c.m.streams)
	c.m.mu.Unlock()
	if cc := src.Cache; cc != nil {
		st := cc.Stats()
		ch <- prometheus.MustNewConstMetric(descCacheHits, prometheus.CounterValue, float64(st.Hits))
		ch <- prometheus.MustNewConstMetric(descCachePartial, prometheus.CounterValue, float64(st.PartialHits))
		ch <- prometheus.MustNewConstMetric(descCacheCaughtUp, prometheus.CounterValue, float64(st.CaughtUp))
		ch <- prometheus.MustNewConstMetric(descCacheMisses, prometheus.CounterValue, float64(st.Misses))
		ch <- prometheus.MustNewConstMetric(descCacheEvictions, prometheus.CounterValue, float64(st.Evictions))
		ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(st.Bytes))
	}
	ch <- prometheus.MustNewConstMetric(descActiveStreams, prometheus.GaugeValue, float64(active))
	for name, path := range src.Databases {
		var size int64
		for _, p := range []string{path, path + "-wal"} {
			if fi, err := os.Stat(p); err == nil {
				size += fi.Size()
			}
		}
		ch <- prometheus.MustNewConstMetric(descDBSize, prometheus.GaugeValue, float64(size), name)
	}
	if r := src.Projections; r != nil && c.m.projecting.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		status, err := r.Status(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descHead, errors.Join(errors.New("projection status"), err))
			return
		}
		for i, s := range status {
			if i == 0 {
				ch <- prometheus.MustNewConstMetric(descHead, prometheus.GaugeValue, float64(s.Head))
			}
			ch <- prometheus.MustNewConstMetric(descCheckpoint, prometheus.GaugeValue, float64(s.Checkpoint), s.Name)
			ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(s.Lag), s.Name)
			ch <- prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(s.DeadLetters), s.Name)
		}
	}
}
