package postgres_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/eventcore-go/eventcore/eventlog/postgres"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"postgres://user:pw@db.example.com:5432/events?sslmode=require", true},
		{"postgresql://user@localhost/events", true},
		{"postgres://user@/events?host=/tmp/socket", true},
		{"postgres://user@localhost/events?pool_max_conns=x", false},
		{"host=localhost dbname=events", false},
		{"mysql://user@localhost/events", false},
		{"", false},
		{"postgres://user:pw@local host/events", false},
	} {
		_, err := postgres.ParseURL(tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("ParseURL(%q): %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

// FuzzParseURL: no input panics, and no error or redacted form shows the
// password of a URL (its user password or password parameter).
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"postgres://user:secretpw@host:5432/db?sslmode=require",
		"postgresql://u:secretpw@/db?host=/tmp&password=secretpw",
		"postgres://u@h/db?password=secretpw",
		"postgres://u:secretpw@[::1]:5432/db",
		"postgres://u:secretpw@h:99999999/db",
		"postgres://u:secretpw@h/db?connect_timeout=x",
		"postgres://%zz:secretpw@h/db",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_, err := postgres.ParseURL(raw)
		red := postgres.Redact(raw)
		const pw = "secretpw"
		u, perr := url.Parse(raw)
		if perr != nil || strings.Count(raw, pw) != 1 {
			return
		}
		given, _ := u.User.Password()
		if given == pw || u.Query().Get("password") == pw {
			if strings.Contains(red, pw) {
				t.Errorf("Redact(%q) = %q shows the password", raw, red)
			}
			if err != nil && strings.Contains(err.Error(), pw) {
				t.Errorf("ParseURL(%q): %q shows the password", raw, err)
			}
		}
	})
}
