// Package postgres is the scale-out event store: the event log in
// PostgreSQL (15 or later; Aurora PostgreSQL Serverless v2 behind RDS Proxy
// on AWS), through pgx v5 and its pool.
//
// Any number of processes may append to one database at once; the database
// decides between them:
//
//   - Versions: one row per stream in the streams table. An append locks the
//     rows of every stream of its consistency boundary in stream-id order,
//     FOR UPDATE for the streams it writes and FOR SHARE for those it only
//     reads (a placeholder row is inserted first for a stream never seen),
//     so appends to unrelated streams never wait for each other's checks.
//   - Positions: after every check has passed, the append takes its
//     positions from the one row of log_head (UPDATE ... RETURNING) and
//     holds that row's lock until it commits, so positions are gapless and
//     in commit order: a reader of the feed after p never misses an event
//     that commits later with a smaller position. This lock is the log's
//     one point of serialization: more writers add availability, not write
//     throughput.
//   - Idempotency: the command id is recorded in the same transaction; a
//     concurrent duplicate waits for the first attempt and answers with its
//     records.
//   - Group commit: inside a process, appends that arrive together are
//     checked and committed by one call of the SQL function eventlog_append
//     (one round trip, one transaction); a refused append writes nothing
//     and does not affect the others in its batch. Deadlocks and
//     serialization failures reported by the server are retried, never
//     returned.
//   - Immutability: triggers refuse UPDATE, DELETE and TRUNCATE on events
//     and commands.
//   - No session state: statements run in pgx's QueryExecModeExec (the
//     extended protocol's unnamed statement, no named prepared statements),
//     and the only advisory lock (migrations) is transaction-scoped, so RDS
//     Proxy never pins a connection.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/eventlog/internal/storekit"
)

// Store is an eventlog.Store in a PostgreSQL database. Use Open to make one.
type Store struct {
	opts Options
	pool *pgxpool.Pool
	log  *slog.Logger
	com  *committer

	gate storekit.Gate // calls in progress; Close waits for them
}

var _ eventlog.Store = (*Store)(nil)

// Open connects to the database at rawURL (postgres://user:password@host:
// port/dbname?sslmode=...; see ParseURL), retrying for up to
// opts.ConnectBudget while the server is unreachable or starting, and
// brings the schema up to date. Processes may open one new database at
// once: migrations run under a transaction-scoped lock, so exactly one
// applies them.
//
// Errors: an invalid option or URL, a server that cannot be reached within
// the budget or refuses the credentials, a schema newer than this package
// knows, or ctx's error (wrapped) when ctx ends first.
func Open(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = opts.MaxConns
	cfg.MinConns = opts.MinConns
	cfg.MaxConnLifetime = opts.MaxConnLifetime
	cfg.MaxConnIdleTime = opts.MaxConnIdleTime
	// The unnamed statement only: nothing prepared outlives a statement.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	if opts.Password != nil {
		cfg.BeforeConnect = passwordHook(opts.Password)
	}
	where := Redact(rawURL)
	pool, err := connect(ctx, cfg, opts.ConnectBudget, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect to %s: %w", where, err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: migrate %s: %w", where, err)
	}
	s := &Store{opts: opts, pool: pool, log: opts.Logger}
	s.com = newCommitter(pool, opts.Writers, opts.MaxBatch, opts.Logger)
	return s, nil
}

// Pool returns the connection pool, for tools and tests that query the
// database directly. It is closed by Close.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close waits for calls in progress (appends already accepted are
// committed), stops the committer and closes the pool. It is idempotent.
func (s *Store) Close() error {
	if !s.gate.Close() {
		return nil
	}
	s.com.close()
	s.pool.Close()
	return nil
}

// Append implements eventlog.Store. The append is queued to the committer,
// which commits it with whatever other appends are waiting; once taken into
// a transaction it runs to completion whatever ctx does, and ctx's error is
// returned only when it was withdrawn before (nothing recorded).
func (s *Store) Append(ctx context.Context, req eventlog.AppendRequest) (eventlog.AppendResult, error) {
	if err := s.gate.Enter(); err != nil {
		return eventlog.AppendResult{}, err
	}
	defer s.gate.Leave()
	if err := req.Validate(); err != nil {
		return eventlog.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return eventlog.AppendResult{}, err
	}
	c, err := prepareAppend(req)
	if err != nil {
		return eventlog.AppendResult{}, err
	}
	out, err := s.com.submit(ctx, c)
	if err != nil {
		return eventlog.AppendResult{}, err
	}
	return s.result(ctx, out)
}

// readPageSize is how many records ReadStream fetches per query.
const readPageSize = 512

// ReadStream implements eventlog.Store.
func (s *Store) ReadStream(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) iter.Seq2[eventlog.Record, error] {
	return storekit.ReadPages(stream, after, readPageSize, func(after eventlog.Version) ([]eventlog.Record, error) {
		return s.readStreamPage(ctx, stream, after)
	})
}

const recordColumns = `position, stream_id, version, type, data::text, metadata::text, recorded_at`

func (s *Store) readStreamPage(ctx context.Context, stream eventlog.StreamID, after eventlog.Version) ([]eventlog.Record, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM events
		WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3`,
		stream.String(), int64(after), readPageSize)
	if err != nil {
		return nil, readErr("read stream", ctx, err)
	}
	page, err := collectRecords(rows)
	if err != nil {
		return nil, readErr("read stream", ctx, err)
	}
	return page, nil
}

// StreamVersions implements eventlog.Store. It reads every version with one
// statement, so from one snapshot.
func (s *Store) StreamVersions(ctx context.Context, streams []eventlog.StreamID) ([]eventlog.Version, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	ids := make([]string, len(streams))
	for i, st := range streams {
		if st.IsZero() {
			return nil, &eventlog.InvalidError{What: "stream id", Reason: "must not be empty"}
		}
		ids[i] = st.String()
	}
	out := make([]eventlog.Version, len(streams))
	if len(streams) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT stream_id, version FROM streams WHERE stream_id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, readErr("stream versions", ctx, err)
	}
	found := make(map[string]eventlog.Version, len(ids))
	var id string
	var v int64
	_, err = pgx.ForEachRow(rows, []any{&id, &v}, func() error {
		found[id] = eventlog.Version(v)
		return nil
	})
	if err != nil {
		return nil, readErr("stream versions", ctx, err)
	}
	for i, id := range ids {
		out[i] = found[id]
	}
	return out, nil
}

// Feed windows: ReadFeed reads the positions after q.After in windows,
// the first feedWindowPages times the limit wide (at least
// feedWindowMin), each next one twice as wide up to feedWindowMax.
const (
	feedWindowPages = 4
	feedWindowMin   = 1024
	feedWindowMax   = 1 << 20
)

// ReadFeed implements eventlog.Store.
//
// Each query is bounded to a window of positions (position > after AND
// position <= after + width), so that whatever plan the server takes (an
// ordered walk of the primary key, or a range of the (type, position)
// index for each type and a sort), a query costs at most its window, never
// every later event of the types asked for: a reader far behind would
// otherwise pay more for each page the further behind it is, and so would
// a table whose statistics are missing or stale. Positions are gapless, so
// a window of width w holds w events. A window that answers fewer than the
// limit is followed by the next, wider one until the limit is met or the
// window has passed the head (read once, after the first short window).
// Events are immutable and positions are taken in commit order, so the
// windows' answers, each from its own snapshot, join into a prefix of the
// feed.
func (s *Store) ReadFeed(ctx context.Context, q eventlog.FeedQuery) ([]eventlog.Record, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, err
	}
	defer s.gate.Leave()
	if err := q.Validate(); err != nil {
		return nil, err
	}
	var text strings.Builder
	text.WriteString(`SELECT ` + recordColumns + ` FROM events WHERE position > $1 AND position <= $2`)
	args := []any{int64(0), int64(0)}
	if len(q.Types) > 0 {
		types := append([]string(nil), q.Types...)
		sort.Strings(types)
		args = append(args, types)
		fmt.Fprintf(&text, " AND type = ANY($%d::text[])", len(args))
	}
	if q.StreamPrefix != "" {
		// A range on the (stream_id, version) index, in byte order
		// (COLLATE "C").
		args = append(args, q.StreamPrefix)
		fmt.Fprintf(&text, " AND stream_id >= $%d", len(args))
		if upper, ok := prefixUpperBound(q.StreamPrefix); ok {
			args = append(args, upper)
			fmt.Fprintf(&text, " AND stream_id < $%d", len(args))
		}
	}
	args = append(args, 0)
	fmt.Fprintf(&text, " ORDER BY position LIMIT $%d", len(args))
	limitArg := len(args) - 1

	var out []eventlog.Record
	after := int64(q.After)
	width := max(int64(feedWindowPages)*int64(q.Limit), feedWindowMin)
	head := int64(-1)
	for {
		hi := after + width
		if hi < after { // past the largest position
			hi = math.MaxInt64
		}
		args[0], args[1], args[limitArg] = after, hi, q.Limit-len(out)
		rows, err := s.pool.Query(ctx, text.String(), args...)
		if err != nil {
			return nil, readErr("read feed", ctx, err)
		}
		page, err := collectRecords(rows)
		if err != nil {
			return nil, readErr("read feed", ctx, err)
		}
		out = append(out, page...)
		if len(out) >= q.Limit {
			return out, nil
		}
		if head < 0 {
			if err := s.pool.QueryRow(ctx, `SELECT position FROM log_head`).Scan(&head); err != nil {
				return nil, readErr("read feed", ctx, err)
			}
		}
		if hi >= head {
			return out, nil
		}
		after, width = hi, min(2*width, feedWindowMax)
	}
}

// LookupCommand implements eventlog.Store.
func (s *Store) LookupCommand(ctx context.Context, commandID string) ([]eventlog.Record, bool, error) {
	if err := s.gate.Enter(); err != nil {
		return nil, false, err
	}
	defer s.gate.Leave()
	if err := eventlog.ValidateCommandID(commandID); err != nil {
		return nil, false, err
	}
	return s.lookupCommand(ctx, commandID)
}

func (s *Store) lookupCommand(ctx context.Context, commandID string) ([]eventlog.Record, bool, error) {
	// One statement: the command row and its events were committed
	// together, and events never change.
	rows, err := s.pool.Query(ctx, `SELECT `+recordColumns+` FROM events
		WHERE position BETWEEN (SELECT first_position FROM commands WHERE command_id = $1)
		                   AND (SELECT last_position FROM commands WHERE command_id = $1)
		ORDER BY position`, commandID)
	if err != nil {
		return nil, false, readErr("lookup command", ctx, err)
	}
	records, err := collectRecords(rows)
	if err != nil {
		return nil, false, readErr("lookup command", ctx, err)
	}
	return records, len(records) > 0, nil
}

// Head implements eventlog.Store.
func (s *Store) Head(ctx context.Context) (eventlog.Position, error) {
	if err := s.gate.Enter(); err != nil {
		return 0, err
	}
	defer s.gate.Leave()
	var head int64
	if err := s.pool.QueryRow(ctx, `SELECT position FROM log_head`).Scan(&head); err != nil {
		return 0, readErr("head", ctx, err)
	}
	return eventlog.Position(head), nil
}

// collectRecords reads rows of recordColumns.
func collectRecords(rows pgx.Rows) ([]eventlog.Record, error) {
	var (
		out                []eventlog.Record
		pos, version       int64
		stream, data, meta string
		recordedAt         time.Time
		r                  eventlog.Record
	)
	_, err := pgx.ForEachRow(rows, []any{&pos, &stream, &version, &r.Type, &data, &meta, &recordedAt}, func() error {
		rec := eventlog.Record{Position: eventlog.Position(pos), Version: eventlog.Version(version), Type: r.Type,
			Data: []byte(data), RecordedAt: recordedAt.UTC()}
		var err error
		if rec.Stream, err = eventlog.NewStreamID(stream); err != nil {
			return fmt.Errorf("event at position %d: %w", pos, err)
		}
		if err := unmarshalMetadata(meta, &rec.Metadata); err != nil {
			return fmt.Errorf("event at position %d: metadata: %w", pos, err)
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// readErr wraps a read failure, preferring the context's error when the
// context ended.
func readErr(op string, ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("postgres: %s: %w", op, cerr)
	}
	var invalid *eventlog.InvalidError
	if errors.As(err, &invalid) {
		return err
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// prefixUpperBound returns the least valid UTF-8 string above every string
// that starts with prefix: prefix with its last rune incremented (UTF-8's
// byte order is code-point order), skipping the surrogates, which UTF-8
// cannot encode. A prefix ending in the last code point has no such bound
// (false). Incrementing the last byte instead can make invalid UTF-8
// (a last byte of 0xBF), which PostgreSQL refuses.
func prefixUpperBound(prefix string) (string, bool) {
	r, size := utf8.DecodeLastRuneInString(prefix)
	next := r + 1
	if next >= 0xD800 && next <= 0xDFFF {
		next = 0xE000
	}
	if next > utf8.MaxRune {
		return "", false
	}
	return prefix[:len(prefix)-size] + string(next), true
}
