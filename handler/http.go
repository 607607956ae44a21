package handler

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-lambda-go/events"
)

// route is a method and a path pattern of literal and {name} segments.
type route struct {
	method  string
	pattern string
	segs    []string
}

func mustRoute(method, pattern string) route {
	if !strings.HasPrefix(pattern, "/") {
		panic(fmt.Sprintf("handler: route %q must start with /", pattern))
	}
	return route{method: method, pattern: pattern, segs: strings.Split(strings.TrimPrefix(pattern, "/"), "/")}
}

// match returns the {name} segments of path when it fits the pattern.
func (r route) match(segs []string) (map[string]string, bool) {
	if len(segs) != len(r.segs) {
		return nil, false
	}
	var vars map[string]string
	for i, p := range r.segs {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if segs[i] == "" {
				return nil, false
			}
			if vars == nil {
				vars = map[string]string{}
			}
			vars[p[1:len(p)-1]] = segs[i]
			continue
		}
		if p != segs[i] {
			return nil, false
		}
	}
	return vars, true
}

// splitPath splits an escaped path into unescaped segments, so that a
// segment may hold an escaped "/".
func splitPath(rawPath string) ([]string, error) {
	parts := strings.Split(strings.TrimPrefix(rawPath, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, err
		}
		parts[i] = u
	}
	return parts, nil
}

// requestPath is the escaped path of an HTTP API request.
func requestPath(req events.APIGatewayV2HTTPRequest) string {
	if req.RawPath != "" {
		return req.RawPath
	}
	return req.RequestContext.HTTP.Path
}

func requestMethod(req events.APIGatewayV2HTTPRequest) string {
	return strings.ToUpper(req.RequestContext.HTTP.Method)
}

// header finds a request header by name, whatever its case.
func header(req events.APIGatewayV2HTTPRequest, name string) (string, bool) {
	for k, v := range req.Headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func errorJSON(e *Error) []byte {
	var b errorBody
	b.Error.Code, b.Error.Message = e.Code, e.Message
	out, _ := json.Marshal(b)
	return out
}

func response(status int, body []byte, headers map[string]string) events.APIGatewayV2HTTPResponse {
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range headers {
		h[k] = v
	}
	return events.APIGatewayV2HTTPResponse{StatusCode: status, Headers: h, Body: string(body)}
}

func errorResponse(e *Error, headers map[string]string) events.APIGatewayV2HTTPResponse {
	return response(e.Status, errorJSON(e), headers)
}

func jsonResponse(status int, v any, headers map[string]string) events.APIGatewayV2HTTPResponse {
	body, err := json.Marshal(v)
	if err != nil {
		return errorResponse(internalError(), headers)
	}
	return response(status, body, headers)
}

func internalError() *Error {
	return Errorf(http.StatusInternalServerError, "internal", "internal error")
}

// routeError answers a path no route has (404 not_found) or a known path
// with another method (405 method_not_allowed, with Allow).
func routeError(path string, allowed []string) events.APIGatewayV2HTTPResponse {
	if len(allowed) == 0 {
		return errorResponse(Errorf(http.StatusNotFound, "not_found", "no route for %s", path), nil)
	}
	return errorResponse(Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s allows %s", path, strings.Join(allowed, ", ")),
		map[string]string{"Allow": strings.Join(allowed, ", ")})
}

func parseQuery(raw string) (map[string][]string, error) {
	v, err := url.ParseQuery(raw)
	return v, err
}

func splitComma(v string) []string { return strings.Split(v, ",") }

// httpEvent tells an HTTP API event from other Lambda payloads by its
// routeKey or requestContext. ok is false for other payloads; bad is the
// answer to an HTTP event that cannot be decoded.
func httpEvent(payload json.RawMessage) (req events.APIGatewayV2HTTPRequest, ok bool, bad *events.APIGatewayV2HTTPResponse) {
	var probe struct {
		RouteKey       *string         `json:"routeKey"`
		RequestContext json.RawMessage `json:"requestContext"`
	}
	_ = json.Unmarshal(payload, &probe)
	if probe.RouteKey == nil && len(probe.RequestContext) == 0 {
		return req, false, nil
	}
	if err := json.Unmarshal(payload, &req); err != nil {
		resp := errorResponse(InvalidRequest("malformed HTTP API event"), nil)
		return req, true, &resp
	}
	return req, true, nil
}
