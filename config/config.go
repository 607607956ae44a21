// Package config reads the runtime configuration from the environment, with
// the same names locally and on Lambda. Every error names its variable in
// one line, so that bad configuration fails at start.
package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/projection"
	"github.com/eventcore-go/eventcore/replica"
)

// Config is the runtime configuration.
type Config struct {
	DB                 string // EVENTCORE_DB
	ReadDB             string // EVENTCORE_READ_DB
	Sync               sqlite.Synchronous
	Journal            sqlite.Journal
	ReplicaURL         string        // EVENTCORE_REPLICA_URL
	ReadReplicaURL     string        // EVENTCORE_READ_REPLICA_URL
	ReplicaTimeout     time.Duration // EVENTCORE_REPLICA_TIMEOUT
	ReplicaLeaseTTL    time.Duration // EVENTCORE_REPLICA_LEASE_TTL
	CacheTTL           time.Duration // EVENTCORE_CACHE_TTL
	CacheMaxBytes      int64         // EVENTCORE_CACHE_MAX_BYTES
	AllowEphemeral     bool          // EVENTCORE_ALLOW_EPHEMERAL
	PushgatewayURL     string        // EVENTCORE_PUSHGATEWAY_URL
	PushTimeout        time.Duration // EVENTCORE_PUSH_TIMEOUT
	PushInterval       time.Duration // EVENTCORE_PUSH_INTERVAL; 0 = after every invocation
	ProjectionBatch    int           // EVENTCORE_PROJECTION_BATCH
	ProjectionInterval time.Duration // EVENTCORE_PROJECTION_INTERVAL
	SnapshotThreshold  int           // EVENTCORE_SNAPSHOT_THRESHOLD
	MaxInFlight        int           // EVENTCORE_MAX_IN_FLIGHT: requests the local runner serves at once
	OnLambda           bool          // AWS_LAMBDA_FUNCTION_NAME is set
	FunctionName       string        // AWS_LAMBDA_FUNCTION_NAME, set by the Lambda runtime
	LogStream          string        // AWS_LAMBDA_LOG_STREAM_NAME: names this instance
	// DatabaseURL is EVENTCORE_DATABASE_URL: a postgres:// URL that puts
	// the event log, the read models and their checkpoints in PostgreSQL
	// instead of SQLite; EVENTCORE_DB, EVENTCORE_READ_DB, EVENTCORE_SYNC
	// and EVENTCORE_JOURNAL are then ignored. Empty = SQLite.
	DatabaseURL string
	// DatabaseMaxConns is EVENTCORE_DATABASE_MAX_CONNS, the event store's
	// pool size in PostgreSQL mode (0 otherwise).
	DatabaseMaxConns int32
	// ConnectBudget is EVENTCORE_DATABASE_CONNECT_BUDGET, how long opening
	// keeps retrying a PostgreSQL server that refuses connections (a
	// cluster resuming from auto-pause) in PostgreSQL mode (0 otherwise).
	ConnectBudget time.Duration
	// DatabaseIAMAuth is EVENTCORE_DATABASE_IAM_AUTH: connect with an IAM
	// authentication token (RDS Proxy with IAMAuth REQUIRED, or RDS) made
	// from the function's role instead of the URL's password.
	DatabaseIAMAuth bool
	// MaxConcurrency is AWS_LAMBDA_MAX_CONCURRENCY, which Lambda Managed
	// Instances set: how many invocations one execution environment runs
	// at once (0 where it is not set: one at a time).
	MaxConcurrency int
}

// DefaultMaxInFlight is how many requests the local runner serves at once
// by default; more answer 503 overloaded.
const DefaultMaxInFlight = 512

// LambdaConnectBudget is the default of EVENTCORE_DATABASE_CONNECT_BUDGET
// on Lambda: within the 10-second init phase, with room for the schema
// check after the connection. An init that fails is run again at the
// next invocation, by which time a resuming cluster has made progress.
const LambdaConnectBudget = 8 * time.Second

// Local defaults of the database paths.
var (
	DefaultDB     = filepath.Join("data", "events.db")
	DefaultReadDB = filepath.Join("data", "projections.db")
)

// Load reads the configuration through getenv (os.Getenv in the mains).
// On Lambda (AWS_LAMBDA_FUNCTION_NAME set) EVENTCORE_DB and
// EVENTCORE_READ_DB are required, and the event log must be on an EFS mount
// (/mnt/...) or replicated unless EVENTCORE_ALLOW_EPHEMERAL=true: a log in
// an instance's /tmp alone would silently lose data.
// EVENTCORE_DATABASE_URL selects PostgreSQL instead: the SQLite paths are
// then neither required nor used, and a replica URL beside it is an error.
func Load(getenv func(string) string) (Config, error) {
	c := Config{FunctionName: getenv("AWS_LAMBDA_FUNCTION_NAME"), LogStream: getenv("AWS_LAMBDA_LOG_STREAM_NAME")}
	c.OnLambda = c.FunctionName != ""
	var err error
	str := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	fail := func(name string, e error) (Config, error) {
		return Config{}, fmt.Errorf("%s: %w", name, e)
	}
	c.DatabaseURL = str("EVENTCORE_DATABASE_URL", "")
	if c.DatabaseURL != "" {
		if _, err := postgres.ParseURL(c.DatabaseURL); err != nil {
			return fail("EVENTCORE_DATABASE_URL", err)
		}
		for _, other := range []string{"EVENTCORE_REPLICA_URL", "EVENTCORE_READ_REPLICA_URL"} {
			if str(other, "") != "" {
				return fail("EVENTCORE_DATABASE_URL", fmt.Errorf("cannot be combined with %s: Litestream replicates SQLite files, PostgreSQL keeps its own copies; unset one", other))
			}
		}
		n, err := positiveInt(str("EVENTCORE_DATABASE_MAX_CONNS", strconv.Itoa(postgres.DefaultMaxConns)), 1<<10)
		if err == nil && n <= postgres.DefaultWriters {
			err = fmt.Errorf("%d leaves no connection for reads beside the %d writers; use at least %d", n, postgres.DefaultWriters, postgres.DefaultWriters+1)
		}
		if err != nil {
			return fail("EVENTCORE_DATABASE_MAX_CONNS", err)
		}
		c.DatabaseMaxConns = int32(n)
		budget := postgres.DefaultConnectBudget
		if c.OnLambda {
			budget = LambdaConnectBudget
		}
		if c.ConnectBudget, err = duration(str("EVENTCORE_DATABASE_CONNECT_BUDGET", budget.String())); err != nil {
			return fail("EVENTCORE_DATABASE_CONNECT_BUDGET", err)
		}
		if c.DatabaseIAMAuth, err = strconv.ParseBool(str("EVENTCORE_DATABASE_IAM_AUTH", "false")); err != nil {
			return fail("EVENTCORE_DATABASE_IAM_AUTH", fmt.Errorf("%q is not true or false", getenv("EVENTCORE_DATABASE_IAM_AUTH")))
		}
		if c.DatabaseIAMAuth {
			if u, _ := url.Parse(c.DatabaseURL); u.User.Username() == "" || u.Hostname() == "" {
				return fail("EVENTCORE_DATABASE_IAM_AUTH", fmt.Errorf("needs a user and a host in EVENTCORE_DATABASE_URL, such as postgres://app@proxy:5432/db"))
			}
		}
	}
	if c.OnLambda && c.DatabaseURL == "" {
		c.DB, c.ReadDB = str("EVENTCORE_DB", ""), str("EVENTCORE_READ_DB", "")
		if c.DB == "" {
			return fail("EVENTCORE_DB", fmt.Errorf("required on Lambda (an EFS path under /mnt/)"))
		}
		if c.ReadDB == "" {
			return fail("EVENTCORE_READ_DB", fmt.Errorf("required on Lambda (an EFS path under /mnt/)"))
		}
	} else if c.DatabaseURL == "" {
		c.DB, c.ReadDB = str("EVENTCORE_DB", DefaultDB), str("EVENTCORE_READ_DB", DefaultReadDB)
	}
	for _, p := range []struct{ name, path string }{{"EVENTCORE_DB", c.DB}, {"EVENTCORE_READ_DB", c.ReadDB}} {
		// The path goes into an SQLite DSN: "?" or "#" would add parameters,
		// and "file:" or ":memory:" would open something else than a file.
		if strings.ContainsAny(p.path, "?#") || strings.HasPrefix(p.path, "file:") || p.path == ":memory:" {
			return fail(p.name, fmt.Errorf("%q must be a plain file path without ? or #", p.path))
		}
	}
	if c.Sync, err = sqlite.ParseSynchronous(str("EVENTCORE_SYNC", "full")); err != nil {
		return fail("EVENTCORE_SYNC", err)
	}
	if c.Journal, err = sqlite.ParseJournal(str("EVENTCORE_JOURNAL", "wal")); err != nil {
		return fail("EVENTCORE_JOURNAL", err)
	}
	c.ReplicaURL = str("EVENTCORE_REPLICA_URL", "")
	if c.ReplicaURL != "" {
		if err := replica.ValidateURL(c.ReplicaURL); err != nil {
			return fail("EVENTCORE_REPLICA_URL", err)
		}
		if c.Journal != sqlite.JournalWAL {
			return fail("EVENTCORE_JOURNAL", fmt.Errorf("%q cannot be used with EVENTCORE_REPLICA_URL: Litestream replicates the WAL; use wal", c.Journal))
		}
	}
	c.ReadReplicaURL = str("EVENTCORE_READ_REPLICA_URL", "")
	if c.ReadReplicaURL != "" {
		if err := replica.ValidateURL(c.ReadReplicaURL); err != nil {
			return fail("EVENTCORE_READ_REPLICA_URL", err)
		}
		if c.ReplicaURL == "" {
			return fail("EVENTCORE_READ_REPLICA_URL", fmt.Errorf("needs EVENTCORE_REPLICA_URL: the read models are replicated only in Litestream mode"))
		}
		if replica.SameReplica(c.ReadReplicaURL, c.ReplicaURL) {
			return fail("EVENTCORE_READ_REPLICA_URL", fmt.Errorf("must differ from EVENTCORE_REPLICA_URL: each database needs its own replica"))
		}
	}
	if c.ReplicaTimeout, err = duration(str("EVENTCORE_REPLICA_TIMEOUT", replica.DefaultSyncTimeout.String())); err != nil {
		return fail("EVENTCORE_REPLICA_TIMEOUT", err)
	}
	if c.ReplicaLeaseTTL, err = duration(str("EVENTCORE_REPLICA_LEASE_TTL", replica.DefaultLeaseTTL.String())); err != nil {
		return fail("EVENTCORE_REPLICA_LEASE_TTL", err)
	}
	if slack := replica.LeaseSlack(c.ReplicaLeaseTTL); c.ReplicaLeaseTTL <= c.ReplicaTimeout+slack {
		return fail("EVENTCORE_REPLICA_LEASE_TTL", fmt.Errorf("%s must be longer than EVENTCORE_REPLICA_TIMEOUT (%s) plus %s, so that a sync ends before the lease does", c.ReplicaLeaseTTL, c.ReplicaTimeout, slack))
	}
	if c.CacheTTL, err = duration(str("EVENTCORE_CACHE_TTL", cache.DefaultTTL.String())); err != nil {
		return fail("EVENTCORE_CACHE_TTL", err)
	}
	maxBytes, err := humanize.ParseBytes(str("EVENTCORE_CACHE_MAX_BYTES", "64MiB"))
	if err != nil || maxBytes == 0 || maxBytes > 1<<40 {
		return fail("EVENTCORE_CACHE_MAX_BYTES", fmt.Errorf("%q is not a size such as 64MiB", getenv("EVENTCORE_CACHE_MAX_BYTES")))
	}
	c.CacheMaxBytes = int64(maxBytes)
	if c.AllowEphemeral, err = strconv.ParseBool(str("EVENTCORE_ALLOW_EPHEMERAL", "false")); err != nil {
		return fail("EVENTCORE_ALLOW_EPHEMERAL", fmt.Errorf("%q is not true or false", getenv("EVENTCORE_ALLOW_EPHEMERAL")))
	}
	c.PushgatewayURL = str("EVENTCORE_PUSHGATEWAY_URL", "")
	if c.PushgatewayURL != "" {
		u, err := url.Parse(c.PushgatewayURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fail("EVENTCORE_PUSHGATEWAY_URL", fmt.Errorf("%q is not an http(s) URL", c.PushgatewayURL))
		}
	}
	if c.PushTimeout, err = duration(str("EVENTCORE_PUSH_TIMEOUT", "250ms")); err != nil {
		return fail("EVENTCORE_PUSH_TIMEOUT", err)
	}
	if c.PushInterval, err = time.ParseDuration(str("EVENTCORE_PUSH_INTERVAL", "10s")); err != nil || c.PushInterval < 0 {
		return fail("EVENTCORE_PUSH_INTERVAL", fmt.Errorf("%q is not a duration such as 10s (0 pushes after every invocation)", getenv("EVENTCORE_PUSH_INTERVAL")))
	}
	if v := str("AWS_LAMBDA_MAX_CONCURRENCY", ""); v != "" {
		if c.MaxConcurrency, err = positiveInt(v, 1<<16); err != nil {
			return fail("AWS_LAMBDA_MAX_CONCURRENCY", err)
		}
	}
	if c.ProjectionBatch, err = positiveInt(str("EVENTCORE_PROJECTION_BATCH", strconv.Itoa(projection.DefaultBatchSize)), eventlog.MaxFeedLimit); err != nil {
		return fail("EVENTCORE_PROJECTION_BATCH", err)
	}
	if c.ProjectionInterval, err = duration(str("EVENTCORE_PROJECTION_INTERVAL", "1s")); err != nil {
		return fail("EVENTCORE_PROJECTION_INTERVAL", err)
	}
	if c.MaxInFlight, err = positiveInt(str("EVENTCORE_MAX_IN_FLIGHT", strconv.Itoa(DefaultMaxInFlight)), 1<<20); err != nil {
		return fail("EVENTCORE_MAX_IN_FLIGHT", err)
	}
	if c.SnapshotThreshold, err = positiveInt(str("EVENTCORE_SNAPSHOT_THRESHOLD", strconv.Itoa(executor.DefaultSnapshotThreshold)), 1<<30); err != nil {
		return fail("EVENTCORE_SNAPSHOT_THRESHOLD", err)
	}
	if c.OnLambda && c.DatabaseURL == "" && !strings.HasPrefix(filepath.Clean(c.DB), "/mnt/") && c.ReplicaURL == "" && !c.AllowEphemeral {
		return fail("EVENTCORE_DB", fmt.Errorf("%q is not on an EFS mount (/mnt/...) and no replica is configured: its data would be lost with the instance; set EVENTCORE_ALLOW_EPHEMERAL=true only for tests and demos", c.DB))
	}
	return c, nil
}

func duration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 5m or 250ms", s)
	}
	return d, nil
}

func positiveInt(s string, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("%q is not an integer from 1 to %d", s, max)
	}
	return n, nil
}

// Postgres reports whether EVENTCORE_DATABASE_URL selects PostgreSQL.
func (c Config) Postgres() bool { return c.DatabaseURL != "" }

// PostgresOptions are the PostgreSQL store's options the configuration
// asks for.
func (c Config) PostgresOptions() postgres.Options {
	return postgres.Options{MaxConns: c.DatabaseMaxConns, ConnectBudget: c.ConnectBudget}
}

// StoreOptions are the SQLite options the configuration asks for. With a
// replica, SQLite's own checkpoints are off: Litestream runs them after it
// has copied the WAL.
func (c Config) StoreOptions() sqlite.Options {
	return sqlite.Options{Synchronous: c.Sync, Journal: c.Journal, NoAutoCheckpoint: c.ReplicaURL != ""}
}
