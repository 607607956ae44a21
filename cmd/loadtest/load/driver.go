package load

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// NewClient returns an HTTP client for clients concurrent callers: a clone
// of http.DefaultTransport that keeps up to clients idle connections to
// the host, so every caller reuses its connection instead of opening one
// per request. Timeouts are per request (Config.Timeout), not here.
func NewClient(clients int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = clients
	t.MaxIdleConnsPerHost = clients
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}

// Run opens and funds the accounts, runs the load and returns its summary.
// It returns an error for an invalid Config, or when the setup fails (an
// account that exists already means another run used the prefix); the
// load's failures are counted, not returned. When ctx ends during the
// load, Run abandons the requests in flight and returns the summary of
// what ran with Interrupted set; when it ends during the setup, ctx's
// error.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	if cfg.Prefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		cfg.Prefix = "lt" + hex.EncodeToString(b[:])
	}
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.Clients)
	}
	d := &driver{cfg: cfg, base: strings.TrimRight(cfg.URL, "/")}
	sum := Summary{
		URL: cfg.URL, Prefix: cfg.Prefix, Clients: cfg.Clients, Accounts: cfg.Accounts, Mix: cfg.Mix, Seed: cfg.Seed,
		Counts: newCounts(), ByCommand: map[string]Counts{},
	}

	start := time.Now()
	if err := d.setup(ctx); err != nil {
		return Summary{}, err
	}
	sum.Setup = time.Since(start)

	start = time.Now()
	clients := d.load(ctx)
	sum.Elapsed = time.Since(start)
	sum.Interrupted = ctx.Err() != nil

	var latencies []time.Duration
	var deposited, withdrawn int64
	unknown := 0
	for _, c := range clients {
		for cmd, counts := range c.counts {
			if counts.Requests == 0 {
				continue
			}
			name := Command(cmd).String()
			all, ok := sum.ByCommand[name]
			if !ok {
				all = newCounts()
			}
			all.add(counts)
			sum.ByCommand[name] = all
			sum.add(counts)
		}
		latencies = append(latencies, c.latencies...)
		sum.Abandoned += c.abandoned
		sum.Position = max(sum.Position, c.position)
		deposited += c.deposited
		withdrawn += c.withdrawn
		unknown += c.unknown
	}
	slices.Sort(latencies)
	sum.Latency = latencyOf(latencies)
	sum.Latencies = latencies
	sum.Position = max(sum.Position, d.setupPosition.Load())

	if cfg.Verify && !sum.Interrupted {
		total, err := d.balances(ctx, sum.Position)
		if err != nil {
			return sum, fmt.Errorf("verify: %w", err)
		}
		sum.Verify = &Verification{
			Accounts: cfg.Accounts, Total: total,
			Expected: int64(cfg.Accounts)*cfg.Fund + deposited - withdrawn,
			Unknown:  unknown,
		}
	}
	return sum, nil
}

type driver struct {
	cfg           Config
	base          string
	setupPosition atomic.Uint64
	opened        atomic.Int64 // accounts opened by open-account commands
}

// answer is one request's outcome.
type answer struct {
	status   int
	code     string // of an error answer
	position uint64 // the highest event position of a 200 answer
	body     []byte // of a setup request or a read
	latency  time.Duration
	err      error // transport
}

// do sends one request and reads the whole answer.
func (d *driver) do(ctx context.Context, method, path string, body []byte, header http.Header) answer {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, r)
	if err != nil {
		return answer{err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	a := answer{status: resp.StatusCode, latency: time.Since(start), body: b}
	if err != nil {
		return answer{err: err}
	}
	if a.status == http.StatusOK {
		a.position = positionOf(b)
	} else {
		a.code = codeOf(b)
	}
	return a
}

// codeOf reads {"error":{"code":...}}.
func codeOf(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		return NoCode
	}
	return e.Error.Code
}

// positionOf reads the highest position of {"events":[{"position":...}]}.
func positionOf(body []byte) uint64 {
	var r struct {
		Events []struct {
			Position uint64 `json:"position"`
		} `json:"events"`
	}
	if json.Unmarshal(body, &r) != nil {
		return 0
	}
	var p uint64
	for _, e := range r.Events {
		p = max(p, e.Position)
	}
	return p
}

// TransportKind classifies a request that got no answer: "timeout",
// "refused", "reset", "eof" (the connection closed before an answer) or
// "other".
func TransportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// setup opens every account and deposits Fund into it, Clients at a time.
// Any answer but 200 fails it.
func (d *driver) setup(parent context.Context) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(d.cfg.Clients, d.cfg.Accounts) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= d.cfg.Accounts || ctx.Err() != nil {
					return
				}
				id := AccountID(d.cfg.Prefix, i)
				if err := d.setupCommand(ctx, "open-account", openBody(id)); err != nil {
					cancel(fmt.Errorf("setup: open account %s: %w", id, err))
					return
				}
				if d.cfg.Fund == 0 {
					continue
				}
				if err := d.setupCommand(ctx, "deposit", amountBody("account", id, d.cfg.Fund)); err != nil {
					cancel(fmt.Errorf("setup: fund account %s: %w", id, err))
					return
				}
			}
		})
	}
	wg.Wait()
	if err := parent.Err(); err != nil {
		return fmt.Errorf("setup interrupted: %w", err)
	}
	return context.Cause(ctx)
}

func (d *driver) setupCommand(ctx context.Context, name string, body []byte) error {
	a := d.do(ctx, http.MethodPost, "/commands/"+name, body, nil)
	switch {
	case a.err != nil:
		return a.err
	case a.status == http.StatusUnprocessableEntity && a.code == "account_exists":
		return errors.New("422 account_exists: another run used this prefix; choose another -prefix")
	case a.status != http.StatusOK:
		return fmt.Errorf("answered %d %s", a.status, strings.TrimSpace(string(a.body)))
	}
	for {
		p := d.setupPosition.Load()
		if a.position <= p || d.setupPosition.CompareAndSwap(p, a.position) {
			return nil
		}
	}
}

// client is one caller's record of the load.
type client struct {
	counts    [numCommands]Counts
	latencies []time.Duration
	abandoned int
	position  uint64
	// deposited and withdrawn add up the amounts answered 200; unknown
	// counts deposits and withdrawals whose outcome is unknown.
	deposited, withdrawn int64
	unknown              int
}

// load runs the clients until the count is sent, the duration is over or
// ctx ends, and returns their records.
func (d *driver) load(ctx context.Context) []*client {
	// stop ends the starting of new commands; ctx also abandons those in
	// flight.
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	if d.cfg.Duration > 0 {
		var cancelTimer context.CancelFunc
		stop, cancelTimer = context.WithTimeout(stop, d.cfg.Duration)
		defer cancelTimer()
	}
	var sent atomic.Int64
	clients := make([]*client, d.cfg.Clients)
	var wg sync.WaitGroup
	for k := range clients {
		c := &client{}
		for i := range c.counts {
			c.counts[i] = newCounts()
		}
		clients[k] = c
		rng := mrand.New(mrand.NewPCG(d.cfg.Seed, uint64(k)))
		wg.Go(func() {
			for seq := 0; stop.Err() == nil; seq++ {
				if d.cfg.Count > 0 && sent.Add(1) > int64(d.cfg.Count) {
					return
				}
				d.one(ctx, c, rng, k, seq)
			}
		})
	}
	wg.Wait()
	return clients
}

// one sends one command drawn from the mix and records its outcome.
func (d *driver) one(ctx context.Context, c *client, rng *mrand.Rand, k, seq int) {
	cmd := d.cfg.Mix.pick(rng.IntN(d.cfg.Mix.Total()))
	amount := 1 + rng.Int64N(d.cfg.Amount)
	var body []byte
	switch cmd {
	case OpenAccount:
		body = openBody(openedID(d.cfg.Prefix, d.opened.Add(1)))
	case Deposit, Withdraw:
		body = amountBody("account", AccountID(d.cfg.Prefix, rng.IntN(d.cfg.Accounts)), amount)
	case Transfer:
		from := rng.IntN(d.cfg.Accounts)
		to := rng.IntN(d.cfg.Accounts - 1)
		if to >= from {
			to++
		}
		body = transferBody(AccountID(d.cfg.Prefix, from), AccountID(d.cfg.Prefix, to), amount)
	}
	var header http.Header
	if d.cfg.IdempotencyKeys {
		header = http.Header{"Idempotency-Key": {d.cfg.Prefix + "-" + strconv.Itoa(k) + "-" + strconv.Itoa(seq)}}
	}
	a := d.do(ctx, http.MethodPost, "/commands/"+cmd.String(), body, header)
	if d.cfg.Progress != nil {
		defer d.cfg.Progress.Ended()
	}
	if a.err != nil && ctx.Err() != nil {
		c.abandoned++ // interrupted: neither an answer nor a transport failure
		if cmd == Deposit || cmd == Withdraw {
			c.unknown++
		}
		return
	}
	counts := &c.counts[cmd]
	counts.Requests++
	if a.err != nil {
		counts.TransportErrors++
		counts.TransportKinds[TransportKind(a.err)]++
		if cmd == Deposit || cmd == Withdraw {
			c.unknown++
		}
		return
	}
	counts.Statuses[a.status]++
	c.latencies = append(c.latencies, a.latency)
	switch a.status {
	case http.StatusOK:
		c.position = max(c.position, a.position)
		switch cmd {
		case Deposit:
			c.deposited += amount
		case Withdraw:
			c.withdrawn += amount
		}
	default:
		counts.Codes[a.code]++
		if a.status == http.StatusTooManyRequests {
			counts.Throttled++
		}
		if a.status >= 500 && (cmd == Deposit || cmd == Withdraw) {
			c.unknown++
		}
	}
}

// balances reads every account once the projection has reached position
// and returns the sum of their balances.
func (d *driver) balances(ctx context.Context, position uint64) (int64, error) {
	var total int64
	for i := range d.cfg.Accounts {
		id := AccountID(d.cfg.Prefix, i)
		path := "/accounts/" + id + "?min_position=" + strconv.FormatUint(position, 10)
		var a answer
		// A 503 projection_behind says the projection did not reach
		// position within the request's time: ask again, a few times.
		for try := 0; try < 5; try++ {
			if a = d.do(ctx, http.MethodGet, path, nil, nil); a.err != nil || a.status != http.StatusServiceUnavailable {
				break
			}
		}
		if a.err != nil {
			return 0, fmt.Errorf("read %s: %w", id, a.err)
		}
		var b struct {
			Balance *int64 `json:"balance"`
		}
		if a.status != http.StatusOK || json.Unmarshal(a.body, &b) != nil || b.Balance == nil {
			return 0, fmt.Errorf("read %s: answered %d %s", id, a.status, strings.TrimSpace(string(a.body)))
		}
		total += *b.Balance
	}
	return total, nil
}

// The bodies are written by hand: ids are [A-Za-z0-9_-] (Validate), so
// nothing needs escaping, and the load generator spends its CPU on the
// load.

func openBody(id string) []byte {
	return []byte(`{"account":"` + id + `","owner":"loadtest"}`)
}

func amountBody(field, id string, amount int64) []byte {
	return []byte(`{"` + field + `":"` + id + `","amount":` + strconv.FormatInt(amount, 10) + `}`)
}

func transferBody(from, to string, amount int64) []byte {
	return []byte(`{"from":"` + from + `","to":"` + to + `","amount":` + strconv.FormatInt(amount, 10) + `}`)
}
