package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of Options.
const (
	// DefaultMaxConns is the pool size of one Store: its readers plus its
	// DefaultWriters group-commit transactions.
	DefaultMaxConns = 8
	// DefaultMinConns connections are kept open while idle: none, so an
	// idle Lambda holds no connection (RDS Proxy multiplexes them anyway).
	DefaultMinConns = 0
	// DefaultWriters is how many group-commit transactions one Store runs
	// at once: while one holds the position lock and commits, the next
	// takes its stream locks.
	DefaultWriters = 2
	// DefaultMaxBatch bounds the appends committed in one transaction.
	DefaultMaxBatch = 128
	// DefaultConnectBudget is how long Open keeps trying to reach the
	// server: long enough for an Aurora Serverless v2 cluster to resume
	// from auto-pause (about 15 s), short enough for a Lambda init.
	DefaultConnectBudget = 30 * time.Second
	// DefaultMaxConnLifetime recycles connections, so that a pool follows
	// a failover or a proxy's scaling.
	DefaultMaxConnLifetime = 30 * time.Minute
	// DefaultMaxConnIdleTime closes connections idle for longer.
	DefaultMaxConnIdleTime = 5 * time.Minute
)

// Options configure a Store. The zero value is the default.
//
// Pool sizes: every Store holds at most MaxConns connections, of which up
// to Writers run appends and the rest serve reads. The sum of MaxConns over
// every process that opens the database (each Lambda execution
// environment, each local runner) must stay under the server's
// max_connections minus its reserved connections; on Aurora Serverless v2
// max_connections follows the minimum capacity. Behind RDS Proxy the
// processes connect to the proxy, which multiplexes their transactions over
// at most MaxConnectionsPercent of max_connections: keep MaxConns small
// (one execute invocation at a time needs 2, Lambda Managed Instances
// running many invocations need Writers plus a few readers) and let the
// proxy queue. The Store keeps no session state (no session advisory
// locks, no named prepared statements, no SET), so the proxy never pins a
// client to a connection.
type Options struct {
	MaxConns int32 // 0 = DefaultMaxConns; must exceed Writers
	MinConns int32 // 0 = DefaultMinConns
	// Writers is how many append transactions run at once; appends that
	// arrive while they are busy wait and are committed together (group
	// commit). 0 = DefaultWriters.
	Writers int
	// MaxBatch bounds how many waiting appends one transaction commits; 1
	// commits each alone. 0 = DefaultMaxBatch.
	MaxBatch int
	// ConnectBudget bounds how long Open retries reaching the server
	// (refused or unreachable, or starting up). 0 = DefaultConnectBudget;
	// Open also stops when its context ends.
	ConnectBudget   time.Duration
	MaxConnLifetime time.Duration // 0 = DefaultMaxConnLifetime
	MaxConnIdleTime time.Duration // 0 = DefaultMaxConnIdleTime
	// Logger receives connect retries and retried transactions; nil =
	// slog.Default().
	Logger *slog.Logger
	// Password, when set, is called before each new connection and its
	// answer replaces the URL's password: an IAM authentication token for
	// RDS or RDS Proxy (see package rdsiam), which expires after 15
	// minutes. nil = the URL's password.
	Password func(ctx context.Context) (string, error)
}

func (o Options) withDefaults() (Options, error) {
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MinConns == 0 {
		o.MinConns = DefaultMinConns
	}
	if o.Writers == 0 {
		o.Writers = DefaultWriters
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.ConnectBudget == 0 {
		o.ConnectBudget = DefaultConnectBudget
	}
	if o.MaxConnLifetime == 0 {
		o.MaxConnLifetime = DefaultMaxConnLifetime
	}
	if o.MaxConnIdleTime == 0 {
		o.MaxConnIdleTime = DefaultMaxConnIdleTime
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.MaxConns < 0 || o.MinConns < 0 || o.Writers < 0 || o.MaxBatch < 0 ||
		o.ConnectBudget < 0 || o.MaxConnLifetime < 0 || o.MaxConnIdleTime < 0:
		return o, errors.New("postgres: negative option")
	case int(o.MaxConns) <= o.Writers:
		return o, fmt.Errorf("postgres: MaxConns %d must exceed Writers %d, so that reads are not starved", o.MaxConns, o.Writers)
	case o.MinConns > o.MaxConns:
		return o, fmt.Errorf("postgres: MinConns %d exceeds MaxConns %d", o.MinConns, o.MaxConns)
	}
	return o, nil
}

// ParseURL checks a connection URL without connecting and returns the pool
// configuration it describes. It accepts postgres:// and postgresql:// URLs
// (pgx's keyword/value strings are refused, so that configuration has one
// form). Errors never contain the password.
func ParseURL(rawURL string) (*pgxpool.Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("postgres: the database URL is not a URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("postgres: the database URL's scheme %q is not postgres or postgresql", u.Scheme)
	}
	cfg, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		// pgx's message may quote the URL; name only what is safe.
		return nil, fmt.Errorf("postgres: the database URL %s is invalid", Redact(rawURL))
	}
	return cfg, nil
}

// Redact returns rawURL with its password replaced by "xxxxx", for logs and
// errors; a string that is not a postgres:// or postgresql:// URL is
// replaced as a whole.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Opaque != "" {
		return "(not a postgres:// URL)"
	}
	u.Fragment, u.RawFragment = "", ""
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
