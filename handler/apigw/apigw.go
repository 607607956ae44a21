// Package apigw adapts API Gateway HTTP API events (payload format 2.0) to
// net/http handlers: an event becomes an *http.Request, the handler's
// answer an events.APIGatewayV2HTTPResponse. It is the Lambda side of
// handlers that are plain http.Handlers everywhere else.
//
// The request keeps what the event says: the escaped path, the query
// string (or, without one, the parameters, whose repeated values API
// Gateway joins with commas), every header with its value as received (not
// split at commas), cookies, the source IP. Its context is the invocation's
// (with the Lambda context, whose request id logs use) and carries the
// event's request context (request id, IAM or JWT authorizer, ...), which
// RequestContext returns.
//
// The package is safe for concurrent use; it has no state.
package apigw

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// ErrInvalidBase64 is the error of reading the body of a request whose
// event says it is base64-encoded but is not. Its ContentLength is then
// the length the body would have, so that a size check still applies.
var ErrInvalidBase64 = errors.New("apigw: the body is not valid base64")

// ErrBadPath is the error of Request when the event's path is not a valid
// escaped path.
var ErrBadPath = errors.New("apigw: the path is not a valid escaped path")

// ErrNotHTTP is the error of Decode for a payload that is not an HTTP API
// event.
var ErrNotHTTP = errors.New("apigw: not an HTTP API event")

// ErrMalformed is the error of Decode for a payload that looks like an HTTP
// API event but does not decode as one.
var ErrMalformed = errors.New("apigw: malformed HTTP API event")

type contextKey struct{}

// RequestContext returns the API Gateway request context of the event a
// request was made from (by Request or Serve), and whether there is one.
func RequestContext(ctx context.Context) (events.APIGatewayV2HTTPRequestContext, bool) {
	rc, ok := ctx.Value(contextKey{}).(*events.APIGatewayV2HTTPRequestContext)
	if !ok {
		return events.APIGatewayV2HTTPRequestContext{}, false
	}
	return *rc, true
}

// Decode tells an HTTP API event from other Lambda payloads (direct
// invocations, schedules) by its routeKey or requestContext, and decodes
// it. Errors: ErrNotHTTP for another payload; ErrMalformed for an event
// that does not decode.
func Decode(payload []byte) (events.APIGatewayV2HTTPRequest, error) {
	var probe struct {
		RouteKey       *string         `json:"routeKey"`
		RequestContext json.RawMessage `json:"requestContext"`
	}
	_ = json.Unmarshal(payload, &probe)
	if probe.RouteKey == nil && len(probe.RequestContext) == 0 {
		return events.APIGatewayV2HTTPRequest{}, ErrNotHTTP
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return events.APIGatewayV2HTTPRequest{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return ev, nil
}

// Request returns the request of ev, under ctx. The method is upper-cased
// and not otherwise checked (a handler answers one it does not serve). A
// base64 body is decoded; one that does not decode fails when it is read,
// with ErrInvalidBase64. Errors: ErrBadPath.
func Request(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (*http.Request, error) {
	raw := ev.RawPath
	if raw == "" {
		raw = ev.RequestContext.HTTP.Path
	}
	if !strings.HasPrefix(raw, "/") {
		raw = "/" + raw
	}
	path, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrBadPath, raw)
	}
	u := &url.URL{Path: path, RawPath: raw, RawQuery: ev.RawQueryString}
	if u.RawQuery == "" && len(ev.QueryStringParameters) > 0 {
		q := url.Values{}
		for k, v := range ev.QueryStringParameters {
			q[k] = strings.Split(v, ",")
		}
		u.RawQuery = q.Encode()
	}
	header := make(http.Header, len(ev.Headers)+1)
	for k, v := range ev.Headers {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		header[ck] = append(header[ck], v)
	}
	if len(ev.Cookies) > 0 {
		header.Set("Cookie", strings.Join(ev.Cookies, "; "))
	}
	var body io.Reader = strings.NewReader(ev.Body)
	size := int64(len(ev.Body))
	if ev.IsBase64Encoded {
		decoded, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			body, size = errReader{ErrInvalidBase64}, int64(base64.StdEncoding.DecodedLen(len(ev.Body)))
		} else {
			body, size = bytes.NewReader(decoded), int64(len(decoded))
		}
	}
	host := ev.RequestContext.DomainName
	if host == "" {
		host = header.Get("Host")
	}
	rc := ev.RequestContext
	r := &http.Request{
		Method:        strings.ToUpper(ev.RequestContext.HTTP.Method),
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          io.NopCloser(body),
		ContentLength: size,
		Host:          host,
		RemoteAddr:    ev.RequestContext.HTTP.SourceIP,
		RequestURI:    u.RequestURI(),
	}
	return r.WithContext(context.WithValue(ctx, contextKey{}, &rc)), nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// Serve answers ev with h. Headers of several values are joined with
// commas; a body that is not valid UTF-8 is sent base64-encoded. Errors:
// those of Request, before h runs.
func Serve(ctx context.Context, h http.Handler, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	r, err := Request(ctx, ev)
	if err != nil {
		return events.APIGatewayV2HTTPResponse{}, err
	}
	w := NewResponseWriter()
	h.ServeHTTP(w, r)
	return w.Response(), nil
}

// ResponseWriter collects a handler's answer for Response. Make one with
// NewResponseWriter; it is for one request and one goroutine.
type ResponseWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// NewResponseWriter returns an empty ResponseWriter.
func NewResponseWriter() *ResponseWriter { return &ResponseWriter{header: http.Header{}} }

// Header returns the response headers.
func (w *ResponseWriter) Header() http.Header { return w.header }

// WriteHeader sets the status; only the first call counts.
func (w *ResponseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

// Write appends to the body, with status 200 when none was set.
func (w *ResponseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Response returns the answer as an HTTP API response.
func (w *ResponseWriter) Response() events.APIGatewayV2HTTPResponse {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	var headers map[string]string
	if len(w.header) > 0 {
		headers = make(map[string]string, len(w.header))
		for k, v := range w.header {
			headers[k] = strings.Join(v, ",")
		}
	}
	resp := events.APIGatewayV2HTTPResponse{StatusCode: status, Headers: headers}
	if b := w.body.Bytes(); utf8.Valid(b) {
		resp.Body = string(b)
	} else {
		resp.Body, resp.IsBase64Encoded = base64.StdEncoding.EncodeToString(b), true
	}
	return resp
}
