package bank

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/projection"
)

// Projection names.
const (
	ProjectionBalances = "balances"
	ProjectionHistory  = "history"
)

// movement is what an event does to its account's balance.
type movement struct {
	delta        int64
	amount       int64
	counterparty string
}

func movementOf(e Event) movement {
	switch e := e.(type) {
	case MoneyDeposited:
		return movement{delta: e.Amount, amount: e.Amount}
	case MoneyWithdrawn:
		return movement{delta: -e.Amount, amount: e.Amount}
	case TransferDebited:
		return movement{delta: -e.Amount, amount: e.Amount, counterparty: e.To}
	case TransferCredited:
		return movement{delta: e.Amount, amount: e.Amount, counterparty: e.From}
	case FeeCharged:
		return movement{delta: -e.Amount, amount: e.Amount, counterparty: e.FeeAccount}
	case FeeCollected:
		return movement{delta: e.Amount, amount: e.Amount, counterparty: e.From}
	}
	return movement{}
}

func decodeRecord(r eventlog.Record) (Event, error) {
	ev, err := codec.Decode(r)
	if err != nil {
		return nil, err
	}
	return ev.Data, nil
}

// The projections and their reads are written once for both read-model
// databases, SQLite and PostgreSQL (see projection.Dialect): $N
// placeholders, TEXT and BIGINT columns, the target table's columns
// qualified in ON CONFLICT ... DO UPDATE, one statement per Exec. The one
// difference, a table option only SQLite has, is chosen with
// projection.DialectOf.

// Balances is the balances projection: each account's balance and the
// position of the last event that touched it, in table bank_balances.
type Balances struct{}

var _ projection.Projector = Balances{}

// Name implements projection.Projector.
func (Balances) Name() string { return ProjectionBalances }

// EventTypes implements projection.TypeFilter.
func (Balances) EventTypes() []string { return codec.Types() }

// Setup implements projection.Projector.
func (Balances) Setup(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bank_balances (
		account  TEXT   PRIMARY KEY,
		balance  BIGINT NOT NULL,
		position BIGINT NOT NULL
	)`)
	return err
}

// Reset implements projection.Projector.
func (Balances) Reset(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM bank_balances`)
	return err
}

// Apply implements projection.Projector.
func (Balances) Apply(ctx context.Context, tx *sql.Tx, r eventlog.Record) error {
	ev, err := decodeRecord(r)
	if err != nil {
		return err
	}
	m := movementOf(ev)
	_, err = tx.ExecContext(ctx, `INSERT INTO bank_balances (account, balance, position) VALUES ($1, $2, $3)
		ON CONFLICT (account) DO UPDATE SET balance = bank_balances.balance + excluded.balance, position = excluded.position`,
		ev.AccountID(), m.delta, int64(r.Position))
	return err
}

// Balance is a row of the balances projection.
type Balance struct {
	Account  string            `json:"account"`
	Balance  int64             `json:"balance"`
	Position eventlog.Position `json:"position"`
}

// ErrNoAccount is returned by the read functions for an account the
// projection has not seen.
var ErrNoAccount = errors.New("bank: account not in the read model")

// ReadBalance reads one account from the balances projection. Errors:
// ErrNoAccount.
func ReadBalance(ctx context.Context, db *sql.DB, account string) (Balance, error) {
	b := Balance{Account: account}
	var pos int64
	err := db.QueryRowContext(ctx, `SELECT balance, position FROM bank_balances WHERE account = $1`, account).Scan(&b.Balance, &pos)
	if errors.Is(err, sql.ErrNoRows) {
		return b, ErrNoAccount
	}
	b.Position = eventlog.Position(pos)
	return b, err
}

// History is the history projection: every event of each account, with the
// balance after it, in table bank_history.
type History struct{}

var _ projection.Projector = History{}

// Name implements projection.Projector.
func (History) Name() string { return ProjectionHistory }

// EventTypes implements projection.TypeFilter.
func (History) EventTypes() []string { return codec.Types() }

// Setup implements projection.Projector.
func (History) Setup(ctx context.Context, tx *sql.Tx) error {
	options := ""
	if projection.DialectOf(ctx) == projection.SQLite {
		options = " WITHOUT ROWID" // rows clustered by account and position
	}
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bank_history (
		account      TEXT   NOT NULL,
		position     BIGINT NOT NULL,
		type         TEXT   NOT NULL,
		amount       BIGINT NOT NULL,
		balance      BIGINT NOT NULL,
		counterparty TEXT,
		recorded_at  BIGINT NOT NULL,
		PRIMARY KEY (account, position)
	)`+options)
	return err
}

// Reset implements projection.Projector.
func (History) Reset(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM bank_history`)
	return err
}

// Apply implements projection.Projector.
func (History) Apply(ctx context.Context, tx *sql.Tx, r eventlog.Record) error {
	ev, err := decodeRecord(r)
	if err != nil {
		return err
	}
	var balance int64
	err = tx.QueryRowContext(ctx, `SELECT balance FROM bank_history WHERE account = $1 ORDER BY position DESC LIMIT 1`, ev.AccountID()).Scan(&balance)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	m := movementOf(ev)
	var counterparty any
	if m.counterparty != "" {
		counterparty = m.counterparty
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO bank_history (account, position, type, amount, balance, counterparty, recorded_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		ev.AccountID(), int64(r.Position), r.Type, m.amount, balance+m.delta, counterparty, r.RecordedAt.UnixMicro())
	return err
}

// Movement is an item of an account's history.
type Movement struct {
	Position     eventlog.Position `json:"position"`
	Type         string            `json:"type"`
	Amount       int64             `json:"amount"`
	Balance      int64             `json:"balance"`
	Counterparty *string           `json:"counterparty"`
	RecordedAt   string            `json:"recorded_at"`
}

// ReadHistory reads up to limit movements of account after position after,
// oldest first. Errors: ErrNoAccount when the projection has no event of
// the account (its AccountOpened is the first item).
func ReadHistory(ctx context.Context, db *sql.DB, account string, after eventlog.Position, limit int) ([]Movement, error) {
	var exists int
	err := db.QueryRowContext(ctx, `SELECT 1 FROM bank_history WHERE account = $1 LIMIT 1`, account).Scan(&exists)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoAccount
	}
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT position, type, amount, balance, counterparty, recorded_at FROM bank_history
		WHERE account = $1 AND position > $2 ORDER BY position LIMIT $3`, account, int64(after), limit)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := []Movement{}
	for rows.Next() {
		var m Movement
		var pos, at int64
		var cp sql.NullString
		if err := rows.Scan(&pos, &m.Type, &m.Amount, &m.Balance, &cp, &at); err != nil {
			return nil, err
		}
		m.Position = eventlog.Position(pos)
		if cp.Valid {
			m.Counterparty = &cp.String
		}
		m.RecordedAt = time.UnixMicro(at).UTC().Format(time.RFC3339Nano)
		out = append(out, m)
	}
	return out, rows.Err()
}
