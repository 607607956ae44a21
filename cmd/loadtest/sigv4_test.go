package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

var authPattern = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$`)

// verifySigV4 checks r's signature the way a verifier does: it signs the
// same request (the headers the client signed, the body's hash, its
// X-Amz-Date) with the secret and compares.
func verifySigV4(t *testing.T, r *http.Request, body []byte, creds aws.Credentials) (region, service string, ok bool) {
	m := authPattern.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil || m[1] != creds.AccessKeyID {
		return "", "", false
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", "", false
	}
	again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	again.Header = http.Header{}
	for _, h := range strings.Split(m[5], ";") {
		if h != "host" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	again.Header.Del("Authorization")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(sum[:]), m[4], m[3], at); err != nil {
		t.Fatal(err)
	}
	return m[3], m[4], again.Header.Get("Authorization") == r.Header.Get("Authorization")
}

// TestSigV4 runs a load through the signing transport against a server
// that verifies every signature; a request signed with another secret is
// refused, so the check can fail.
func TestSigV4(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		region, service, ok := verifySigV4(t, r, body, creds)
		if !ok || region != "eu-west-1" || service != "execute-api" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":{"code":"forbidden"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"attempts":1,"events":[{"position":1}]}`)
	}))
	defer srv.Close()
	sign := func(secret string) *http.Client {
		return &http.Client{Transport: &signingTransport{
			base: http.DefaultTransport, signer: v4.NewSigner(),
			credentials: credentials.NewStaticCredentialsProvider(creds.AccessKeyID, secret, ""),
			region:      "eu-west-1", service: DefaultSigningService, now: time.Now,
		}}
	}
	cfg := load.Default()
	cfg.URL, cfg.Clients, cfg.Count, cfg.Accounts, cfg.Prefix = srv.URL, 1, 5, 2, "sig"
	cfg.Client = sign(creds.SecretAccessKey)
	s, err := load.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Statuses[200] != 5 {
		t.Fatalf("statuses %v", s.Statuses)
	}
	cfg.Client, cfg.Prefix = sign("another secret"), "sig2"
	if _, err := load.Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a wrong signature was accepted: %v", err)
	}
}

func TestSigV4Flags(t *testing.T) {
	o, err := parseFlags(strings.Fields("-n 5 -sigv4 -region eu-west-1 -histogram out.PNG"), io.Discard)
	if err != nil || !o.SigV4 || o.Region != "eu-west-1" || o.Service != "execute-api" || o.Histogram != "out.PNG" {
		t.Fatalf("%+v %v", o, err)
	}
}

func TestHistogram(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 2000; i++ {
		lat = append(lat, time.Duration(i%200+1)*50*time.Microsecond)
	}
	lat = append(lat, 3*time.Second) // past p99.9
	s := load.Summary{Clients: 4, Latencies: lat}
	s.Latency.P50, s.Latency.P99, s.Latency.Max = 5*time.Millisecond, 9900*time.Microsecond, 3*time.Second
	path := filepath.Join(t.TempDir(), "latency.png")
	if err := writeHistogram(path, s); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() < 600 {
		t.Fatalf("not a PNG of a plot: %v", err)
	}
	if err := writeHistogram(path, load.Summary{}); err == nil {
		t.Fatal("a histogram of nothing")
	}
	if err := writeHistogram(filepath.Join(t.TempDir(), "missing", "x.png"), s); err == nil {
		t.Fatal("written into a missing directory")
	}
}
