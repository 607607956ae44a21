package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// rawPost opens a connection to the runner at base and sends the headers
// of a POST to path whose body is n bytes long, but no body.
func rawPost(t *testing.T, base, path string, n int) net.Conn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, u.Host, n); err != nil {
		t.Fatal(err)
	}
	return conn
}

// A body sent a byte at a time is cut at bodyTimeout: the client gets 408
// request_timeout and the connection is closed, long before the body
// would have arrived.
func TestSlowBodyIsCut(t *testing.T) {
	oldBody, oldRequest := bodyTimeout, requestTimeout
	bodyTimeout, requestTimeout = 300*time.Millisecond, 2*time.Second
	t.Cleanup(func() { bodyTimeout, requestTimeout = oldBody, oldRequest })
	s := start(t, testEnv(t.TempDir()))
	body := `{"account":"alice","owner":"Alice","padding":"` + strings.Repeat("x", 60) + `"}`
	conn := rawPost(t, s.url, "/commands/open-account", len(body))
	began := time.Now()
	go func() {
		for i := range len(body) { // the whole body would take 5 s
			time.Sleep(50 * time.Millisecond)
			if _, err := conn.Write([]byte{body[i]}); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body after %v: %v", time.Since(began), err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	took := time.Since(began)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), `"request_timeout"`) {
		t.Fatalf("slow body: %d %s", resp.StatusCode, b)
	}
	if took > 2*time.Second {
		t.Fatalf("the slow body held the connection for %v", took)
	}
	// The server closed the connection.
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the connection stays open (read %d bytes)", n)
	}
	// A long request after a prompt body is not cut: the deadline covers
	// the body only (a read waiting for its projection outlasts it).
	do(t, "POST", s.url+"/commands/open-account", `{"account":"bob","owner":"Bob"}`).want(t, 200, `"attempts":1`)
	began = time.Now()
	a := do(t, "GET", s.url+"/accounts/bob?min_position=1000", "{}") // a body, read at once
	if took := time.Since(began); a.status != 503 || !strings.Contains(a.body, "projection_behind") || took < time.Second {
		t.Fatalf("a read waiting past the body timeout: %d %s after %v; want 503 projection_behind at its own deadline", a.status, a.body, took)
	}
}

// Requests beyond EVENTCORE_MAX_IN_FLIGHT answer 503 overloaded with
// Retry-After at once, even before their bodies arrive; /healthz is not
// counted; a freed slot serves again.
func TestInFlightIsBounded(t *testing.T) {
	s := start(t, testEnv(t.TempDir(), "EVENTCORE_MAX_IN_FLIGHT", "2"))
	do(t, "POST", s.url+"/commands/open-account", `{"account":"alice","owner":"Alice"}`).want(t, 200, `"attempts":1`)
	body := `{"account":"alice","amount":1}`
	// Two requests whose bodies have not arrived hold both slots; one that
	// lost its slot to a probe (it was answered) is sent again.
	held := []net.Conn{rawPost(t, s.url, "/commands/deposit", len(body)), rawPost(t, s.url, "/commands/deposit", len(body))}
	answered := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		defer func() { _ = c.SetReadDeadline(time.Time{}) }()
		n, _ := c.Read(make([]byte, 1))
		return n > 0
	}
	eventually(t, 5*time.Second, "503 overloaded", func() bool {
		for i, c := range held {
			if answered(c) {
				held[i] = rawPost(t, s.url, "/commands/deposit", len(body))
			}
		}
		began := time.Now()
		a := do(t, "POST", s.url+"/commands/deposit", body)
		if a.status == 200 {
			return false // a held request has not taken its slot yet
		}
		a.want(t, 503, `"overloaded"`)
		// At once, not after waiting for a slot (the held requests never
		// give theirs up here): two seconds are far beyond a refusal's cost.
		if took := time.Since(began); took > 2*time.Second {
			t.Fatalf("503 overloaded after %v; want it at once", took)
		}
		if a.header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
		}
		return true
	})
	do(t, "GET", s.url+"/healthz", "").want(t, 200, `"ok"`)
	began := time.Now()
	a := do(t, "GET", s.url+"/accounts/alice", "")
	if took := time.Since(began); a.status != 503 || !strings.Contains(a.body, `"overloaded"`) || took > 2*time.Second {
		t.Fatalf("a read beyond the limit: %d %s after %v; want 503 overloaded at once", a.status, a.body, took)
	}
	// The held requests finish: their slots serve again.
	for _, c := range held {
		if _, err := io.WriteString(c, body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("held request: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("held request: %d", resp.StatusCode)
		}
	}
	do(t, "POST", s.url+"/commands/deposit", body).want(t, 200, `"attempts":1`)
}
