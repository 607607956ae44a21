package load

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/eventcore-go/eventcore/cmd/loadtest/internal/localtest"
)

func TestMain(m *testing.M) { localtest.Main(m) }

// balanceOf reads an account from the local runner once its projection
// reached position.
func balanceOf(t *testing.T, url, id string, position uint64) int64 {
	t.Helper()
	resp, err := http.Get(url + "/accounts/" + id + "?min_position=" + strconv.FormatUint(position, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	var b struct {
		Account string `json:"account"`
		Balance int64  `json:"balance"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &b) != nil || b.Account != id {
		t.Fatalf("GET /accounts/%s: %d %s", id, resp.StatusCode, body)
	}
	return b.Balance
}

// TestTransfersAgainstLocalRunner: 200 transfers from 8 clients over 10
// accounts on the real local runner are all answered (200, or 409 when
// conflicts outlast the retries), the summary adds up, and the money
// is conserved.
func TestTransfersAgainstLocalRunner(t *testing.T) {
	r := localtest.Start(t)
	cfg := Default()
	cfg.URL, cfg.Clients, cfg.Count, cfg.Accounts, cfg.Prefix = r.URL, 8, 200, 10, "conserve"
	cfg.Mix, cfg.Fund, cfg.Amount = Mix{Transfer: 1}, 1000, 50
	s, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 200 || s.Answered() != 200 || s.TransportErrors != 0 || s.Interrupted || s.Abandoned != 0 {
		t.Fatalf("requests %d answered %d transport %d interrupted %v", s.Requests, s.Answered(), s.TransportErrors, s.Interrupted)
	}
	if s.Statuses[200]+s.Statuses[409] != 200 || s.Statuses[409] != s.Codes["concurrency"] || len(s.Codes) > 1 {
		t.Fatalf("statuses %v codes %v", s.Statuses, s.Codes)
	}
	if tr := s.ByCommand["transfer"]; tr.Requests != 200 || len(s.ByCommand) != 1 {
		t.Fatalf("by command %v", s.ByCommand)
	}
	if s.PerSecond() <= 0 || s.Elapsed <= 0 || s.Setup <= 0 {
		t.Fatalf("rate %v over %v, setup %v", s.PerSecond(), s.Elapsed, s.Setup)
	}
	l := s.Latency
	if l.Min <= 0 || l.Min > l.P50 || l.P50 > l.P95 || l.P95 > l.P99 || l.P99 > l.Max || l.Mean < l.Min || l.Mean > l.Max {
		t.Fatalf("latency %+v", l)
	}
	// 10 opens, 10 deposits, then 2 events per transfer answered 200.
	if want := uint64(20 + 2*s.Statuses[200]); s.Position != want {
		t.Fatalf("position %d; want %d", s.Position, want)
	}
	var total int64
	moved := false
	for i := range cfg.Accounts {
		b := balanceOf(t, r.URL, AccountID(cfg.Prefix, i), s.Position)
		if b < 0 {
			t.Fatalf("account %d: balance %d", i, b)
		}
		moved = moved || b != cfg.Fund
		total += b
	}
	if total != int64(cfg.Accounts)*cfg.Fund || !moved {
		t.Fatalf("the accounts hold %d (moved: %v); want %d", total, moved, int64(cfg.Accounts)*cfg.Fund)
	}
}

// TestPrefixes: two runs on one server with different prefixes keep to
// their own accounts, at the same time too; a second run with a prefix
// already used fails at its setup and sends no load.
func TestPrefixes(t *testing.T) {
	r := localtest.Start(t)
	cfg := Default()
	cfg.URL, cfg.Clients, cfg.Count, cfg.Accounts = r.URL, 4, 60, 5
	cfg.Mix, cfg.Fund, cfg.Verify = Mix{Transfer: 3, Deposit: 1, Withdraw: 1}, 500, true
	a, b := cfg, cfg
	a.Prefix, b.Prefix, b.Fund = "run", "run-1", 900 // "run-1-0" is not "run-1" + "0"
	results := make(chan Summary, 2)
	errs := make(chan error, 2)
	for _, c := range []Config{a, b} {
		go func() {
			s, err := Run(context.Background(), c)
			results <- s
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		s := <-results
		if s.Requests != 60 || s.Statuses[200] == 0 || s.Verify == nil || !s.Verify.OK() || s.Verify.Unknown != 0 {
			t.Fatalf("%s: %+v verify %+v", s.Prefix, s.Counts, s.Verify)
		}
		for code := range s.Codes {
			if code != "concurrency" && code != "insufficient_funds" {
				t.Fatalf("%s: code %s", s.Prefix, code)
			}
		}
	}
	// The same prefix again: its accounts exist.
	again := a
	again.Count = 10
	_, err := Run(context.Background(), again)
	if err == nil || !strings.Contains(err.Error(), "account_exists") || !strings.Contains(err.Error(), "-prefix") {
		t.Fatalf("a prefix used twice: %v", err)
	}
}

// TestVerifyAgainstLocalRunner: with every command in the mix, the
// balances read back equal the fund plus deposits minus withdrawals.
func TestVerifyAgainstLocalRunner(t *testing.T) {
	r := localtest.Start(t)
	cfg := Default()
	cfg.URL, cfg.Clients, cfg.Count, cfg.Accounts, cfg.Prefix = r.URL, 4, 150, 4, "verify"
	cfg.Mix, cfg.Fund, cfg.Amount, cfg.Verify = Mix{OpenAccount: 1, Deposit: 2, Withdraw: 4, Transfer: 3}, 100, 60, true
	cfg.IdempotencyKeys = true
	s, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := s.Verify
	if v == nil || !v.OK() || v.Accounts != 4 || v.Unknown != 0 {
		t.Fatalf("verify %+v", v)
	}
	if s.ByCommand["open-account"].Statuses[200] != s.ByCommand["open-account"].Requests || len(s.ByCommand) != 4 {
		t.Fatalf("by command %v", s.ByCommand)
	}
	// Small funds and large withdrawals: some are refused, and counted.
	if s.Codes["insufficient_funds"] == 0 || s.Statuses[422] != s.Codes["insufficient_funds"] {
		t.Fatalf("statuses %v codes %v", s.Statuses, s.Codes)
	}
	var total int64
	for i := range cfg.Accounts {
		total += balanceOf(t, r.URL, AccountID(cfg.Prefix, i), s.Position)
	}
	if total != v.Total {
		t.Fatalf("read %d, verify says %d", total, v.Total)
	}
}
