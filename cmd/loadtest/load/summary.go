package load

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Counts are the outcomes of a set of requests. Requests is the number of
// requests that ended: answered (one status each) or failed in transport.
// Requests == sum(Statuses) + TransportErrors.
type Counts struct {
	Requests int `json:"requests"`
	// Statuses counts answers by HTTP status.
	Statuses map[int]int `json:"statuses"`
	// Codes counts error answers by their {"error":{"code":...}}; an error
	// answer without a readable code counts as NoCode.
	Codes map[string]int `json:"codes"`
	// TransportErrors counts requests with no answer (refused, reset,
	// timed out); TransportKinds counts them by kind (TransportKind).
	TransportErrors int            `json:"transport_errors"`
	TransportKinds  map[string]int `json:"transport_kinds,omitempty"`
	// Throttled counts the answers 429 Too Many Requests (API Gateway's
	// or Lambda's throttling), apart from the other error answers; they
	// are in Statuses too.
	Throttled int `json:"throttled"`
}

// NoCode stands for the code of an error answer whose body is not
// {"error":{"code":"..."}}.
const NoCode = "(none)"

func newCounts() Counts {
	return Counts{Statuses: map[int]int{}, Codes: map[string]int{}, TransportKinds: map[string]int{}}
}

func (c *Counts) add(o Counts) {
	c.Requests += o.Requests
	c.TransportErrors += o.TransportErrors
	c.Throttled += o.Throttled
	for k, v := range o.Statuses {
		c.Statuses[k] += v
	}
	for k, v := range o.Codes {
		c.Codes[k] += v
	}
	for k, v := range o.TransportKinds {
		c.TransportKinds[k] += v
	}
}

// Answered is the number of requests answered with a status.
func (c Counts) Answered() int { return c.Requests - c.TransportErrors }

// Latency summarizes the latencies of the answered requests, from sending
// the request to reading the last byte of the answer. Percentiles are
// exact: the nearest rank over all latencies sorted.
type Latency struct {
	Min  time.Duration
	Mean time.Duration
	P50  time.Duration
	P95  time.Duration
	P99  time.Duration
	Max  time.Duration
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values
// at or below it. It returns 0 for no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The rank is ceil(p/100 * n), computed in integers where p is one.
	n := len(sorted)
	var rank int
	if p == float64(int(p)) {
		rank = (int(p)*n + 99) / 100
	} else {
		r := p / 100 * float64(n)
		rank = int(r)
		if float64(rank) < r {
			rank++
		}
	}
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

func latencyOf(sorted []time.Duration) Latency {
	if len(sorted) == 0 {
		return Latency{}
	}
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	return Latency{
		Min: sorted[0], Mean: sum / time.Duration(len(sorted)),
		P50: Percentile(sorted, 50), P95: Percentile(sorted, 95), P99: Percentile(sorted, 99),
		Max: sorted[len(sorted)-1],
	}
}

// Verification is what Config.Verify found after the load.
type Verification struct {
	// Accounts is the number of accounts read back.
	Accounts int
	// Total is the sum of their balances; Expected is what the run put in:
	// Fund for every account plus the deposits and minus the withdrawals
	// answered 200 (transfers move money between the accounts).
	Total, Expected int64
	// Unknown is the number of deposits and withdrawals whose outcome is
	// unknown (no answer, a 5xx, abandoned at an interrupt): with some,
	// Total may differ from Expected by their amounts.
	Unknown int
}

// OK reports whether the balances add up to what the run put in.
func (v Verification) OK() bool { return v.Total == v.Expected }

// Summary is what a run did.
type Summary struct {
	URL      string
	Prefix   string
	Clients  int
	Accounts int
	Mix      Mix
	Seed     uint64
	// Interrupted is true when the run's context ended before the load
	// did: the summary covers the commands that ran until then.
	Interrupted bool
	// Setup is how long opening and funding the accounts took; Elapsed is
	// the load's time, from its start until the last answer.
	Setup, Elapsed time.Duration
	// Counts are the outcomes of all commands of the load (not the
	// setup's), ByCommand of each command sent at least once.
	Counts
	ByCommand map[string]Counts
	// Abandoned is the number of requests in flight when the run was
	// interrupted; they are in no other count.
	Abandoned int
	// Latency over every answered request, whatever its status.
	Latency Latency
	// Latencies are those of every answered request, sorted (for a
	// histogram); not in the JSON form.
	Latencies []time.Duration
	// Position is the highest event position any answer reported: read
	// with ?min_position=Position to see every effect of the run.
	Position uint64
	// Verify is set when Config.Verify was.
	Verify *Verification
}

// PerSecond is the rate of answered commands over the load's time.
func (s Summary) PerSecond() float64 { return rate(s.Answered(), s.Elapsed) }

// OKPerSecond is the rate of commands answered 200.
func (s Summary) OKPerSecond() float64 { return rate(s.Statuses[200], s.Elapsed) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// jsonSummary is the JSON form: durations in seconds or milliseconds,
// named so.
type jsonSummary struct {
	URL               string            `json:"url"`
	Prefix            string            `json:"prefix"`
	Clients           int               `json:"clients"`
	Accounts          int               `json:"accounts"`
	Mix               string            `json:"mix"`
	Seed              uint64            `json:"seed"`
	Interrupted       bool              `json:"interrupted"`
	SetupSeconds      float64           `json:"setup_seconds"`
	ElapsedSeconds    float64           `json:"elapsed_seconds"`
	CommandsPerSecond float64           `json:"commands_per_second"`
	OKPerSecond       float64           `json:"ok_per_second"`
	Answered          int               `json:"answered"`
	Abandoned         int               `json:"abandoned"`
	LatencyMS         jsonLatency       `json:"latency_ms"`
	Position          uint64            `json:"position"`
	Verify            *jsonVerification `json:"verify,omitempty"`
	Counts
	ByCommand map[string]Counts `json:"by_command"`
}

type jsonLatency struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

type jsonVerification struct {
	Accounts int   `json:"accounts"`
	Total    int64 `json:"total"`
	Expected int64 `json:"expected"`
	Unknown  int   `json:"unknown"`
	OK       bool  `json:"ok"`
}

// MarshalJSON writes the summary for scripts: durations as numbers named
// with their unit (elapsed_seconds, latency_ms.p99), the rates computed,
// statuses keyed by their number as a string.
func (s Summary) MarshalJSON() ([]byte, error) {
	j := jsonSummary{
		URL: s.URL, Prefix: s.Prefix, Clients: s.Clients, Accounts: s.Accounts, Mix: s.Mix.String(), Seed: s.Seed,
		Interrupted: s.Interrupted, SetupSeconds: s.Setup.Seconds(), ElapsedSeconds: s.Elapsed.Seconds(),
		CommandsPerSecond: s.PerSecond(), OKPerSecond: s.OKPerSecond(), Answered: s.Answered(), Abandoned: s.Abandoned,
		LatencyMS: jsonLatency{
			Min: ms(s.Latency.Min), Mean: ms(s.Latency.Mean), P50: ms(s.Latency.P50),
			P95: ms(s.Latency.P95), P99: ms(s.Latency.P99), Max: ms(s.Latency.Max),
		},
		Position: s.Position, Counts: s.Counts, ByCommand: s.ByCommand,
	}
	if v := s.Verify; v != nil {
		j.Verify = &jsonVerification{Accounts: v.Accounts, Total: v.Total, Expected: v.Expected, Unknown: v.Unknown, OK: v.OK()}
	}
	return json.Marshal(j)
}

// WriteText writes the summary for people, one fact a line.
func (s Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	state := "done"
	if s.Interrupted {
		state = fmt.Sprintf("INTERRUPTED (%d requests in flight abandoned)", s.Abandoned)
	}
	fmt.Fprintf(&b, "loadtest %s: %s, %d clients, %d accounts (prefix %s), mix %s, seed %d\n",
		state, s.URL, s.Clients, s.Accounts, s.Prefix, s.Mix, s.Seed)
	fmt.Fprintf(&b, "setup:     %.2fs (accounts opened and funded)\n", s.Setup.Seconds())
	fmt.Fprintf(&b, "commands:  %d in %.2fs: %.1f commands/s answered, %.1f/s answered 200\n",
		s.Requests, s.Elapsed.Seconds(), s.PerSecond(), s.OKPerSecond())
	l := s.Latency
	fmt.Fprintf(&b, "latency:   p50 %s  p95 %s  p99 %s  (min %s  mean %s  max %s)\n",
		fmtDur(l.P50), fmtDur(l.P95), fmtDur(l.P99), fmtDur(l.Min), fmtDur(l.Mean), fmtDur(l.Max))
	fmt.Fprintf(&b, "statuses:  %s\n", orNone(joinCounts(s.Statuses)))
	fmt.Fprintf(&b, "codes:     %s\n", orNone(joinCounts(s.Codes)))
	if s.Throttled > 0 {
		fmt.Fprintf(&b, "throttled: %d answered 429 (%.1f%% of the answers)\n", s.Throttled, 100*float64(s.Throttled)/float64(max(1, s.Answered())))
	}
	fmt.Fprintf(&b, "transport: %d errors", s.TransportErrors)
	if s.TransportErrors > 0 {
		fmt.Fprintf(&b, " (%s)", joinCounts(s.TransportKinds))
	}
	b.WriteByte('\n')
	for _, name := range slices.Sorted(maps.Keys(s.ByCommand)) {
		c := s.ByCommand[name]
		fmt.Fprintf(&b, "  %-13s %7d  %s", name, c.Requests, joinCounts(c.Statuses))
		if len(c.Codes) > 0 {
			fmt.Fprintf(&b, "  [%s]", joinCounts(c.Codes))
		}
		if c.TransportErrors > 0 {
			fmt.Fprintf(&b, "  transport=%d", c.TransportErrors)
		}
		b.WriteByte('\n')
	}
	if v := s.Verify; v != nil {
		verdict := "ok"
		if !v.OK() {
			verdict = fmt.Sprintf("MISMATCH by %d", v.Total-v.Expected)
			if v.Unknown > 0 {
				verdict += fmt.Sprintf(" (%d deposits or withdrawals with unknown outcome)", v.Unknown)
			}
		}
		fmt.Fprintf(&b, "verify:    %d accounts hold %d, expected %d: %s\n", v.Accounts, v.Total, v.Expected, verdict)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// joinCounts writes "k=v k=v" in the keys' order.
func joinCounts[K int | string](m map[K]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprint(k)+"="+strconv.Itoa(m[k]))
	}
	return strings.Join(parts, " ")
}

// fmtDur writes d in milliseconds with three significant digits or so.
func fmtDur(d time.Duration) string {
	m := ms(d)
	switch {
	case m >= 100:
		return fmt.Sprintf("%.0fms", m)
	case m >= 10:
		return fmt.Sprintf("%.1fms", m)
	default:
		return fmt.Sprintf("%.2fms", m)
	}
}
