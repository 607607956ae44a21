// Package bank is the example domain: accounts that can be opened, credited,
// debited and transferred between, with an optional fee account that a
// transfer discovers from the source account's state.
//
// Account ids match [A-Za-z0-9_-]{1,64}; an account's stream is
// "account-<id>"; amounts are integers in minor units from 1 to MaxAmount; a
// balance never goes below zero or above MaxBalance.
package bank

import (
	"github.com/eventcore-go/eventcore/executor"
)

// Event is a bank event. Every event names the account whose stream it is
// recorded in.
type Event interface {
	// AccountID is the account whose stream holds the event.
	AccountID() string
}

// AccountOpened opens an account, optionally with a fee account that
// collects a fee on every transfer out of it.
type AccountOpened struct {
	Account    string `json:"account"`
	Owner      string `json:"owner"`
	FeeAccount string `json:"fee_account,omitempty"`
}

// MoneyDeposited credits an account.
type MoneyDeposited struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// MoneyWithdrawn debits an account.
type MoneyWithdrawn struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// TransferDebited debits the source of a transfer.
type TransferDebited struct {
	Account    string `json:"account"`
	To         string `json:"to"`
	Amount     int64  `json:"amount"`
	TransferID string `json:"transfer_id"`
}

// TransferCredited credits the target of a transfer.
type TransferCredited struct {
	Account    string `json:"account"`
	From       string `json:"from"`
	Amount     int64  `json:"amount"`
	TransferID string `json:"transfer_id"`
}

// FeeCharged debits the source of a transfer by its fee.
type FeeCharged struct {
	Account    string `json:"account"`
	FeeAccount string `json:"fee_account"`
	Amount     int64  `json:"amount"`
	TransferID string `json:"transfer_id"`
}

// FeeCollected credits the fee account with a transfer's fee.
type FeeCollected struct {
	Account    string `json:"account"`
	From       string `json:"from"`
	Amount     int64  `json:"amount"`
	TransferID string `json:"transfer_id"`
}

func (e AccountOpened) AccountID() string    { return e.Account }
func (e MoneyDeposited) AccountID() string   { return e.Account }
func (e MoneyWithdrawn) AccountID() string   { return e.Account }
func (e TransferDebited) AccountID() string  { return e.Account }
func (e TransferCredited) AccountID() string { return e.Account }
func (e FeeCharged) AccountID() string       { return e.Account }
func (e FeeCollected) AccountID() string     { return e.Account }

// Event type names, as recorded in the log.
const (
	TypeAccountOpened    = "AccountOpened"
	TypeMoneyDeposited   = "MoneyDeposited"
	TypeMoneyWithdrawn   = "MoneyWithdrawn"
	TypeTransferDebited  = "TransferDebited"
	TypeTransferCredited = "TransferCredited"
	TypeFeeCharged       = "FeeCharged"
	TypeFeeCollected     = "FeeCollected"
)

// NewCodec returns the codec of every bank event.
func NewCodec() *executor.Codec[Event] {
	c := executor.NewCodec[Event]()
	executor.Register[AccountOpened](c, TypeAccountOpened)
	executor.Register[MoneyDeposited](c, TypeMoneyDeposited)
	executor.Register[MoneyWithdrawn](c, TypeMoneyWithdrawn)
	executor.Register[TransferDebited](c, TypeTransferDebited)
	executor.Register[TransferCredited](c, TypeTransferCredited)
	executor.Register[FeeCharged](c, TypeFeeCharged)
	executor.Register[FeeCollected](c, TypeFeeCollected)
	return c
}

// Account is the folded state of one account.
type Account struct {
	Open       bool
	Owner      string
	FeeAccount string
	Balance    int64
}

// State is the folded state of every account a command read.
type State struct {
	Accounts map[string]Account
}

// Clone returns a copy of s that shares no map with it (executor.Cloner):
// a cached state is never folded into.
func (s State) Clone() State {
	out := State{Accounts: make(map[string]Account, len(s.Accounts))}
	for id, a := range s.Accounts {
		out.Accounts[id] = a
	}
	return out
}

// Account returns the folded state of id (closed and empty if unseen).
func (s State) Account(id string) Account { return s.Accounts[id] }

// Apply folds one event into the state; every bank command uses it.
func (s *State) Apply(e Event) {
	if s.Accounts == nil {
		s.Accounts = make(map[string]Account, 3)
	}
	a := s.Accounts[e.AccountID()]
	switch e := e.(type) {
	case AccountOpened:
		a.Open, a.Owner, a.FeeAccount = true, e.Owner, e.FeeAccount
	case MoneyDeposited:
		a.Balance += e.Amount
	case MoneyWithdrawn:
		a.Balance -= e.Amount
	case TransferDebited:
		a.Balance -= e.Amount
	case TransferCredited:
		a.Balance += e.Amount
	case FeeCharged:
		a.Balance -= e.Amount
	case FeeCollected:
		a.Balance += e.Amount
	}
	s.Accounts[e.AccountID()] = a
}
