package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/dashboard"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/handler"
)

// requestTimeout bounds each request as API Gateway's integration timeout
// and the functions' timeouts do on AWS: a read waiting for ?min_position
// answers 503 projection_behind instead of waiting forever.
var requestTimeout = 30 * time.Second

// server serves the execute and project handlers, /healthz, /metrics and
// the live dashboard (GET or HEAD / and /dashboard/...); every request of
// the handlers is a unit of work of the App.
type server struct {
	app     *app.App
	wake    chan struct{}
	metrics http.Handler
	dash    *dashboard.Dashboard // sampled by its Run, started with the server
}

func newServer(a *app.App) *server {
	s := &server{
		app: a, wake: make(chan struct{}, 1),
		metrics: promhttp.HandlerFor(a.Metrics.Gatherer(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
		dash:    dashboard.New(a.Metrics.Gatherer(), a.Metrics.RecentLatency, dashboard.Options{Logger: a.Logger}),
	}
	a.Execute.AfterCommand = func(eventlog.Position) {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
		return
	case "/metrics":
		s.metrics.ServeHTTP(w, r)
		return
	}
	// The dashboard's pages are read; any other method on its paths gets
	// the API's JSON 404, as every path no route has.
	if dashboard.Handles(r.URL.Path) && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.dash.ServeHTTP(w, r)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	ctx = handler.WithRequestID(ctx, uuid.NewString())
	served := false
	_ = s.app.Do(ctx, app.Request, func(ctx context.Context) error {
		served = true
		// The handlers of this unit: a reload replaces them between units.
		var h http.Handler = s.app.Project
		if strings.HasPrefix(r.URL.Path, "/commands/") {
			h = s.app.Execute
		}
		h.ServeHTTP(w, r.WithContext(ctx))
		return nil
	})
	if !served {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"the runner is shutting down"}}`)
	}
}

// projectLoop runs a Scheduled unit of work (the projections caught up,
// then the replicas' maintenance when due) after commands, without
// holding up their answers, and on a timer, until ctx ends. Like every
// unit, it first renews the writer leases when due and reloads a replica
// that another writer moved, so that an idle runner notices too.
func (s *server) projectLoop(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	failures := catchUpLog{log: s.app.Logger}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-ticker.C:
		}
		run, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.app.Do(run, app.Scheduled, func(ctx context.Context) error {
			_, err := s.app.Project.CatchUp(ctx)
			return err
		})
		if ctx.Err() == nil {
			failures.done(err)
		}
		cancel()
	}
}

// catchUpLog logs the background catch-up's failures once per episode, as
// a failure that lasts (a full read-model disk) fails every interval the
// same way: a failure at error level when it is the first or its error
// differs from the last one, the same failure again at debug level, and
// the first success after them at info level with their count. Not safe
// for concurrent use: projectLoop owns it.
type catchUpLog struct {
	log      *slog.Logger
	failures int    // since the last success
	last     string // the last failure's error
}

// done records the outcome of one catch-up.
func (c *catchUpLog) done(err error) {
	switch {
	case err == nil && c.failures > 0:
		c.log.Info("projection catch-up works again", "failures", c.failures)
		c.failures, c.last = 0, ""
	case err == nil:
	case c.failures == 0 || err.Error() != c.last:
		c.failures++
		c.last = err.Error()
		c.log.Error("projection catch-up failed", "error", c.last)
	default:
		c.failures++
		c.log.Debug("projection catch-up failed again", "error", c.last, "failures", c.failures)
	}
}
