// Package app assembles a running instance from the configuration: the
// event log, the read-model database, the projection runner, the warm cache
// and the two handlers, with their Litestream replicas when configured. The
// Lambda mains and the local runner share it.
package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/postgres/rdsiam"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/handler"
	"github.com/eventcore-go/eventcore/metrics"
	"github.com/eventcore-go/eventcore/projection"
	"github.com/eventcore-go/eventcore/replica"
)

// Role is the part an instance plays. It matters only with a replica
// (EVENTCORE_REPLICA_URL): without one, every role opens the same files.
type Role int

const (
	// RoleLocal writes the event log and the read models (the local
	// runner): both are replicated when their replica URLs are set.
	RoleLocal Role = iota
	// RoleExecute writes the event log (the execute function).
	RoleExecute
	// RoleProject reads the event log from the writer's replica and writes
	// the read models (the project function).
	RoleProject
)

// App is one running instance.
type App struct {
	Config config.Config
	Role   Role
	// Store is the event log itself: the SQLite store, or in the project
	// role with a replica, the Follower that keeps a copy current, or with
	// EVENTCORE_DATABASE_URL the PostgreSQL store (every role then shares
	// one database, and ReadDB is that database too).
	Store   eventlog.Store
	ReadDB  *sql.DB
	Runner  *projection.Runner
	Cache   *cache.Cache
	Execute *handler.Execute
	Project *handler.Project
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Pusher is set when EVENTCORE_PUSHGATEWAY_URL is.
	Pusher *metrics.Pusher

	reg        *handler.Registry
	logWriter  *replica.Writer   // the event log's replica, when this instance writes it
	follower   *replica.Follower // the event log's replica, when this instance follows it
	readWriter *replica.Writer   // the read models' replica

	life lifecycle

	// password makes an IAM authentication token per connection, with
	// EVENTCORE_DATABASE_IAM_AUTH.
	password func(context.Context) (string, error)

	progress Progress // the local runner's
}

// iamPassword returns a maker of IAM authentication tokens for the user and
// host:port (default port 5432) of rawURL, signed with the credentials and
// region of the environment (the function's role on Lambda).
func iamPassword(ctx context.Context, rawURL string) (func(context.Context) (string, error), error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("the database URL is not a URL")
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	endpoint, user := net.JoinHostPort(u.Hostname(), port), u.User.Username()
	aws, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if aws.Region == "" {
		return nil, errors.New("no AWS region (AWS_REGION) to sign the token for")
	}
	return func(ctx context.Context) (string, error) {
		return rdsiam.Token(ctx, aws.Credentials, aws.Region, endpoint, user, time.Now())
	}, nil
}

// replicatedPart is a database this instance writes through a Writer, and
// how to close and reopen it around a reload.
type replicatedPart struct {
	name   string
	writer *replica.Writer
	close  func() error
	reopen func(context.Context) error
}

// parts are the replicated databases this instance writes.
func (a *App) parts() []replicatedPart {
	var out []replicatedPart
	if a.logWriter != nil {
		out = append(out, replicatedPart{"event log", a.logWriter, func() error { return a.Store.Close() }, a.reopenLog})
	}
	if a.readWriter != nil {
		out = append(out, replicatedPart{"read models", a.readWriter, func() error { return a.ReadDB.Close() }, a.reopenReadModels})
	}
	return out
}

// Open opens the instance of the local runner (RoleLocal); see OpenAs.
func Open(ctx context.Context, cfg config.Config, reg *handler.Registry, logger *slog.Logger) (*App, error) {
	return OpenAs(ctx, RoleLocal, cfg, reg, logger)
}

// OpenAs opens the event log and the read-model database named by cfg for
// role and builds both handlers over reg. With a replica, a missing or
// outdated local file is restored first. Errors name the variable whose
// setting failed.
func OpenAs(ctx context.Context, role Role, cfg config.Config, reg *handler.Registry, logger *slog.Logger) (*App, error) {
	return openAs(ctx, role, cfg, reg, logger, Progress{})
}

func openAs(ctx context.Context, role Role, cfg config.Config, reg *handler.Registry, logger *slog.Logger, progress Progress) (*App, error) {
	if logger == nil {
		logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	for _, p := range []struct{ name, path string }{{"EVENTCORE_DB", cfg.DB}, {"EVENTCORE_READ_DB", cfg.ReadDB}} {
		if cfg.Postgres() {
			break
		}
		if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	a := &App{Config: cfg, Role: role, Logger: logger, reg: reg, Metrics: metrics.New(metrics.Sources{}), progress: progress}
	if err := a.openLog(ctx); err != nil {
		return nil, errors.Join(err, a.Close())
	}
	if err := a.openReadModels(ctx); err != nil {
		return nil, errors.Join(err, a.Close())
	}
	a.Cache = cache.New(cfg.CacheTTL, cfg.CacheMaxBytes)
	if a.Replicated() {
		// Litestream's own series (sync counts and errors, WAL size, ...)
		// live on Prometheus's default registry.
		a.Metrics.Include(metrics.Prefixed(prometheus.DefaultGatherer, "litestream_"))
	}
	a.build()
	if cfg.PushgatewayURL != "" {
		job, instance := pushIdentity(cfg)
		var err error
		if a.Pusher, err = metrics.NewPusher(a.Metrics, cfg.PushgatewayURL, job, instance, cfg.PushTimeout, logger); err != nil {
			return nil, errors.Join(fmt.Errorf("EVENTCORE_PUSHGATEWAY_URL: %w", err), a.Close())
		}
	}
	return a, nil
}

func (a *App) replicaOptions(url, path string) replica.Options {
	_, owner := pushIdentity(a.Config)
	return replica.Options{
		URL: url, Path: path, SyncTimeout: a.Config.ReplicaTimeout, LeaseTTL: a.Config.ReplicaLeaseTTL, Owner: owner, Logger: a.Logger,
		// On Lambda a lease still held by a dead predecessor answers 503s
		// until it expires; locally a second runner fails at start.
		StartWithoutLease: a.Config.OnLambda,
		RestoreProgress:   a.progress.Restore,
	}
}

// openLog opens the event log: the SQLite file, replicated by a Writer
// when this instance writes it, or a Follower of the writer's replica.
func (a *App) openLog(ctx context.Context) error {
	cfg := a.Config
	if cfg.Postgres() {
		opts := cfg.PostgresOptions()
		opts.Logger = a.Logger
		if cfg.DatabaseIAMAuth {
			var err error
			if a.password, err = iamPassword(ctx, cfg.DatabaseURL); err != nil {
				return fmt.Errorf("EVENTCORE_DATABASE_IAM_AUTH: %w", err)
			}
		}
		opts.Password = a.password
		s, err := postgres.Open(ctx, cfg.DatabaseURL, opts)
		if err != nil {
			return fmt.Errorf("EVENTCORE_DATABASE_URL: %w", err)
		}
		a.Store = s
		return nil
	}
	fail := func(err error) error { return fmt.Errorf("EVENTCORE_DB: %w", err) }
	if cfg.ReplicaURL != "" && a.Role == RoleProject {
		f, err := replica.OpenFollower(ctx, a.replicaOptions(cfg.ReplicaURL, cfg.DB), cfg.StoreOptions())
		if err != nil {
			return fmt.Errorf("EVENTCORE_REPLICA_URL: %w", err)
		}
		a.follower, a.Store = f, f
		return nil
	}
	if cfg.ReplicaURL != "" && a.logWriter == nil {
		w, err := replica.OpenWriter(ctx, a.replicaOptions(cfg.ReplicaURL, cfg.DB))
		if err != nil {
			return fmt.Errorf("EVENTCORE_REPLICA_URL: %w", err)
		}
		a.logWriter = w
	}
	opts := cfg.StoreOptions()
	opts.Logger = a.Logger
	s, err := sqlite.Open(ctx, cfg.DB, opts)
	if err != nil {
		return fail(err)
	}
	a.Store = s
	if a.logWriter != nil {
		if err := a.logWriter.Start(ctx); err != nil {
			return fmt.Errorf("EVENTCORE_REPLICA_URL: %w", err)
		}
	}
	return nil
}

// openReadModels opens the read-model database and the projection runner,
// replicated when this instance writes the read models and
// EVENTCORE_READ_REPLICA_URL is set.
func (a *App) openReadModels(ctx context.Context) error {
	cfg := a.Config
	if cfg.Postgres() {
		db, err := postgres.OpenDB(ctx, cfg.DatabaseURL, postgres.DBOptions{ConnectBudget: cfg.ConnectBudget, Logger: a.Logger, Password: a.password})
		if err != nil {
			return fmt.Errorf("EVENTCORE_DATABASE_URL: %w", err)
		}
		a.ReadDB = db
		return a.newRunner(ctx)
	}
	if cfg.ReadReplicaURL != "" && a.Role != RoleExecute && a.readWriter == nil {
		w, err := replica.OpenWriter(ctx, a.replicaOptions(cfg.ReadReplicaURL, cfg.ReadDB))
		if err != nil {
			return fmt.Errorf("EVENTCORE_READ_REPLICA_URL: %w", err)
		}
		a.readWriter = w
	}
	// The read models' replica, when there is one, runs their checkpoints
	// (the event log's replica has nothing to do with this file).
	readOpts := cfg.StoreOptions()
	readOpts.NoAutoCheckpoint = a.readWriter != nil
	db, err := sql.Open("sqlite", readOpts.ReadModelDSN(cfg.ReadDB))
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		if db != nil {
			_ = db.Close()
		}
		return fmt.Errorf("EVENTCORE_READ_DB: %w", err)
	}
	a.ReadDB = db
	if err := a.newRunner(ctx); err != nil {
		return err
	}
	if a.readWriter != nil {
		if err := a.readWriter.Start(ctx); err != nil {
			return fmt.Errorf("EVENTCORE_READ_REPLICA_URL: %w", err)
		}
	}
	return nil
}

// newRunner (re)creates the projection runner over the open databases.
func (a *App) newRunner(ctx context.Context) error {
	if a.Runner != nil {
		// Replaced between units of work: nothing uses the old one now.
		_ = a.Runner.Close()
	}
	opts := projection.Options{BatchSize: a.Config.ProjectionBatch, Logger: a.Logger}
	variable := "EVENTCORE_READ_DB"
	if a.Config.Postgres() {
		opts.Dialect, variable = projection.Postgres, "EVENTCORE_DATABASE_URL"
	}
	var err error
	a.Runner, err = projection.NewRunner(ctx, a.ReadDB, metrics.InstrumentStore(a.Store, a.Metrics), opts, a.reg.Projectors()...)
	if err != nil {
		return fmt.Errorf("%s: %w", variable, err)
	}
	return nil
}

// build (re)creates the handlers over the open databases.
func (a *App) build() {
	store := metrics.InstrumentStore(a.Store, a.Metrics)
	if a.logWriter != nil {
		store = &guardedStore{Store: store, w: a.logWriter}
	}
	files := map[string]string{"events": a.Config.DB, "projections": a.Config.ReadDB}
	if a.Config.Postgres() {
		files = nil // the sizes of SQLite files; PostgreSQL reports its own
	}
	a.Metrics.Watch(metrics.Sources{Cache: a.Cache, Projections: a.Runner, Databases: files})
	opts := handler.ExecuteOptions{
		Cache: a.Cache, SnapshotThreshold: a.Config.SnapshotThreshold, Logger: a.Logger, Observer: a.Metrics,
	}
	if a.logWriter != nil {
		opts.Durable = a.logWriter.Sync
	}
	after := func(eventlog.Position) {}
	if a.Execute != nil && a.Execute.AfterCommand != nil {
		after = a.Execute.AfterCommand
	}
	a.Execute = handler.NewExecute(a.reg, store, opts)
	a.Execute.AfterCommand = after
	a.Project = handler.NewProject(a.reg, store, a.Runner, a.Logger)
	a.Project.Observer = a.Metrics
}

// guardedStore checks the writer lease before every append, so that a
// process that is not the single writer never writes.
type guardedStore struct {
	eventlog.Store
	w *replica.Writer
}

func (s *guardedStore) Append(ctx context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	if err := s.w.Guard(ctx); err != nil {
		return eventlog.AppendResult{}, err
	}
	return s.Store.Append(ctx, req)
}

// LoadSnapshot and SaveSnapshot pass the snapshot capability through.
func (s *guardedStore) LoadSnapshot(ctx context.Context, key string) (eventlog.Snapshot, bool, error) {
	if ss, ok := s.Store.(eventlog.SnapshotStore); ok {
		return ss.LoadSnapshot(ctx, key)
	}
	return eventlog.Snapshot{}, false, nil
}

func (s *guardedStore) SaveSnapshot(ctx context.Context, snap eventlog.Snapshot) error {
	if ss, ok := s.Store.(eventlog.SnapshotStore); ok {
		if err := s.w.Guard(ctx); err != nil {
			return err
		}
		return ss.SaveSnapshot(ctx, snap)
	}
	return nil
}

// reopenLog opens the reloaded log and rebuilds what rests on it.
func (a *App) reopenLog(ctx context.Context) error {
	if err := a.openLog(ctx); err != nil {
		return err
	}
	if err := a.newRunner(ctx); err != nil {
		return err
	}
	a.Cache = cache.New(a.Config.CacheTTL, a.Config.CacheMaxBytes) // states of the old history must go
	a.build()
	if a.Role != RoleExecute {
		// The read models may hold events of the local history that the
		// reload discarded: they are rebuilt from the log as it now is.
		for _, name := range a.Runner.Names() {
			if err := a.Runner.Rebuild(ctx, name); err != nil {
				return fmt.Errorf("rebuild projection %s after the reload: %w", name, err)
			}
		}
		a.rebuilt(ctx)
	}
	return nil
}

// reopenReadModels opens the reloaded read models and rebuilds the
// handlers over them.
func (a *App) reopenReadModels(ctx context.Context) error {
	if err := a.openReadModels(ctx); err != nil {
		return err
	}
	a.build()
	return nil
}

// SyncReadModels makes the read models' changes durable in their replica,
// when they have one. Read models can be rebuilt from the log, so a
// failure is logged and costs only a longer catch-up after a restore.
func (a *App) SyncReadModels(ctx context.Context) {
	if a.readWriter == nil {
		return
	}
	if err := a.readWriter.Sync(ctx); err != nil {
		a.Logger.WarnContext(ctx, "read-model replica sync failed", "error", err.Error())
	}
}

// Maintain runs Litestream's periodic work (compaction, snapshots,
// retention) on the replicas this instance writes.
func (a *App) Maintain(ctx context.Context) error {
	var errs []error
	for _, w := range []*replica.Writer{a.logWriter, a.readWriter} {
		if w != nil {
			errs = append(errs, w.Maintain(ctx))
		}
	}
	return errors.Join(errs...)
}

// Replicated reports whether the event log has a replica.
func (a *App) Replicated() bool { return a.logWriter != nil || a.follower != nil }

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

// Close closes the databases, syncing the replicas a last time (only while
// this instance still holds their leases) and releasing the leases. It is
// Shutdown without a deadline.
func (a *App) Close() error {
	return a.Shutdown(context.Background())
}

// closeAll closes the databases within ctx's deadline. The event log's
// replica is synced a last time and its lease released first, beside the
// read models' (a successor waits for the log's lease); the log's store is
// closed after that, so that a command still in flight cannot hold the
// release up.
func (a *App) closeAll(ctx context.Context) error {
	var wg sync.WaitGroup
	var readErr error
	wg.Go(func() {
		var errs []error
		if a.ReadDB != nil {
			errs = append(errs, a.ReadDB.Close())
		}
		if a.readWriter != nil {
			errs = append(errs, a.readWriter.Close(ctx))
		}
		readErr = errors.Join(errs...)
	})
	var errs []error
	if a.logWriter != nil {
		errs = append(errs, a.logWriter.Close(ctx))
	}
	if a.Store != nil {
		errs = append(errs, a.Store.Close())
	}
	wg.Wait()
	return errors.Join(append(errs, readErr)...)
}
