package load

import (
	"strings"
	"testing"
	"time"
)

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mix
		err  string // a part of the error; "" = valid
	}{
		{in: "transfer=1", want: Mix{Transfer: 1}},
		{in: "transfer=8,deposit=1,withdraw=1", want: Mix{Transfer: 8, Deposit: 1, Withdraw: 1}},
		{in: " open-account = 2 , transfer=3", want: Mix{OpenAccount: 2, Transfer: 3}},
		{in: "deposit=0,withdraw=5", want: Mix{Withdraw: 5}},
		{in: "transfer=1000000", want: Mix{Transfer: MaxShare}},
		{in: "", err: "-mix: empty"},
		{in: "  ", err: "-mix: empty"},
		{in: "transfer", err: `-mix: "transfer" is not name=share`},
		{in: "transfer=1,", err: `-mix: "" is not name=share`},
		{in: "payout=1", err: `-mix: unknown command "payout"`},
		{in: "Transfer=1", err: `unknown command "Transfer"`},
		{in: "transfer=1,transfer=2", err: "-mix: transfer given twice"},
		{in: "transfer=-1", err: `-mix: share "-1" of transfer`},
		{in: "transfer=+1", err: `-mix: share "+1"`},
		{in: "transfer=1.5", err: `share "1.5"`},
		{in: "transfer=", err: `share ""`},
		{in: "transfer=1000001", err: "from 0 to 1000000"},
		{in: "transfer=99999999999999999999", err: "from 0 to 1000000"},
		{in: "transfer=0,deposit=0", err: "-mix: every share is 0"},
	} {
		m, err := ParseMix(tc.in)
		if tc.err == "" {
			if err != nil || m != tc.want {
				t.Errorf("ParseMix(%q) = %v, %v; want %v", tc.in, m, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseMix(%q) error %v; want one line with %q", tc.in, err, tc.err)
		}
		if m != (Mix{}) {
			t.Errorf("ParseMix(%q) = %v with an error", tc.in, m)
		}
	}
	if s := (Mix{Transfer: 8, Deposit: 1, Withdraw: 1}).String(); s != "deposit=1,withdraw=1,transfer=8" {
		t.Errorf("String %q", s)
	}
}

// FuzzParseMix: ParseMix never panics, its errors are one line naming the
// flag, and a mix it accepts is written by String in a form it reads back
// as the same mix.
func FuzzParseMix(f *testing.F) {
	for _, s := range []string{"transfer=1", "transfer=8,deposit=1,withdraw=1", " open-account = 2 ,transfer=0",
		"", "transfer", "x=1", "transfer=1,transfer=1", "transfer=-1", "deposit=1e3", "withdraw=\x00", "=,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMix(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "-mix: ") || strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("ParseMix(%q): error %q is not one line starting -mix:", s, err)
			}
			return
		}
		if m.Total() < 1 {
			t.Fatalf("ParseMix(%q) = %v: no share", s, m)
		}
		for c, share := range m {
			if share < 0 || share > MaxShare {
				t.Fatalf("ParseMix(%q): share %d of %s", s, share, Command(c))
			}
		}
		back, err := ParseMix(m.String())
		if err != nil || back != m {
			t.Fatalf("ParseMix(%q) = %v; its String %q reads back as %v, %v", s, m, m.String(), back, err)
		}
		// Every draw lands on a command with a share.
		for n := range min(m.Total(), 1000) {
			if c := m.pick(n); m[c] == 0 {
				t.Fatalf("pick(%d) = %s, which has no share in %v", n, c, m)
			}
		}
	})
}

func TestMixPick(t *testing.T) {
	m := Mix{Deposit: 1, Transfer: 3}
	var got [numCommands]int
	for n := range m.Total() {
		got[m.pick(n)]++
	}
	if got != [numCommands]int(m) {
		t.Fatalf("draws %v; want %v", got, m)
	}
}

func TestValidate(t *testing.T) {
	valid := Default()
	valid.Count = 10
	if err := valid.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		err    string
	}{
		{"no url", func(c *Config) { c.URL = "" }, "-url: "},
		{"ftp url", func(c *Config) { c.URL = "ftp://x" }, "-url: "},
		{"no host", func(c *Config) { c.URL = "http://" }, "-url: "},
		{"query", func(c *Config) { c.URL = "http://x/?a=1" }, "-url: "},
		{"bad url", func(c *Config) { c.URL = "http://x\x7f" }, "-url: "},
		{"no clients", func(c *Config) { c.Clients = 0 }, "-clients: 0"},
		{"both", func(c *Config) { c.Duration = time.Second }, "-n and -duration"},
		{"neither", func(c *Config) { c.Count = 0 }, "-n or -duration"},
		{"negative n", func(c *Config) { c.Count = -1 }, "-n: -1"},
		{"negative duration", func(c *Config) { c.Count, c.Duration = 0, -time.Second }, "-duration: "},
		{"no accounts", func(c *Config) { c.Accounts = 0 }, "-accounts: 0"},
		{"one account for transfers", func(c *Config) { c.Accounts = 1 }, "-accounts: 1: a transfer needs two"},
		{"bad prefix", func(c *Config) { c.Prefix = "a b" }, "-prefix: "},
		{"long prefix", func(c *Config) { c.Prefix = strings.Repeat("a", MaxPrefix+1) }, "-prefix: "},
		{"no mix", func(c *Config) { c.Mix = Mix{} }, "-mix: "},
		{"negative share", func(c *Config) { c.Mix = Mix{Transfer: 2, Deposit: -1} }, "-mix: share -1 of deposit"},
		{"negative fund", func(c *Config) { c.Fund = -1 }, "-fund: -1"},
		{"huge fund", func(c *Config) { c.Fund = 1e12 + 1 }, "-fund: "},
		{"no amount", func(c *Config) { c.Amount = 0 }, "-amount: 0"},
		{"no timeout", func(c *Config) { c.Timeout = 0 }, "-timeout: "},
	} {
		c := valid
		tc.change(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line starting %q", tc.name, err, tc.err)
		}
	}
	one := valid
	one.Accounts, one.Mix = 1, Mix{Deposit: 1, Withdraw: 1}
	one.Prefix = strings.Repeat("a", MaxPrefix)
	if err := one.Validate(); err != nil {
		t.Errorf("one account without transfers, longest prefix: %v", err)
	}
}

// TestAccountIDs: ids of different prefixes never meet, and every id is a
// valid account id, the longest prefix included.
func TestAccountIDs(t *testing.T) {
	seen := map[string]string{}
	for _, p := range []string{"a", "a-1", "a1", "a-1-0", "a-o", "b_"} {
		for i := range 120 {
			for _, id := range []string{AccountID(p, i), openedID(p, int64(i))} {
				if other, ok := seen[id]; ok && other != p {
					t.Fatalf("%s is an id of prefix %q and %q", id, p, other)
				}
				seen[id] = p
			}
		}
	}
	long := strings.Repeat("z", MaxPrefix)
	for _, id := range []string{AccountID(long, 1<<62), openedID(long, 1<<62)} {
		if !accountIDOK(id) {
			t.Fatalf("%s is not a valid account id", id)
		}
	}
}

func accountIDOK(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", r) {
			return false
		}
	}
	return true
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {95, 95}, {99, 99}, {100, 100}, {1, 1}, {0.5, 1}, {99.5, 100}} {
		if got := Percentile(d, tc.p); got != tc.want {
			t.Errorf("p%v of 1..100 = %v; want %v", tc.p, got, tc.want)
		}
	}
	// Nearest rank: the p50 of 1..4 is 2, the p99 of 1..10 is 10.
	if got := Percentile(d[:4], 50); got != 2 {
		t.Errorf("p50 of 1..4 = %v", got)
	}
	if got := Percentile(d[:10], 99); got != 10 {
		t.Errorf("p99 of 1..10 = %v", got)
	}
	if got := Percentile(d[:1], 50); got != 1 {
		t.Errorf("p50 of one = %v", got)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
	l := latencyOf(d[:4])
	if l != (Latency{Min: 1, Mean: 2, P50: 2, P95: 4, P99: 4, Max: 4}) {
		t.Errorf("latencyOf(1..4) = %+v", l)
	}
}
