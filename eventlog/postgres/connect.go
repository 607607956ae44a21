package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Backoff bounds of connect retries.
const (
	connectBackoffMin = 100 * time.Millisecond
	connectBackoffMax = 2 * time.Second
)

// connect opens a pool on cfg and waits until one connection succeeds,
// retrying with exponential backoff and jitter while the server is
// unreachable or starting up (an Aurora cluster resuming from auto-pause
// refuses connections for several seconds), until budget has passed or ctx
// ends. Errors a retry cannot fix (authentication, a missing database) end
// it at once.
func connect(ctx context.Context, cfg *pgxpool.Config, budget time.Duration, log *slog.Logger) (*pgxpool.Pool, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := retryConnect(ctx, budget, log, pool.Ping); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// retryConnect calls ping until it succeeds, retrying as connect says.
func retryConnect(ctx context.Context, budget time.Duration, log *slog.Logger, ping func(context.Context) error) error {
	deadline := time.Now().Add(budget)
	backoff := connectBackoffMin
	for attempt := 1; ; attempt++ {
		err := ping(ctx)
		if err == nil {
			return nil
		}
		if !connectRetryable(err) || ctx.Err() != nil || time.Now().Add(backoff).After(deadline) {
			err = oneLine{err}
			if cerr := ctx.Err(); cerr != nil {
				return fmt.Errorf("%w (last attempt: %w)", cerr, err)
			}
			return fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		log.Warn("postgres: connect failed, retrying", "attempt", attempt, "backoff", backoff, "err", err)
		sleep := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
		case <-time.After(sleep):
		}
		backoff = min(2*backoff, connectBackoffMax)
	}
}

// connectRetryable reports whether a failed connect may succeed later.
func connectRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P03", // cannot_connect_now: starting up, resuming
			"53300",          // too_many_connections
			"57P01", "57P02": // admin or crash shutdown
			return true
		}
		return false // authentication, missing database, ...
	}
	// Network failures: refused, unreachable, timed out.
	return true
}

// oneLine is an error whose message is err's on one line: pgx lists each
// address it tried on a line of its own, and a configuration error is
// reported in one line.
type oneLine struct{ err error }

func (e oneLine) Error() string {
	return strings.Join(strings.Fields(strings.ReplaceAll(e.err.Error(), "\n", "; ")), " ")
}

func (e oneLine) Unwrap() error { return e.err }
