package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// DefaultDBMaxConns is the size of the connection pool OpenDB gives a
// *sql.DB: a projection batch, the feed it reads goes through the Store's
// own pool, and a few concurrent reads of the read models.
const DefaultDBMaxConns = 4

// DBOptions configure OpenDB. The zero value is the default.
type DBOptions struct {
	MaxConns      int           // 0 = DefaultDBMaxConns; also the most idle connections kept
	ConnectBudget time.Duration // as Options.ConnectBudget; 0 = DefaultConnectBudget
	Logger        *slog.Logger  // connect retries; nil = slog.Default()
	// Password is as Options.Password.
	Password func(ctx context.Context) (string, error)
}

// OpenDB opens the database at rawURL (see ParseURL) for database/sql,
// through pgx's stdlib driver: the read models and the projection
// checkpoints (projection.Runner with projection.Postgres), usually in the
// event log's own database. Like Open it retries for up to ConnectBudget
// while the server is unreachable or starting, and it keeps no session
// state: statements run unnamed (QueryExecModeExec), so RDS Proxy does not
// pin its connections, as long as the caller does not use sql.DB.Prepare or
// SET. The caller closes the *sql.DB.
//
// Errors: an invalid option or URL (never containing the password), a
// server that cannot be reached within the budget or refuses the
// credentials, or ctx's error (wrapped).
func OpenDB(ctx context.Context, rawURL string, opts DBOptions) (*sql.DB, error) {
	if opts.MaxConns < 0 || opts.ConnectBudget < 0 {
		return nil, errors.New("postgres: negative option")
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultDBMaxConns
	}
	if opts.ConnectBudget == 0 {
		opts.ConnectBudget = DefaultConnectBudget
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	var hooks []stdlib.OptionOpenDB
	if opts.Password != nil {
		hooks = append(hooks, stdlib.OptionBeforeConnect(passwordHook(opts.Password)))
	}
	db := stdlib.OpenDB(*cfg.ConnConfig, hooks...)
	db.SetMaxOpenConns(opts.MaxConns)
	db.SetMaxIdleConns(opts.MaxConns)
	db.SetConnMaxLifetime(DefaultMaxConnLifetime)
	db.SetConnMaxIdleTime(DefaultMaxConnIdleTime)
	if err := retryConnect(ctx, opts.ConnectBudget, opts.Logger, db.PingContext); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w", Redact(rawURL), err)
	}
	return db, nil
}

// passwordHook sets each new connection's password from password.
func passwordHook(password func(context.Context) (string, error)) func(context.Context, *pgx.ConnConfig) error {
	return func(ctx context.Context, cc *pgx.ConnConfig) error {
		pw, err := password(ctx)
		if err != nil {
			return fmt.Errorf("postgres: password: %w", err)
		}
		cc.Password = pw
		return nil
	}
}
