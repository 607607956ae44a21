package bank

import (
	"errors"
	"fmt"
	"regexp"
	"unicode"
	"unicode/utf8"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/executor"
)

// Limits of the domain.
const (
	MaxAmount      = 1_000_000_000_000     // 10^12, the largest amount of one command
	MaxBalance     = 1_000_000_000_000_000 // 10^15, the largest balance
	MaxOwnerLength = 200                   // characters
	StreamPrefix   = "account-"            // an account's stream is StreamPrefix + id
)

// Command names, as the HTTP API and event metadata know them.
const (
	CommandOpenAccount = "open-account"
	CommandDeposit     = "deposit"
	CommandWithdraw    = "withdraw"
	CommandTransfer    = "transfer"
)

// Code is a business-rule failure code.
type Code string

// The business-rule codes.
const (
	CodeAccountExists     Code = "account_exists"
	CodeAccountNotFound   Code = "account_not_found"
	CodeInsufficientFunds Code = "insufficient_funds"
	CodeSameAccount       Code = "same_account"
	CodeBalanceLimit      Code = "balance_limit"
)

// RuleError is a business-rule failure. errors.Is matches any *RuleError
// with the same Code, so the sentinels below work as targets.
type RuleError struct {
	Code    Code
	Message string
}

func (e *RuleError) Error() string { return string(e.Code) + ": " + e.Message }

// Is reports whether target is a *RuleError with the same code.
func (e *RuleError) Is(target error) bool {
	t, ok := target.(*RuleError)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrAccountExists     = &RuleError{Code: CodeAccountExists, Message: "account exists"}
	ErrAccountNotFound   = &RuleError{Code: CodeAccountNotFound, Message: "account not found"}
	ErrInsufficientFunds = &RuleError{Code: CodeInsufficientFunds, Message: "insufficient funds"}
	ErrSameAccount       = &RuleError{Code: CodeSameAccount, Message: "same account"}
	ErrBalanceLimit      = &RuleError{Code: CodeBalanceLimit, Message: "balance limit"}
)

func rule(code Code, format string, args ...any) error {
	return &RuleError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrInvalidInput marks input that breaks the input rules (an invalid id,
// owner or amount): the HTTP edge answers 400. See *InputError.
var ErrInvalidInput = errors.New("bank: invalid input")

// InputError names the field that is wrong. It wraps ErrInvalidInput.
type InputError struct {
	Field   string
	Message string
}

func (e *InputError) Error() string { return "invalid " + e.Field + ": " + e.Message }

// Unwrap returns ErrInvalidInput.
func (e *InputError) Unwrap() error { return ErrInvalidInput }

var accountIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateAccountID checks id against [A-Za-z0-9_-]{1,64}.
func ValidateAccountID(field, id string) error {
	if !accountIDPattern.MatchString(id) {
		return &InputError{Field: field, Message: fmt.Sprintf("%q is not 1 to 64 of A-Z a-z 0-9 _ -", id)}
	}
	return nil
}

func validateAmount(amount int64) error {
	if amount < 1 || amount > MaxAmount {
		return &InputError{Field: "amount", Message: fmt.Sprintf("%d is not an integer from 1 to %d", amount, int64(MaxAmount))}
	}
	return nil
}

func validateOwner(owner string) error {
	n := utf8.RuneCountInString(owner)
	switch {
	case !utf8.ValidString(owner):
		return &InputError{Field: "owner", Message: "is not valid UTF-8"}
	case n < 1 || n > MaxOwnerLength:
		return &InputError{Field: "owner", Message: fmt.Sprintf("must be 1 to %d characters", MaxOwnerLength)}
	}
	for _, r := range owner {
		if unicode.IsControl(r) {
			return &InputError{Field: "owner", Message: "contains a control character"}
		}
	}
	return nil
}

// StreamOf returns the stream of account id, which must be valid.
func StreamOf(id string) eventlog.StreamID {
	s, err := eventlog.NewStreamID(StreamPrefix + id)
	if err != nil {
		return eventlog.StreamID{} // the executor refuses a zero stream id
	}
	return s
}

// base is what every bank command shares: the fold.
type base struct{}

// Apply implements executor.Command.
func (base) Apply(s *State, e executor.Event[Event]) { s.Apply(e.Data) }

// StateSchema names the encoding of State in caches and snapshots; change it
// whenever State or its fold changes.
const StateSchema = "bank.State/v1"

// SnapshotSchema implements executor.Snapshotter: every bank command may be
// started from a durable snapshot.
func (base) SnapshotSchema() string { return StateSchema }

// OpenAccount opens Account for Owner, optionally with a FeeAccount that
// must be open and must not be Account itself.
type OpenAccount struct {
	base
	Account    string `json:"account"`
	Owner      string `json:"owner"`
	FeeAccount string `json:"fee_account,omitempty"`
}

// Validate checks the input rules; the error wraps ErrInvalidInput.
func (c OpenAccount) Validate() error {
	if err := ValidateAccountID("account", c.Account); err != nil {
		return err
	}
	if err := validateOwner(c.Owner); err != nil {
		return err
	}
	if c.FeeAccount != "" {
		return ValidateAccountID("fee_account", c.FeeAccount)
	}
	return nil
}

// CommandName implements executor.Named.
func (OpenAccount) CommandName() string { return CommandOpenAccount }

// Streams implements executor.Command.
func (c OpenAccount) Streams() []eventlog.StreamID {
	if c.FeeAccount != "" && c.FeeAccount != c.Account {
		return []eventlog.StreamID{StreamOf(c.Account), StreamOf(c.FeeAccount)}
	}
	return []eventlog.StreamID{StreamOf(c.Account)}
}

// Handle implements executor.Command.
func (c OpenAccount) Handle(s State) ([]executor.Emit[Event], error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.FeeAccount == c.Account {
		return nil, rule(CodeSameAccount, "fee account %q is the account itself", c.FeeAccount)
	}
	if s.Account(c.Account).Open {
		return nil, rule(CodeAccountExists, "account %q is already open", c.Account)
	}
	if c.FeeAccount != "" && !s.Account(c.FeeAccount).Open {
		return nil, rule(CodeAccountNotFound, "fee account %q is not open", c.FeeAccount)
	}
	return []executor.Emit[Event]{{Stream: StreamOf(c.Account), Event: AccountOpened{Account: c.Account, Owner: c.Owner, FeeAccount: c.FeeAccount}}}, nil
}

// Deposit credits Account with Amount.
type Deposit struct {
	base
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// Validate checks the input rules; the error wraps ErrInvalidInput.
func (c Deposit) Validate() error {
	if err := ValidateAccountID("account", c.Account); err != nil {
		return err
	}
	return validateAmount(c.Amount)
}

// CommandName implements executor.Named.
func (Deposit) CommandName() string { return CommandDeposit }

// Streams implements executor.Command.
func (c Deposit) Streams() []eventlog.StreamID { return []eventlog.StreamID{StreamOf(c.Account)} }

// Handle implements executor.Command.
func (c Deposit) Handle(s State) ([]executor.Emit[Event], error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	a := s.Account(c.Account)
	if !a.Open {
		return nil, rule(CodeAccountNotFound, "account %q is not open", c.Account)
	}
	if a.Balance+c.Amount > MaxBalance {
		return nil, rule(CodeBalanceLimit, "account %q would exceed the balance limit", c.Account)
	}
	return []executor.Emit[Event]{{Stream: StreamOf(c.Account), Event: MoneyDeposited{Account: c.Account, Amount: c.Amount}}}, nil
}

// Withdraw debits Account by Amount.
type Withdraw struct {
	base
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// Validate checks the input rules; the error wraps ErrInvalidInput.
func (c Withdraw) Validate() error {
	if err := ValidateAccountID("account", c.Account); err != nil {
		return err
	}
	return validateAmount(c.Amount)
}

// CommandName implements executor.Named.
func (Withdraw) CommandName() string { return CommandWithdraw }

// Streams implements executor.Command.
func (c Withdraw) Streams() []eventlog.StreamID { return []eventlog.StreamID{StreamOf(c.Account)} }

// Handle implements executor.Command.
func (c Withdraw) Handle(s State) ([]executor.Emit[Event], error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	a := s.Account(c.Account)
	if !a.Open {
		return nil, rule(CodeAccountNotFound, "account %q is not open", c.Account)
	}
	if a.Balance < c.Amount {
		return nil, rule(CodeInsufficientFunds, "account %q has %d, needs %d", c.Account, a.Balance, c.Amount)
	}
	return []executor.Emit[Event]{{Stream: StreamOf(c.Account), Event: MoneyWithdrawn{Account: c.Account, Amount: c.Amount}}}, nil
}

// Transfer moves Amount from From to To atomically. When From has a fee
// account, the transfer discovers that account's stream and also moves a fee
// (1% of Amount rounded down, at least 1) to it in the same append.
type Transfer struct {
	base
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
	// ID identifies the transfer in its events. Callers set it (the
	// handler uses a UUIDv7); Handle must stay pure, so it never makes one.
	ID string `json:"-"`
}

// Validate checks the input rules; the error wraps ErrInvalidInput.
func (c Transfer) Validate() error {
	if err := ValidateAccountID("from", c.From); err != nil {
		return err
	}
	if err := ValidateAccountID("to", c.To); err != nil {
		return err
	}
	return validateAmount(c.Amount)
}

// CommandName implements executor.Named.
func (Transfer) CommandName() string { return CommandTransfer }

// Streams implements executor.Command.
func (c Transfer) Streams() []eventlog.StreamID {
	if c.From == c.To {
		return []eventlog.StreamID{StreamOf(c.From)}
	}
	return []eventlog.StreamID{StreamOf(c.From), StreamOf(c.To)}
}

// DiscoverStreams implements executor.StreamDiscoverer: the source's fee
// account, once the source has been folded.
func (c Transfer) DiscoverStreams(s State) []eventlog.StreamID {
	if fee := s.Account(c.From).FeeAccount; fee != "" {
		return []eventlog.StreamID{StreamOf(fee)}
	}
	return nil
}

// Fee returns the fee of a transfer of amount: 1% rounded down, at least 1.
func Fee(amount int64) int64 { return max(amount/100, 1) }

// Handle implements executor.Command.
func (c Transfer) Handle(s State) ([]executor.Emit[Event], error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.From == c.To {
		return nil, rule(CodeSameAccount, "cannot transfer from %q to itself", c.From)
	}
	from, to := s.Account(c.From), s.Account(c.To)
	if !from.Open {
		return nil, rule(CodeAccountNotFound, "account %q is not open", c.From)
	}
	if !to.Open {
		return nil, rule(CodeAccountNotFound, "account %q is not open", c.To)
	}
	var fee int64
	if from.FeeAccount != "" {
		if !s.Account(from.FeeAccount).Open {
			return nil, rule(CodeAccountNotFound, "fee account %q is not open", from.FeeAccount)
		}
		fee = Fee(c.Amount)
	}
	if from.Balance < c.Amount+fee {
		return nil, rule(CodeInsufficientFunds, "account %q has %d, needs %d", c.From, from.Balance, c.Amount+fee)
	}
	toCredit := c.Amount
	if from.FeeAccount == c.To {
		toCredit += fee
	}
	if to.Balance+toCredit > MaxBalance {
		return nil, rule(CodeBalanceLimit, "account %q would exceed the balance limit", c.To)
	}
	if fee > 0 && from.FeeAccount != c.To && s.Account(from.FeeAccount).Balance+fee > MaxBalance {
		return nil, rule(CodeBalanceLimit, "fee account %q would exceed the balance limit", from.FeeAccount)
	}
	events := []executor.Emit[Event]{
		{Stream: StreamOf(c.From), Event: TransferDebited{Account: c.From, To: c.To, Amount: c.Amount, TransferID: c.ID}},
		{Stream: StreamOf(c.To), Event: TransferCredited{Account: c.To, From: c.From, Amount: c.Amount, TransferID: c.ID}},
	}
	if fee > 0 {
		events = append(events,
			executor.Emit[Event]{Stream: StreamOf(c.From), Event: FeeCharged{Account: c.From, FeeAccount: from.FeeAccount, Amount: fee, TransferID: c.ID}},
			executor.Emit[Event]{Stream: StreamOf(from.FeeAccount), Event: FeeCollected{Account: from.FeeAccount, From: c.From, Amount: fee, TransferID: c.ID}},
		)
	}
	return events, nil
}

// Compile-time checks that the commands are commands.
var (
	_ executor.Command[State, Event]   = OpenAccount{}
	_ executor.Command[State, Event]   = Deposit{}
	_ executor.Command[State, Event]   = Withdraw{}
	_ executor.Command[State, Event]   = Transfer{}
	_ executor.StreamDiscoverer[State] = Transfer{}
	_ executor.Snapshotter             = Deposit{}
)
