package bank

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"strconv"
	"strings"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/projection"
)

// The projections apply a batch as a fold in memory: each event is decoded
// once, and rows are written with multi-row statements (rowsPerStatement
// rows each), which PostgreSQL runs without a named prepared statement (no
// session state, see eventlog/postgres.OpenDB), in one round trip per
// statement.

// rowsPerStatement is how many rows of cols columns one statement writes:
// in PostgreSQL up to 1,000 (7,000 parameters for history, well under its
// 65,535), one round trip; in SQLite up to sqliteMaxParams parameters, as
// binding a parameter costs a walk of the statement's parameter list.
func rowsPerStatement(ctx context.Context, cols int) int {
	if projection.DialectOf(ctx) == projection.SQLite {
		return max(1, sqliteMaxParams/cols)
	}
	return 1000
}

// sqliteMaxParams is the most parameters of one SQLite statement of the
// batch path: fewer make more statements to prepare, more make binding
// each slower (64 measured best of 8 to 1,024).
const sqliteMaxParams = 64

var (
	_ projection.BatchProjector = Balances{}
	_ projection.BatchProjector = History{}
)

// valuesList returns "($1, $2), ($3, $4)" for rows rows of cols columns,
// numbering from 1; on SQLite "(?1, ?2), (?3, ?4)": SQLite takes $N for a
// parameter's name, which it looks up among the statement's names, a cost
// that grows with their number.
func valuesList(ctx context.Context, rows, cols int) string {
	mark := byte('$')
	if projection.DialectOf(ctx) == projection.SQLite {
		mark = '?'
	}
	var b strings.Builder
	b.Grow(rows * cols * 6)
	n := 1
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j := range cols {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteByte(mark)
			b.WriteString(strconv.Itoa(n))
			n++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// decoded is a record with its event decoded.
type decoded struct {
	rec eventlog.Record
	ev  Event
}

// decodeAll decodes recs and lists the accounts they touch, each once, in
// the order first touched.
func decodeAll(recs []eventlog.Record) ([]decoded, []string, error) {
	out := make([]decoded, len(recs))
	seen := make(map[string]struct{}, len(recs))
	var accounts []string
	for i, r := range recs {
		ev, err := decodeRecord(r)
		if err != nil {
			return nil, nil, err
		}
		out[i] = decoded{rec: r, ev: ev}
		if _, ok := seen[ev.AccountID()]; !ok {
			seen[ev.AccountID()] = struct{}{}
			accounts = append(accounts, ev.AccountID())
		}
	}
	return out, accounts, nil
}

// ApplyBatch implements projection.BatchProjector: the batch's movements
// are summed per account in memory, and each touched account is written
// once.
func (Balances) ApplyBatch(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	evs, accounts, err := decodeAll(recs)
	if err != nil {
		return err
	}
	type change struct{ delta, position int64 }
	changes := make(map[string]*change, len(accounts))
	for _, d := range evs {
		c := changes[d.ev.AccountID()]
		if c == nil {
			c = &change{}
			changes[d.ev.AccountID()] = c
		}
		c.delta += movementOf(d.ev).delta
		c.position = int64(d.rec.Position)
	}
	slices.Sort(accounts) // in key order: neighbours share pages
	return eachChunk(ctx, tx, 3, len(accounts), func(rows int) string {
		return `INSERT INTO bank_balances (account, balance, position) VALUES ` + valuesList(ctx, rows, 3) + `
			ON CONFLICT (account) DO UPDATE SET balance = bank_balances.balance + excluded.balance, position = excluded.position`
	}, func(stmt chunkStatement, start, end int) error {
		args := make([]any, 0, 3*(end-start))
		for _, a := range accounts[start:end] {
			c := changes[a]
			args = append(args, a, c.delta, c.position)
		}
		return stmt.exec(ctx, args)
	})
}

// ApplyBatch implements projection.BatchProjector: the balance before the
// batch of every touched account is read in one statement, the running
// balances are computed in memory, and the rows inserted with one
// statement.
func (History) ApplyBatch(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	evs, accounts, err := decodeAll(recs)
	if err != nil {
		return err
	}
	balances, err := lastBalances(ctx, tx, accounts)
	if err != nil {
		return err
	}
	type row struct {
		account      string
		position     int64
		typ          string
		amount       int64
		balance      int64
		counterparty any
		recordedAt   int64
	}
	rows := make([]row, len(evs))
	for i, d := range evs {
		m := movementOf(d.ev)
		id := d.ev.AccountID()
		balances[id] += m.delta
		var counterparty any
		if m.counterparty != "" {
			counterparty = m.counterparty
		}
		rows[i] = row{id, int64(d.rec.Position), d.rec.Type, m.amount, balances[id], counterparty, d.rec.RecordedAt.UnixMicro()}
	}
	// Inserted in key order (account, position): neighbours share pages,
	// so a batch changes fewer of them.
	slices.SortFunc(rows, func(a, b row) int {
		if c := strings.Compare(a.account, b.account); c != 0 {
			return c
		}
		return cmp.Compare(a.position, b.position)
	})
	return eachChunk(ctx, tx, 7, len(rows), func(n int) string {
		return `INSERT INTO bank_history (account, position, type, amount, balance, counterparty, recorded_at) VALUES ` + valuesList(ctx, n, 7)
	}, func(stmt chunkStatement, start, end int) error {
		args := make([]any, 0, 7*(end-start))
		for _, r := range rows[start:end] {
			args = append(args, r.account, r.position, r.typ, r.amount, r.balance, r.counterparty, r.recordedAt)
		}
		return stmt.exec(ctx, args)
	})
}

// eachChunk runs one statement per chunk of up to rowsPerStatement(ctx,
// cols) of n rows, in order: run gets the statement text(rows) for the
// chunk's rows and the chunk's bounds. On SQLite the statement of a full
// chunk is prepared once for all of them; PostgreSQL runs each unnamed
// (a prepared statement is session state: see eventlog/postgres.OpenDB),
// and most batches are one chunk there.
func eachChunk(ctx context.Context, tx *sql.Tx, cols, n int, text func(rows int) string, run func(stmt chunkStatement, start, end int) error) error {
	per := rowsPerStatement(ctx, cols)
	prepare := projection.DialectOf(ctx) == projection.SQLite && n >= 2*per
	full := chunkStatement{tx: tx}
	if prepare {
		var err error
		if full.stmt, err = tx.PrepareContext(ctx, text(per)); err != nil {
			return err
		}
		defer func() { _ = full.stmt.Close() }()
	}
	for start := 0; start < n; start += per {
		end := min(start+per, n)
		stmt := full
		if !prepare || end-start != per {
			stmt = chunkStatement{tx: tx, text: text(end - start)}
		}
		if err := run(stmt, start, end); err != nil {
			return err
		}
	}
	return nil
}

// chunkStatement is a prepared statement, or a statement's text to run in
// tx.
type chunkStatement struct {
	tx   *sql.Tx
	stmt *sql.Stmt
	text string
}

func (c chunkStatement) exec(ctx context.Context, args []any) error {
	var err error
	if c.stmt != nil {
		_, err = c.stmt.ExecContext(ctx, args...)
	} else {
		_, err = c.tx.ExecContext(ctx, c.text, args...)
	}
	return err
}

func (c chunkStatement) query(ctx context.Context, args []any) (*sql.Rows, error) {
	if c.stmt != nil {
		return c.stmt.QueryContext(ctx, args...)
	}
	return c.tx.QueryContext(ctx, c.text, args...)
}

// lastBalances reads the balance after the last history row of each
// account (0 for an account without one), one statement per
// rowsPerStatement accounts; each is a lookup of the primary key's last
// entry for the account.
func lastBalances(ctx context.Context, tx *sql.Tx, accounts []string) (map[string]int64, error) {
	out := make(map[string]int64, len(accounts))
	err := eachChunk(ctx, tx, 1, len(accounts), func(n int) string {
		return `WITH touched (account) AS (VALUES ` + valuesList(ctx, n, 1) + `)
			SELECT touched.account, (SELECT bank_history.balance FROM bank_history WHERE bank_history.account = touched.account
				ORDER BY bank_history.position DESC LIMIT 1) FROM touched`
	}, func(stmt chunkStatement, start, end int) error {
		args := make([]any, 0, end-start)
		for _, a := range accounts[start:end] {
			args = append(args, a)
		}
		rows, err := stmt.query(ctx, args)
		if err != nil {
			return err
		}
		defer func() { _ = rows.Close() }()
		for rows.Next() {
			var account string
			var balance sql.NullInt64
			if err := rows.Scan(&account, &balance); err != nil {
				return err
			}
			out[account] = balance.Int64
		}
		return rows.Err()
	})
	return out, err
}
