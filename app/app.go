// Package app assembles a running instance from the configuration: the
// event log, the read-model database, the projection runner, the warm cache
// and the two handlers. The Lambda mains and the local runner share it.
package app

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/metrics"
	"github.com/eventcore-go/eventcore/projection"
)

// App is one running instance.
type App struct {
	Config  config.Config
	Store   *sqlite.Store
	ReadDB  *sql.DB
	Runner  *projection.Runner
	Cache   *cache.Cache
	Execute *handler.Execute
	Project *handler.Project
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Pusher is set when EVENTCORE_PUSHGATEWAY_URL is.
	Pusher *metrics.Pusher
}

// Open opens the event log and the read-model database named by cfg and
// builds both handlers over reg. Errors name the variable of the path that
// failed.
func Open(ctx context.Context, cfg config.Config, reg *handler.Registry, logger *slog.Logger) (*App, error) {
	if logger == nil {
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	for _, p := range []struct{ name, path string }{{"EVENTCORE_DB", cfg.DB}, {"EVENTCORE_READ_DB", cfg.ReadDB}} {
		if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	sqliteStore, err := sqlite.Open(ctx, cfg.DB, cfg.StoreOptions())
	if err != nil {
		return nil, fmt.Errorf("EVENTCORE_DB: %w", err)
	}
	a := &App{Config: cfg, Store: sqliteStore, Logger: logger, Metrics: metrics.New(metrics.Sources{})}
	store := metrics.InstrumentStore(sqliteStore, a.Metrics)
	a.ReadDB, err = sql.Open("sqlite", cfg.StoreOptions().DSN(cfg.ReadDB, "immediate"))
	if err == nil {
		err = a.ReadDB.PingContext(ctx)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("EVENTCORE_READ_DB: %w", err), a.Close())
	}
	a.Runner, err = projection.NewRunner(ctx, a.ReadDB, store, projection.Options{BatchSize: cfg.ProjectionBatch, Logger: logger}, reg.Projectors()...)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("EVENTCORE_READ_DB: %w", err), a.Close())
	}
	a.Cache = cache.New(cfg.CacheTTL, cfg.CacheMaxBytes)
	a.Metrics.Watch(metrics.Sources{
		Cache: a.Cache, Projections: a.Runner,
		Databases: map[string]string{"events": cfg.DB, "projections": cfg.ReadDB},
	})
	a.Execute = handler.NewExecute(reg, store, handler.ExecuteOptions{
		Cache: a.Cache, SnapshotThreshold: cfg.SnapshotThreshold, Logger: logger, Observer: a.Metrics,
	})
	a.Project = handler.NewProject(reg, store, a.Runner, logger)
	a.Project.Observer = a.Metrics
	if cfg.PushgatewayURL != "" {
		job, instance := pushIdentity(cfg)
		if a.Pusher, err = metrics.NewPusher(a.Metrics, cfg.PushgatewayURL, job, instance, cfg.PushTimeout, logger); err != nil {
			return nil, errors.Join(fmt.Errorf("EVENTCORE_PUSHGATEWAY_URL: %w", err), a.Close())
		}
	}
	return a, nil
}

// pushIdentity is the grouping key of this instance's metrics: on Lambda
// the function's name and the instance's log stream, locally "local" and
// the host name with the process id.
func pushIdentity(cfg config.Config) (job, instance string) {
	job, instance = cfg.FunctionName, cfg.LogStream
	if job == "" {
		job = "local"
	}
	if instance == "" {
		host, _ := os.Hostname()
		instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return job, instance
}

// Push pushes the metrics when a gateway is configured; it never fails or
// outlasts the push timeout.
func (a *App) Push(ctx context.Context) {
	if a.Pusher != nil {
		_ = a.Pusher.Push(ctx)
	}
}

// Close closes the databases.
func (a *App) Close() error {
	var errs []error
	if a.ReadDB != nil {
		errs = append(errs, a.ReadDB.Close())
	}
	if a.Store != nil {
		errs = append(errs, a.Store.Close())
	}
	return errors.Join(errs...)
}

// InvokeFunc is a Lambda handler over raw events.
type InvokeFunc func(ctx context.Context, payload json.RawMessage) (any, error)

// StartLambda is the whole main of a function: it loads the configuration,
// registers the domain, opens the App and hands pick(app) to the Lambda
// runtime. Bad configuration ends the process with one line naming the
// variable. On SIGTERM (the runtime's shutdown) the databases are closed.
func StartLambda(name string, register func(*handler.Registry), pick func(*App) InvokeFunc) {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+": "+err.Error())
		os.Exit(1)
	}
	reg := handler.NewRegistry()
	register(reg)
	a, err := Open(context.Background(), cfg, reg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+": "+err.Error())
		os.Exit(1)
	}
	invoke := pick(a)
	// Lambda freezes the instance as soon as the handler returns, so the
	// metrics are pushed before it does.
	pushed := func(ctx context.Context, payload json.RawMessage) (any, error) {
		out, err := invoke(ctx, payload)
		a.Push(ctx)
		return out, err
	}
	lambda.StartWithOptions(pushed, lambda.WithEnableSIGTERM(func() {
		if a.Pusher != nil {
			_ = a.Pusher.Delete()
		}
		_ = a.Close()
		os.Exit(0) // the runtime is shutting the instance down; nothing is left to do
	}))
}
