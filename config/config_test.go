package config_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/eventlog/postgres"
	"github.com/eventcore-go/eventcore/eventlog/sqlite"
)

func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestDefaults(t *testing.T) {
	c, err := config.Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		DB:                 filepath.Join("data", "events.db"),
		ReadDB:             filepath.Join("data", "projections.db"),
		Sync:               sqlite.SyncFull,
		Journal:            sqlite.JournalWAL,
		CacheTTL:           5 * time.Minute,
		CacheMaxBytes:      64 << 20,
		PushTimeout:        250 * time.Millisecond,
		PushInterval:       10 * time.Second,
		ProjectionBatch:    4000,
		ProjectionInterval: time.Second,
		SnapshotThreshold:  100,
		ReplicaTimeout:     5 * time.Second,
		ReplicaLeaseTTL:    30 * time.Second,
		MaxInFlight:        config.DefaultMaxInFlight,
	}
	if c != want {
		t.Fatalf("defaults\n%+v\nwant\n%+v", c, want)
	}
	if c.DB != config.DefaultDB || c.ReadDB != config.DefaultReadDB {
		t.Fatal(c.DB, c.ReadDB)
	}
	if o := c.StoreOptions(); o.Synchronous != sqlite.SyncFull || o.Journal != sqlite.JournalWAL {
		t.Fatalf("%+v", o)
	}
	// Blank values are unset.
	blank, err := config.Load(env(map[string]string{"EVENTCORE_SYNC": "  ", "EVENTCORE_CACHE_TTL": "\t"}))
	if err != nil || blank != want {
		t.Fatalf("%+v %v", blank, err)
	}
}

func TestValues(t *testing.T) {
	c, err := config.Load(env(map[string]string{
		"EVENTCORE_DB":                  "/var/lib/ec/events.db",
		"EVENTCORE_READ_DB":             " /var/lib/ec/read.db ",
		"EVENTCORE_SYNC":                "NORMAL",
		"EVENTCORE_JOURNAL":             "truncate",
		"EVENTCORE_CACHE_TTL":           "90s",
		"EVENTCORE_CACHE_MAX_BYTES":     "1GiB",
		"EVENTCORE_SNAPSHOT_THRESHOLD":  "7",
		"EVENTCORE_PROJECTION_BATCH":    "10000",
		"EVENTCORE_PROJECTION_INTERVAL": "250ms",
		"EVENTCORE_ALLOW_EPHEMERAL":     "true",
		"EVENTCORE_PUSHGATEWAY_URL":     "http://pg:9091",
		"EVENTCORE_PUSH_TIMEOUT":        "1s",
		"EVENTCORE_PUSH_INTERVAL":       "0",
		"AWS_LAMBDA_MAX_CONCURRENCY":    "64",
		"EVENTCORE_MAX_IN_FLIGHT":       "32",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		DB: "/var/lib/ec/events.db", ReadDB: "/var/lib/ec/read.db",
		Sync: sqlite.SyncNormal, Journal: sqlite.JournalTruncate,
		CacheTTL: 90 * time.Second, CacheMaxBytes: 1 << 30, AllowEphemeral: true,
		PushgatewayURL: "http://pg:9091", PushTimeout: time.Second, PushInterval: 0, MaxConcurrency: 64,
		ProjectionBatch: 10000, ProjectionInterval: 250 * time.Millisecond, SnapshotThreshold: 7,
		ReplicaTimeout: 5 * time.Second, ReplicaLeaseTTL: 30 * time.Second, MaxInFlight: 32,
	}
	if c != want {
		t.Fatalf("%+v\nwant\n%+v", c, want)
	}
	if c.OnLambda {
		t.Fatal("not on Lambda")
	}
	for v, want := range map[string]int64{"64MB": 64e6, "1TiB": 1 << 40, "1": 1, "100 KiB": 100 << 10} {
		c, err := config.Load(env(map[string]string{"EVENTCORE_CACHE_MAX_BYTES": v}))
		if err != nil || c.CacheMaxBytes != want {
			t.Fatalf("%s: %d %v", v, c.CacheMaxBytes, err)
		}
	}
}

// TestBadVariables sets each variable to bad values: Load fails with one
// line that names it.
func TestBadVariables(t *testing.T) {
	cases := []struct {
		name   string
		values []string
	}{
		{"EVENTCORE_SYNC", []string{"fast", "off", "full;", "extra"}},
		{"EVENTCORE_JOURNAL", []string{"delete", "memory", "wal2", "off"}},
		{"EVENTCORE_REPLICA_URL", []string{"x", "http://bucket/events", "s3://", "s3:///path", "file://relative/x", "file:relative", "gs://bucket/x"}},
		{"EVENTCORE_READ_REPLICA_URL", []string{"x", "s3://", "file:relative", "s3://bucket/read"}}, // the last: no EVENTCORE_REPLICA_URL
		{"EVENTCORE_REPLICA_TIMEOUT", []string{"0", "soon", "-1s"}},
		{"EVENTCORE_REPLICA_LEASE_TTL", []string{"0", "soon", "-1s", "6s"}}, // the last: not over the timeout + 1s
		{"EVENTCORE_CACHE_TTL", []string{"5", "0", "0s", "-1m", "forever", "5 m"}},
		{"EVENTCORE_CACHE_MAX_BYTES", []string{"0", "lots", "-5MiB", "2TiB", "1.5.5MB", "99999999999999999999999"}},
		{"EVENTCORE_ALLOW_EPHEMERAL", []string{"yes", "no", "on", "2", "truee"}},
		{"EVENTCORE_PUSHGATEWAY_URL", []string{"ftp://pg:9091", "pg:9091", "http://", "://x"}},
		{"EVENTCORE_PUSH_TIMEOUT", []string{"0", "soon", "-1s"}},
		{"EVENTCORE_PUSH_INTERVAL", []string{"10", "soon", "-1s"}},
		{"AWS_LAMBDA_MAX_CONCURRENCY", []string{"0", "-1", "many", "1.5", "65537"}},
		{"EVENTCORE_PROJECTION_BATCH", []string{"0", "-1", "10001", "1e3", "1.5", "many", "99999999999999999999"}},
		{"EVENTCORE_PROJECTION_INTERVAL", []string{"0", "1", "-1s", "never"}},
		{"EVENTCORE_SNAPSHOT_THRESHOLD", []string{"0", "-1", "1073741825", "ten", "1e2"}},
		{"EVENTCORE_MAX_IN_FLIGHT", []string{"0", "-1", "1048577", "many", "1.5"}},
		{"EVENTCORE_DB", []string{"events.db?mode=ro", "events.db#x", "file:events.db", ":memory:"}},
		{"EVENTCORE_READ_DB", []string{"read.db?_pragma=x", "read.db#x", "file:read.db", ":memory:"}},
	}
	for _, c := range cases {
		for _, v := range append(c.values, "bad\nvalue") {
			if strings.HasSuffix(c.name, "DB") && v == "bad\nvalue" {
				continue // a legal file name
			}
			t.Run(c.name+"="+v, func(t *testing.T) {
				_, err := config.Load(env(map[string]string{c.name: v}))
				if err == nil {
					t.Fatalf("%s=%q accepted", c.name, v)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, c.name+": ") {
					t.Fatalf("error %q does not start with %s", msg, c.name)
				}
				if strings.ContainsAny(msg, "\r\n") {
					t.Fatalf("error %q is more than one line", msg)
				}
			})
		}
	}
}

func TestLambda(t *testing.T) {
	lambda := func(vars map[string]string) (config.Config, error) {
		m := map[string]string{"AWS_LAMBDA_FUNCTION_NAME": "execute"}
		for k, v := range vars {
			m[k] = v
		}
		return config.Load(env(m))
	}
	c, err := lambda(map[string]string{"EVENTCORE_DB": "/mnt/data/events.db", "EVENTCORE_READ_DB": "/mnt/data/projections.db", "EVENTCORE_JOURNAL": "truncate"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.OnLambda || c.DB != "/mnt/data/events.db" || c.ReadDB != "/mnt/data/projections.db" || c.Journal != sqlite.JournalTruncate || c.AllowEphemeral {
		t.Fatalf("%+v", c)
	}
	for _, bad := range []struct {
		vars map[string]string
		name string
	}{
		{map[string]string{}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "  ", "EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/mnt/data/e.db"}, "EVENTCORE_READ_DB"},
		// Not on EFS: its data would go with the instance.
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "data/e.db", "EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/mnt", "EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/mnt/", "EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/mntx/e.db", "EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/mnt/../tmp/e.db", "EVENTCORE_READ_DB": "/mnt/data/p.db"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/mnt/data/e.db", "EVENTCORE_READ_DB": "/mnt/data/p.db", "EVENTCORE_ALLOW_EPHEMERAL": "false"}, ""},
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_ALLOW_EPHEMERAL": "false"}, "EVENTCORE_DB"},
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_ALLOW_EPHEMERAL": "nope"}, "EVENTCORE_ALLOW_EPHEMERAL"},
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_REPLICA_URL": "s3://b/events"}, ""},
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_REPLICA_URL": "s3://b/events", "EVENTCORE_JOURNAL": "truncate"}, "EVENTCORE_JOURNAL"},
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_REPLICA_URL": "s3://b/events", "EVENTCORE_READ_REPLICA_URL": "s3://b/events/"}, "EVENTCORE_READ_REPLICA_URL"},
		{map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_REPLICA_URL": "s3://b/events?endpoint=http://127.0.0.1:9000", "EVENTCORE_READ_REPLICA_URL": "s3://b/read"}, ""},
	} {
		_, err := lambda(bad.vars)
		if bad.name == "" {
			if err != nil {
				t.Fatalf("%v: %v", bad.vars, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), bad.name+": ") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%v: %v, want an error naming %s", bad.vars, err, bad.name)
		}
	}
	// EVENTCORE_ALLOW_EPHEMERAL=true allows a log outside EFS.
	c, err = lambda(map[string]string{"EVENTCORE_DB": "/tmp/e.db", "EVENTCORE_READ_DB": "/tmp/p.db", "EVENTCORE_ALLOW_EPHEMERAL": "true"})
	if err != nil || !c.AllowEphemeral || c.DB != "/tmp/e.db" {
		t.Fatalf("%+v %v", c, err)
	}
	// The same checks do not apply outside Lambda.
	if _, err := config.Load(env(map[string]string{"EVENTCORE_DB": "/tmp/e.db"})); err != nil {
		t.Fatal(err)
	}
}

func FuzzLoad(f *testing.F) {
	for _, s := range [][2]string{
		{"EVENTCORE_SYNC", "normal"}, {"EVENTCORE_CACHE_MAX_BYTES", "64MiB"}, {"EVENTCORE_CACHE_TTL", "1h"},
		{"EVENTCORE_PROJECTION_BATCH", "1"}, {"EVENTCORE_DB", "/mnt/x"}, {"EVENTCORE_ALLOW_EPHEMERAL", "T"},
		{"AWS_LAMBDA_FUNCTION_NAME", "f"}, {"EVENTCORE_CACHE_MAX_BYTES", "1e3"}, {"EVENTCORE_READ_DB", "\x00"},
		{"EVENTCORE_PUSH_INTERVAL", "0"}, {"AWS_LAMBDA_MAX_CONCURRENCY", "64"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		c, err := config.Load(env(map[string]string{name: value}))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "EVENTCORE_") && !strings.HasPrefix(err.Error(), "AWS_LAMBDA_MAX_CONCURRENCY: ") || strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("%s=%q: error %q", name, value, err)
			}
			return
		}
		if c.CacheTTL <= 0 || c.CacheMaxBytes <= 0 || c.ProjectionBatch <= 0 || c.ProjectionInterval <= 0 || c.SnapshotThreshold <= 0 || c.PushTimeout <= 0 || c.PushInterval < 0 || c.MaxConcurrency < 0 {
			t.Fatalf("%s=%q: %+v", name, value, c)
		}
		if c.OnLambda && !c.AllowEphemeral && !strings.HasPrefix(filepath.Clean(c.DB)+"/", "/mnt/") {
			t.Fatalf("%s=%q: on Lambda with %q", name, value, c.DB)
		}
	})
}

func TestPostgres(t *testing.T) {
	const url = "postgres://app:secret@db.example.com:5432/bank?sslmode=require"
	c, err := config.Load(env(map[string]string{"EVENTCORE_DATABASE_URL": url}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Postgres() || c.DatabaseURL != url || c.DB != "" || c.ReadDB != "" {
		t.Errorf("%+v", c)
	}
	if o := c.PostgresOptions(); o.MaxConns != postgres.DefaultMaxConns || o.ConnectBudget != postgres.DefaultConnectBudget {
		t.Errorf("local options %+v", o)
	}
	// On Lambda no SQLite path is needed, and the connect budget fits the
	// init phase.
	c, err = config.Load(env(map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME": "execute", "EVENTCORE_DATABASE_URL": url, "EVENTCORE_DATABASE_MAX_CONNS": "3",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.PostgresOptions(); o.MaxConns != 3 || o.ConnectBudget != config.LambdaConnectBudget || o.ConnectBudget >= 10*time.Second {
		t.Errorf("Lambda options %+v", o)
	}
	c, err = config.Load(env(map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_DATABASE_CONNECT_BUDGET": "20s", "EVENTCORE_DATABASE_IAM_AUTH": "true"}))
	if err != nil || c.ConnectBudget != 20*time.Second || !c.DatabaseIAMAuth {
		t.Errorf("budget %v, IAM %v, %v", c.ConnectBudget, c.DatabaseIAMAuth, err)
	}
	// SQLite mode leaves the PostgreSQL fields zero.
	if c, _ := config.Load(env(nil)); c.Postgres() || c.DatabaseMaxConns != 0 || c.ConnectBudget != 0 {
		t.Errorf("SQLite mode %+v", c)
	}
}

func TestPostgresErrors(t *testing.T) {
	const url = "postgres://app:secret@db/bank"
	for _, tc := range []struct {
		vars map[string]string
		name string // the variable the error names
	}{
		{map[string]string{"EVENTCORE_DATABASE_URL": "mysql://app:secret@db/bank"}, "EVENTCORE_DATABASE_URL"},
		{map[string]string{"EVENTCORE_DATABASE_URL": "postgres://app:secret@db:notaport/bank"}, "EVENTCORE_DATABASE_URL"},
		{map[string]string{"EVENTCORE_DATABASE_URL": "host=db password=secret"}, "EVENTCORE_DATABASE_URL"},
		{map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_REPLICA_URL": "s3://bucket/log"}, "EVENTCORE_DATABASE_URL"},
		{map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_READ_REPLICA_URL": "s3://bucket/read"}, "EVENTCORE_DATABASE_URL"},
		{map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_DATABASE_MAX_CONNS": "2"}, "EVENTCORE_DATABASE_MAX_CONNS"},
		{map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_DATABASE_MAX_CONNS": "many"}, "EVENTCORE_DATABASE_MAX_CONNS"},
		{map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_DATABASE_CONNECT_BUDGET": "-1s"}, "EVENTCORE_DATABASE_CONNECT_BUDGET"},
		{map[string]string{"EVENTCORE_DATABASE_URL": url, "EVENTCORE_DATABASE_IAM_AUTH": "yes please"}, "EVENTCORE_DATABASE_IAM_AUTH"},
		{map[string]string{"EVENTCORE_DATABASE_URL": "postgres:///db?host=/tmp", "EVENTCORE_DATABASE_IAM_AUTH": "true"}, "EVENTCORE_DATABASE_IAM_AUTH"},
	} {
		_, err := config.Load(env(tc.vars))
		if err == nil {
			t.Errorf("%v: no error", tc.vars)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, tc.name+": ") || strings.Contains(msg, "\n") || strings.Contains(msg, "secret") {
			t.Errorf("%v: %q, want one line naming %s without the password", tc.vars, msg, tc.name)
		}
	}
}

// FuzzDatabaseURL: whatever EVENTCORE_DATABASE_URL holds, Load either
// accepts a postgres URL or fails with one line naming the variable,
// without the password.
func FuzzDatabaseURL(f *testing.F) {
	for _, s := range []string{
		"postgres://u:pw@h/db", "postgresql://u:pw@h:5432/db?sslmode=disable", "postgres://u:pw@[::1/db",
		"mysql://u:pw@h/db", "postgres://u:pw@h/db?password=pw", "postgres:///db?host=/tmp/x", "\x00", "%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, url string) {
		c, err := config.Load(env(map[string]string{"EVENTCORE_DATABASE_URL": url}))
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "EVENTCORE_DATABASE_URL: ") || strings.Contains(msg, "\n") {
				t.Fatalf("%q: %q", url, msg)
			}
			if pw := passwordOf(url); len(pw) >= 4 && strings.Count(url, pw) == 1 && strings.Contains(msg, pw) {
				t.Fatalf("%q: the error %q shows the password", url, msg)
			}
			return
		}
		if strings.TrimSpace(url) != "" && !c.Postgres() {
			t.Fatalf("%q accepted without selecting PostgreSQL", url)
		}
	})
}

// passwordOf returns the password of a user:password@ URL, "" if none.
func passwordOf(s string) string {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		return ""
	}
	userinfo, _, ok := strings.Cut(rest, "@")
	if !ok {
		return ""
	}
	_, pw, _ := strings.Cut(userinfo, ":")
	return pw
}
