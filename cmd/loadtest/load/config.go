// Package load drives the bank example's HTTP API with concurrent clients
// and summarizes what it saw: the engine of cmd/loadtest, importable so a
// Go test or benchmark can run the same load.
//
// Run opens and funds Config.Accounts accounts named
// AccountID(Config.Prefix, i), then sends commands drawn from Config.Mix
// from Config.Clients clients until Config.Count commands were sent or
// Config.Duration passed, and returns a Summary: commands/s, exact latency
// percentiles, and the count of every status, error code and transport
// error. The error messages of Validate and ParseMix name the flags of
// cmd/loadtest that set each field.
package load

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/eventcore-go/eventcore/examples/bank"
)

// Command is one of the bank's commands.
type Command int

// The commands a Mix can hold, in the order Mix.String writes them.
const (
	OpenAccount Command = iota
	Deposit
	Withdraw
	Transfer
	numCommands
)

var commandNames = [numCommands]string{
	OpenAccount: bank.CommandOpenAccount,
	Deposit:     bank.CommandDeposit,
	Withdraw:    bank.CommandWithdraw,
	Transfer:    bank.CommandTransfer,
}

// String returns the command's name in the API (POST /commands/{name}).
func (c Command) String() string {
	if c < 0 || c >= numCommands {
		return "command(" + strconv.Itoa(int(c)) + ")"
	}
	return commandNames[c]
}

// Mix holds the share of each command: a command is drawn with probability
// share / total. Mix{load.Transfer: 8, load.Deposit: 1, load.Withdraw: 1}
// is "transfer=8,deposit=1,withdraw=1".
type Mix [numCommands]int

// MaxShare is the largest share of one command.
const MaxShare = 1_000_000

// Total is the sum of the shares.
func (m Mix) Total() int {
	t := 0
	for _, s := range m {
		t += s
	}
	return t
}

// String writes the mix as ParseMix reads it, commands in a fixed order,
// those with no share left out.
func (m Mix) String() string {
	var b strings.Builder
	for c, s := range m {
		if s == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(Command(c).String())
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(s))
	}
	return b.String()
}

// pick maps n, uniform in [0, Total), to a command.
func (m Mix) pick(n int) Command {
	for c, s := range m {
		if n < s {
			return Command(c)
		}
		n -= s
	}
	return Transfer // unreachable for n < Total
}

// ParseMix reads "name=share,name=share...": names of bank commands
// (open-account, deposit, withdraw, transfer), each at most once, shares
// integers from 0 to MaxShare, at least one of them positive. Spaces around
// names and shares are ignored. Errors start with "-mix: ".
func ParseMix(s string) (Mix, error) {
	var m Mix
	var seen [numCommands]bool
	if strings.TrimSpace(s) == "" {
		return m, errors.New("-mix: empty; want name=share pairs like transfer=8,deposit=1,withdraw=1")
	}
	for _, part := range strings.Split(s, ",") {
		name, share, ok := strings.Cut(part, "=")
		name, share = strings.TrimSpace(name), strings.TrimSpace(share)
		if !ok {
			return Mix{}, fmt.Errorf("-mix: %q is not name=share", part)
		}
		c, found := commandByName(name)
		if !found {
			return Mix{}, fmt.Errorf("-mix: unknown command %q (want %s)", name, strings.Join(commandNames[:], ", "))
		}
		if seen[c] {
			return Mix{}, fmt.Errorf("-mix: %s given twice", name)
		}
		seen[c] = true
		n, err := strconv.Atoi(share)
		if err != nil || n < 0 || n > MaxShare || !isDigits(share) {
			return Mix{}, fmt.Errorf("-mix: share %q of %s is not an integer from 0 to %d", share, name, MaxShare)
		}
		m[c] = n
	}
	if m.Total() == 0 {
		return Mix{}, errors.New("-mix: every share is 0")
	}
	return m, nil
}

func commandByName(name string) (Command, bool) {
	for c, n := range commandNames {
		if n == name {
			return Command(c), true
		}
	}
	return 0, false
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// Config is one load run. The zero values of Client and Prefix have
// defaults (see the fields); everything else must be set (Validate).
type Config struct {
	// URL is the API's base URL: commands go to URL + "/commands/{name}",
	// reads to URL + "/accounts/{id}".
	URL string
	// Clients is the number of concurrent clients, each with at most one
	// request in flight.
	Clients int
	// Exactly one of Count (commands to send) and Duration (how long to
	// start new commands; those in flight at its end are awaited) is set.
	Count    int
	Duration time.Duration
	// Accounts is the number of accounts opened and funded before the
	// load; deposits, withdrawals and transfers pick among them.
	Accounts int
	// Prefix makes the account ids of a run its own: AccountID(Prefix, i).
	// Empty: a random prefix, "lt" and 8 hex digits.
	Prefix string
	// Mix holds the commands' shares.
	Mix Mix
	// Fund is what each account is deposited before the load (0: nothing).
	Fund int64
	// Amount is the largest amount of one deposit, withdrawal or transfer;
	// each amount is drawn uniformly from 1 to Amount.
	Amount int64
	// Timeout bounds each request, its body read included.
	Timeout time.Duration
	// Seed seeds the random generators: client k draws from a generator
	// seeded with (Seed, k), so a run's choices per client repeat.
	Seed uint64
	// IdempotencyKeys sends a unique Idempotency-Key with every command.
	IdempotencyKeys bool
	// Verify reads every account back after the load and compares the sum
	// of the balances with the money deposited (Summary.Verify).
	Verify bool
	// Client sends the requests. Nil: a client with a Transport tuned to
	// keep Clients connections open (see NewClient).
	Client *http.Client
	// Progress, when set, is told as each command of the load ends.
	Progress Progress
}

// Progress follows a load as it runs (a progress bar).
type Progress interface {
	// Ended is called after each command of the load ends (answered,
	// failed in transport or abandoned), from the clients' goroutines at
	// once: it must be safe for concurrent use, and quick.
	Ended()
}

// Defaults of the flags, and the values Default returns.
const (
	DefaultURL      = "http://127.0.0.1:8080"
	DefaultClients  = 8
	DefaultAccounts = 100
	DefaultMix      = "transfer=8,deposit=1,withdraw=1"
	DefaultFund     = 1_000_000
	DefaultAmount   = 100
	DefaultTimeout  = 30 * time.Second
	DefaultSeed     = 1
)

// Default returns a Config with the defaults of cmd/loadtest's flags;
// neither Count nor Duration is set.
func Default() Config {
	mix, _ := ParseMix(DefaultMix)
	return Config{
		URL: DefaultURL, Clients: DefaultClients, Accounts: DefaultAccounts, Mix: mix,
		Fund: DefaultFund, Amount: DefaultAmount, Timeout: DefaultTimeout, Seed: DefaultSeed,
	}
}

// MaxPrefix is the longest Prefix: an account id (at most 64 characters)
// is the prefix, a dash, and a number of up to 20 characters.
const MaxPrefix = 40

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)

// AccountID is the id of the i-th account of a run with prefix: prefix,
// "-", i. Two runs with different prefixes never share an account: the
// part after the last dash is i, the rest is the prefix.
func AccountID(prefix string, i int) string {
	return prefix + "-" + strconv.Itoa(i)
}

// openedID is the id of the n-th account the open-account commands of
// the load open.
func openedID(prefix string, n int64) string {
	return prefix + "-o" + strconv.FormatInt(n, 10)
}

// Validate checks c. Each error is one line that starts with the flag
// setting the field ("-clients: ...").
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		return fmt.Errorf("-url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("-url: %q: want an http:// or https:// URL", c.URL)
	case u.Host == "":
		return fmt.Errorf("-url: %q has no host", c.URL)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("-url: %q: want a base URL without query or fragment", c.URL)
	}
	switch {
	case c.Clients < 1:
		return fmt.Errorf("-clients: %d: want at least 1", c.Clients)
	case c.Count != 0 && c.Duration != 0:
		return errors.New("-n and -duration: give only one of them")
	case c.Count == 0 && c.Duration == 0:
		return errors.New("-n or -duration: give one of them (a count of commands or how long to run)")
	case c.Count < 0:
		return fmt.Errorf("-n: %d: want at least 1", c.Count)
	case c.Duration < 0:
		return fmt.Errorf("-duration: %v: want a positive duration", c.Duration)
	case c.Accounts < 1:
		return fmt.Errorf("-accounts: %d: want at least 1", c.Accounts)
	case c.Accounts < 2 && c.Mix[Transfer] > 0:
		return fmt.Errorf("-accounts: %d: a transfer needs two accounts", c.Accounts)
	case c.Prefix != "" && !prefixPattern.MatchString(c.Prefix):
		return fmt.Errorf("-prefix: %q is not 1 to %d of A-Z a-z 0-9 _ -", c.Prefix, MaxPrefix)
	case c.Mix.Total() == 0:
		return errors.New("-mix: no command has a share")
	case c.Fund < 0 || c.Fund > bank.MaxAmount:
		return fmt.Errorf("-fund: %d: want 0 to %d", c.Fund, int64(bank.MaxAmount))
	case c.Amount < 1 || c.Amount > bank.MaxAmount:
		return fmt.Errorf("-amount: %d: want 1 to %d", c.Amount, int64(bank.MaxAmount))
	case c.Timeout <= 0:
		return fmt.Errorf("-timeout: %v: want a positive duration", c.Timeout)
	}
	for cmd, s := range c.Mix {
		if s < 0 || s > MaxShare {
			return fmt.Errorf("-mix: share %d of %s: want 0 to %d", s, Command(cmd), MaxShare)
		}
	}
	return nil
}
