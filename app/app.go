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
	store, err := sqlite.Open(ctx, cfg.DB, cfg.StoreOptions())
	if err != nil {
		return nil, fmt.Errorf("EVENTCORE_DB: %w", err)
	}
	a := &App{Config: cfg, Store: store, Logger: logger}
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
	a.Execute = handler.NewExecute(reg, store, handler.ExecuteOptions{Cache: a.Cache, SnapshotThreshold: cfg.SnapshotThreshold, Logger: logger})
	a.Project = handler.NewProject(reg, store, a.Runner, logger)
	return a, nil
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
	lambda.StartWithOptions(pick(a), lambda.WithEnableSIGTERM(func() { _ = a.Close() }))
}
