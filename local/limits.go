package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/eventcore-go/eventcore/handler"
)

// bodyTimeout bounds how long a request's body may take to arrive, from
// the end of its headers (which ReadHeaderTimeout bounds).
var bodyTimeout = 10 * time.Second

// Timeouts of the runner's HTTP server.
const (
	headerTimeout = 10 * time.Second
	idleTimeout   = 2 * time.Minute
)

// limits bounds what requests may take of the runner. At most cap(slots)
// requests are served at once: one more is answered 503 overloaded with
// Retry-After at once, without reading its body, and its connection
// closed (/healthz and /metrics are not counted). A body must arrive within bodyTimeout, or the request is
// answered 408 request_timeout and its connection closed: a client that
// sends a body byte by byte cannot hold a connection. It is safe for
// concurrent use.
type limits struct {
	next  http.Handler
	slots chan struct{}
}

func newLimits(next http.Handler, maxInFlight int) *limits {
	return &limits{next: next, slots: make(chan struct{}, maxInFlight)}
}

func (l *limits) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" || r.URL.Path == "/metrics" {
		l.next.ServeHTTP(w, r)
		return
	}
	select {
	case l.slots <- struct{}{}:
		defer func() { <-l.slots }()
	default:
		// Without reading the body: the connection is closed, so that
		// the server does not wait for the body before answering.
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "1")
		writeJSONError(w, http.StatusServiceUnavailable, "overloaded", "the runner is serving as many requests as it may; retry shortly")
		return
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength <= handler.MaxBodyBytes {
		body, err := readBody(w, r)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.Header().Set("Connection", "close")
			writeJSONError(w, http.StatusRequestTimeout, "request_timeout", "the body did not arrive within "+bodyTimeout.String())
			return
		}
		r.Body = &bufferedBody{Reader: bytes.NewReader(body), err: err}
	}
	l.next.ServeHTTP(w, r)
}

// readBody reads up to handler.MaxBodyBytes+1 bytes of r's body within
// bodyTimeout (the handler answers a longer body 413), then lifts the
// deadline, so that it does not end the request's context while the
// handler runs.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(bodyTimeout)); err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, handler.MaxBodyBytes+1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, err
	}
	return body, errors.Join(err, rc.SetReadDeadline(time.Time{}))
}

// bufferedBody is a body read in advance, and the error that ended the
// read, returned after its bytes.
type bufferedBody struct {
	*bytes.Reader
	err error
}

func (b *bufferedBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *bufferedBody) Close() error { return nil }

// writeJSONError answers an error in the API's format.
func writeJSONError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"error":{"code":"`+code+`","message":"`+message+`"}}`)
}
