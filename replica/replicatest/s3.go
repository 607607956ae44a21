// Package replicatest runs an in-process S3 server (gofakes3) for tests of
// S3 replicas, with a switch that makes it answer every request with 503
// as an unreachable bucket would, a delay added to every request as a
// bucket in another region (or Amazon S3's own latency) would add, and
// Amazon S3's answer (404) to a conditional PUT on a missing key.
package replicatest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Bucket is the bucket every S3 server here starts with.
const Bucket = "eventcore"

// S3 is a running fake S3 endpoint on 127.0.0.1.
type S3 struct {
	Endpoint string // http://127.0.0.1:port
	down     atomic.Bool
	delay    atomic.Int64 // time.Duration added to every request
	puts     atomic.Int64 // PUT requests served
	held     atomic.Int64 // requests waiting out the delay now
}

// StartS3 starts a server that stops with the test. It sets the AWS
// variables the SDK reads (dummy credentials, a region) and clears
// AWS_CA_BUNDLE, which some machines set and which breaks a plain-HTTP
// endpoint, for this test and the processes it starts.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	Env(t)
	backend := s3mem.New()
	faker := gofakes3.New(backend)
	if err := backend.CreateBucket(Bucket); err != nil {
		t.Fatal(err)
	}
	s := &S3{}
	api := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			s.puts.Add(1)
		}
		if d := time.Duration(s.delay.Load()); d > 0 {
			s.held.Add(1)
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
				s.held.Add(-1)
			case <-r.Context().Done(): // the client gave up
				s.held.Add(-1)
				timer.Stop()
				return
			}
		}
		if s.down.Load() {
			http.Error(w, "<Error><Code>ServiceUnavailable</Code><Message>down for a test</Message></Error>", http.StatusServiceUnavailable)
			return
		}
		// Amazon S3 answers a PUT with If-Match on a key that does not
		// exist with 404 NoSuchKey (gofakes3 answers 412).
		if r.Method == http.MethodPut && r.Header.Get("If-Match") != "" {
			if bucket, key, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); ok {
				if _, err := backend.HeadObject(bucket, key); err != nil {
					w.Header().Set("Content-Type", "application/xml")
					w.WriteHeader(http.StatusNotFound)
					_, _ = w.Write([]byte("<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"))
					return
				}
			}
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.Endpoint = srv.URL
	return s
}

// Env sets the AWS variables for a test against a local S3 endpoint.
func Env(t testing.TB) {
	t.Helper()
	for k, v := range EnvVars() {
		t.Setenv(k, v)
	}
}

// EnvVars are the variables Env sets, for a child process's environment.
func EnvVars() map[string]string {
	return map[string]string{
		"AWS_CA_BUNDLE":               "",
		"AWS_ACCESS_KEY_ID":           "test",
		"AWS_SECRET_ACCESS_KEY":       "test",
		"AWS_REGION":                  "us-east-1",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
		"AWS_CONFIG_FILE":             "/dev/null",
	}
}

// EnvList is EnvVars as KEY=value lines, for exec.Cmd.Env.
func EnvList() []string {
	var out []string
	for k, v := range EnvVars() {
		out = append(out, k+"="+v)
	}
	return out
}

// URL is the replica URL of path in the bucket, in Litestream's syntax.
func (s *S3) URL(path string) string {
	return "s3://" + Bucket + "/" + path + "?endpoint=" + s.Endpoint + "&region=us-east-1&forcePathStyle=true"
}

// SetDown makes the server answer 503 to everything (true) or serve again.
func (s *S3) SetDown(down bool) { s.down.Store(down) }

// SetDelay makes the server wait d before it serves (or, while down,
// refuses) each request that arrives from now on, as the round trip to a
// real bucket would; requests wait concurrently, so it adds latency, not a
// limit on throughput. A request whose client gives up while it waits is
// dropped unanswered. Zero, the default, serves at once; a negative d is
// taken as zero. Safe for concurrent use; call it right after StartS3 to
// delay every request of a test.
func (s *S3) SetDelay(d time.Duration) { s.delay.Store(int64(max(d, 0))) }

// WaitHeld returns once a request is waiting out the delay set by
// SetDelay: the client's call is in flight at the replica. It fails the
// test when none arrives within 30 s. Tests use it where a fixed sleep
// would guess how long the client takes to get there.
func (s *S3) WaitHeld(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.held.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no request reached the replica within 30s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Puts returns how many PUT requests (uploads, lease writes) the server
// has received: with one upload per sync, how many syncs a load cost.
func (s *S3) Puts() int64 { return s.puts.Load() }
