package apigw_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/eventcore-go/eventcore/handler/apigw"
)

func event(method, rawPath, rawQuery, body string) events.APIGatewayV2HTTPRequest {
	return events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "$default", RawPath: rawPath, RawQueryString: rawQuery, Body: body,
		Headers: map[string]string{},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID: "req-1", DomainName: "api.example.com",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: rawPath, SourceIP: "192.0.2.1"},
		},
	}
}

func TestRequest(t *testing.T) {
	ev := event("post", "/streams/a%2Fb", "type=A&type=B", `{"x":1}`)
	ev.Headers["idempotency-key"] = "k, with a comma"
	ev.Headers["X-Correlation-Id"] = "c"
	ev.Cookies = []string{"a=1", "b=2"}
	ev.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
		IAM: &events.APIGatewayV2HTTPRequestContextAuthorizerIAMDescription{UserARN: "arn:aws:iam::123456789012:user/u"},
	}
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "lambda-1"})
	r, err := apigw.Request(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/streams/a/b" || r.URL.EscapedPath() != "/streams/a%2Fb" || r.URL.RawQuery != "type=A&type=B" {
		t.Fatalf("%s %s %s %s", r.Method, r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery)
	}
	if got := r.Header.Values("Idempotency-Key"); len(got) != 1 || got[0] != "k, with a comma" {
		t.Fatalf("Idempotency-Key %q: a header value is not split at commas", got)
	}
	if r.Header.Get("X-Correlation-Id") != "c" || r.Header.Get("Cookie") != "a=1; b=2" {
		t.Fatalf("%v", r.Header)
	}
	if r.Host != "api.example.com" || r.RemoteAddr != "192.0.2.1" || r.ContentLength != 7 {
		t.Fatalf("%q %q %d", r.Host, r.RemoteAddr, r.ContentLength)
	}
	if b, _ := io.ReadAll(r.Body); string(b) != `{"x":1}` {
		t.Fatalf("body %q", b)
	}
	rc, ok := apigw.RequestContext(r.Context())
	if !ok || rc.RequestID != "req-1" || rc.Authorizer == nil || rc.Authorizer.IAM.UserARN != "arn:aws:iam::123456789012:user/u" {
		t.Fatalf("request context %+v %v", rc, ok)
	}
	if lc, ok := lambdacontext.FromContext(r.Context()); !ok || lc.AwsRequestID != "lambda-1" {
		t.Fatal("the Lambda context is lost")
	}
}

func TestRequestQueryParameters(t *testing.T) {
	ev := event("GET", "/events", "", "")
	ev.QueryStringParameters = map[string]string{"type": "A,B", "after": "1"}
	r, err := apigw.Request(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if q := r.URL.Query(); len(q["type"]) != 2 || q["type"][1] != "B" || q.Get("after") != "1" {
		t.Fatalf("query %v", q)
	}
}

func TestRequestBodies(t *testing.T) {
	ev := event("POST", "/x", "", base64.StdEncoding.EncodeToString([]byte("\x00\xffbinary")))
	ev.IsBase64Encoded = true
	r, err := apigw.Request(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r.Body); string(b) != "\x00\xffbinary" || r.ContentLength != 8 {
		t.Fatalf("%q %d", b, r.ContentLength)
	}

	ev.Body = "not base64!"
	r, err = apigw.Request(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r.Body); !errors.Is(err, apigw.ErrInvalidBase64) {
		t.Fatalf("read: %v", err)
	}
	if r.ContentLength != int64(base64.StdEncoding.DecodedLen(len(ev.Body))) {
		t.Fatalf("ContentLength %d", r.ContentLength)
	}

	if _, err := apigw.Request(context.Background(), event("GET", "/a%zz", "", "")); !errors.Is(err, apigw.ErrBadPath) {
		t.Fatalf("bad path: %v", err)
	}
	if r, err := apigw.Request(context.Background(), event("GET", "no-slash", "", "")); err != nil || r.URL.Path != "/no-slash" {
		t.Fatalf("%v %v", r, err)
	}
}

func TestServe(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("X-Many", "a")
		w.Header().Add("X-Many", "b")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, `{"path":"`+r.URL.Path+`"}`)
	})
	resp, err := apigw.Serve(context.Background(), h, event("GET", "/p", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusTeapot || resp.Body != `{"path":"/p"}` || resp.IsBase64Encoded ||
		resp.Headers["X-Many"] != "a,b" || resp.Headers["Content-Type"] != "application/json" {
		t.Fatalf("%+v", resp)
	}

	binary := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte{0xff, 0x00}) })
	resp, err = apigw.Serve(context.Background(), binary, event("GET", "/p", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !resp.IsBase64Encoded || resp.Body != base64.StdEncoding.EncodeToString([]byte{0xff, 0x00}) {
		t.Fatalf("%+v", resp)
	}
}

func TestDecode(t *testing.T) {
	if _, err := apigw.Decode([]byte(`{"command":"deposit"}`)); !errors.Is(err, apigw.ErrNotHTTP) {
		t.Fatalf("direct invocation: %v", err)
	}
	if _, err := apigw.Decode([]byte(`{"routeKey":"x","requestContext":{"http":5}}`)); !errors.Is(err, apigw.ErrMalformed) {
		t.Fatalf("malformed: %v", err)
	}
	payload, _ := json.Marshal(event("GET", "/p", "a=1", ""))
	ev, err := apigw.Decode(payload)
	if err != nil || ev.RawPath != "/p" || ev.RequestContext.RequestID != "req-1" {
		t.Fatalf("%+v %v", ev, err)
	}
}

// FuzzServe decodes arbitrary payloads as the Lambda entry points do and
// serves those that are HTTP API events: nothing panics, a request always
// has an absolute path, and the answer is what the handler wrote.
func FuzzServe(f *testing.F) {
	for _, ev := range []events.APIGatewayV2HTTPRequest{
		event("POST", "/commands/deposit", "", `{"account":"a","amount":1}`),
		event("GET", "/streams/a%2Fb", "after=1&type=A&type=B", ""),
		event("GET", "/a%zz", "", ""),
		event("", "", "%zz=;", ""),
	} {
		b, _ := json.Marshal(ev)
		f.Add(b)
	}
	f.Add([]byte(`{"routeKey":"GET /x","rawPath":"x","isBase64Encoded":true,"body":"!!","queryStringParameters":{"a":"1,2"},"cookies":["c=1"]}`))
	f.Add([]byte(`{"requestContext":{"http":{"method":"get","path":"/x"}},"headers":{"Host":"h","host":"i"}}`))
	f.Add([]byte(`{"command":"x"}`))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.EscapedPath(), "/") {
			panic("relative path " + r.URL.EscapedPath())
		}
		body, err := io.ReadAll(r.Body)
		if err != nil && !errors.Is(err, apigw.ErrInvalidBase64) {
			panic(err)
		}
		_, _ = w.Write(body)
	})
	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := apigw.Decode(payload)
		if err != nil {
			if !errors.Is(err, apigw.ErrNotHTTP) && !errors.Is(err, apigw.ErrMalformed) {
				t.Fatalf("Decode: %v", err)
			}
			return
		}
		resp, err := apigw.Serve(context.Background(), h, ev)
		if err != nil {
			if !errors.Is(err, apigw.ErrBadPath) {
				t.Fatalf("Serve: %v", err)
			}
			return
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if !ev.IsBase64Encoded && !resp.IsBase64Encoded && resp.Body != ev.Body {
			t.Fatalf("body %q, sent %q", resp.Body, ev.Body)
		}
	})
}
