package handler

import (
	"encoding/json"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

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

// writeBody answers status with a JSON body.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, e *Error) {
	setRetryAfter(w, e)
	writeBody(w, e.Status, errorJSON(e))
}

// setRetryAfter sets the Retry-After header of e, if it has one.
func setRetryAfter(w http.ResponseWriter, e *Error) {
	if e != nil && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
}

func internalError() *Error {
	return Errorf(http.StatusInternalServerError, "internal", "internal error")
}

// router routes requests with a net/http.ServeMux of method patterns
// ("POST /commands/{name}") and answers what the mux would answer in plain
// text as JSON errors: 404 not_found for a path no pattern has (or one
// that is not clean: the mux would redirect it) and 405
// method_not_allowed, with Allow, for a known path with another method.
// GET patterns do not serve HEAD.
type router struct {
	mux *http.ServeMux
}

func newRouter() *router { return &router{mux: http.NewServeMux()} }

func (rt *router) handle(method, pattern string, h http.HandlerFunc) {
	rt.mux.HandleFunc(method+" "+pattern, h)
}

// noMethod is a method no pattern has, to find a HEAD request's Allow.
const noMethod = "\x00"

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	escaped := r.URL.EscapedPath()
	if cleanPath(escaped) != escaped {
		writeError(w, Errorf(http.StatusNotFound, "not_found", "no route for %s", escaped))
		return
	}
	probe := r
	if r.Method == http.MethodHead {
		probe = r.Clone(r.Context())
		probe.Method = noMethod
	}
	h, pattern := rt.mux.Handler(probe)
	if pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	// The mux's own answer, to learn whether it is a 405 and its Allow.
	var mw statusWriter
	mw.header = http.Header{}
	h.ServeHTTP(&mw, probe)
	if mw.status != http.StatusMethodNotAllowed {
		writeError(w, Errorf(http.StatusNotFound, "not_found", "no route for %s", escaped))
		return
	}
	var allowed []string
	for m := range strings.SplitSeq(mw.header.Get("Allow"), ", ") {
		if m != http.MethodHead && m != "" {
			allowed = append(allowed, m)
		}
	}
	allow := strings.Join(allowed, ", ")
	w.Header().Set("Allow", allow)
	writeError(w, Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s allows %s", escaped, allow))
}

// statusWriter keeps a status and headers and drops the body.
type statusWriter struct {
	header http.Header
	status int
}

func (w *statusWriter) Header() http.Header { return w.header }
func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}
func (w *statusWriter) Write(p []byte) (int, error) { w.WriteHeader(http.StatusOK); return len(p), nil }

// cleanPath is the path net/http.ServeMux routes without a redirect: no
// empty, "." or ".." segments, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// patternNames returns the {name} wildcards of a pattern.
func patternNames(pattern string) []string {
	var names []string
	for seg := range strings.SplitSeq(pattern, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			names = append(names, strings.TrimSuffix(strings.TrimSuffix(seg[1:len(seg)-1], "..."), "$"))
		}
	}
	return names
}

// appendField adds "name":value at the end of a JSON object.
func appendField(obj []byte, name string, value uint64) []byte {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return obj
	}
	out := make([]byte, 0, len(obj)+len(name)+24)
	out = append(out, obj[:len(obj)-1]...)
	if len(obj) > 2 {
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, name...)
	out = append(out, `":`...)
	out = strconv.AppendUint(out, value, 10)
	return append(out, '}')
}
