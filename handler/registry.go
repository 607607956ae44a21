// Package handler holds the execute and project handlers of any domain: the
// code behind the two Lambda functions and the local runner. A domain
// registers its commands, projections, query routes and error codes in a
// Registry; the mains pick a store and hand the registry to NewExecute and
// NewProject.
package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/projection"
)

// Error is an error with the HTTP status and code the API answers with.
// Domain code returns it from queries, and ErrorMapper turns domain errors
// into it.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when positive, is answered as the Retry-After header
	// (whole seconds): when a retry may succeed.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf makes an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// InvalidRequest is the 400 error of malformed or invalid input.
func InvalidRequest(format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, "invalid_request", format, args...)
}

// CommandRunner runs one decoded command. Registered commands are turned
// into runners by Command.
type CommandRunner func(ctx context.Context, store eventlog.Store, body []byte, opts executor.Options) (executor.Result, error)

// QueryFunc answers a read route. path holds the route's {name} segments,
// unescaped; query is the URL query. It returns the value to encode as the
// JSON body (status 200) or an error (an *Error for a chosen status).
type QueryFunc func(ctx context.Context, env QueryEnv, path map[string]string, query map[string][]string) (any, error)

// QueryEnv is what a query may read.
type QueryEnv struct {
	Store       eventlog.Store
	Projections *projection.Runner
}

type queryRoute struct {
	pattern    string
	projection string // the projection it reads, for ?min_position and as_of
	fn         QueryFunc
}

// Registry is a domain's commands, projections and queries. Fill it at start
// (it is not safe for concurrent registration), then share it read-only.
type Registry struct {
	commands    map[string]CommandRunner
	projectors  []projection.Projector
	queries     []queryRoute
	errorMapper func(error) *Error
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{commands: map[string]CommandRunner{}} }

var commandName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Command registers a command under name (the {name} of POST
// /commands/{name}). decode turns the request body, which is valid UTF-8 and
// at most MaxBodyBytes, into the command; its errors are answered 400
// invalid_request (use DecodeStrict for the JSON rules). It panics on a bad
// or duplicate name: a programming error found at start.
func Command[S, E any](r *Registry, name string, codec *executor.Codec[E], decode func(body []byte) (executor.Command[S, E], error)) {
	r.Runner(name, func(ctx context.Context, store eventlog.Store, body []byte, opts executor.Options) (executor.Result, error) {
		cmd, err := decode(body)
		if err != nil {
			return executor.Result{}, asInvalid(err)
		}
		return executor.Execute[S](ctx, store, codec, cmd, opts)
	})
}

// Runner registers a command with a hand-written runner. Errors it returns
// that are not *Error go through the ErrorMapper.
func (r *Registry) Runner(name string, run CommandRunner) {
	if !commandName.MatchString(name) {
		panic(fmt.Sprintf("handler: command name %q is not [a-z0-9][a-z0-9_-]{0,63}", name))
	}
	if _, dup := r.commands[name]; dup {
		panic(fmt.Sprintf("handler: command %q registered twice", name))
	}
	r.commands[name] = run
}

// Projection registers a projector; the project function keeps it up to
// date.
func (r *Registry) Projection(p projection.Projector) { r.projectors = append(r.projectors, p) }

// Projectors returns the registered projectors.
func (r *Registry) Projectors() []projection.Projector { return r.projectors }

// Query registers a GET route such as "/accounts/{id}" answered by fn:
// a net/http.ServeMux path pattern without method or host, of literal and
// {name} segments. projectionName names the projection it reads ("" for
// none): with ?min_position=P the handler first waits until that
// projection reaches P, and a JSON object answer gets "as_of", the
// projection's checkpoint. It panics on a pattern that does not start with
// "/" (NewProject panics on one the mux refuses or that conflicts with
// another).
func (r *Registry) Query(pattern, projectionName string, fn QueryFunc) {
	if !strings.HasPrefix(pattern, "/") {
		panic(fmt.Sprintf("handler: route %q must start with /", pattern))
	}
	r.queries = append(r.queries, queryRoute{pattern: pattern, projection: projectionName, fn: fn})
}

// Errors sets how domain errors map to statuses and codes; an error it
// returns nil for is a 500.
func (r *Registry) Errors(mapper func(error) *Error) { r.errorMapper = mapper }

// CommandNames returns the registered command names.
func (r *Registry) CommandNames() []string {
	out := make([]string, 0, len(r.commands))
	for name := range r.commands {
		out = append(out, name)
	}
	return out
}

// QueryPatterns returns the registered query patterns.
func (r *Registry) QueryPatterns() []string {
	out := make([]string, 0, len(r.queries))
	for _, q := range r.queries {
		out = append(out, q.pattern)
	}
	return out
}

// invalidInput marks decode errors so they answer 400.
type invalidInput struct{ err error }

func (e invalidInput) Error() string { return e.err.Error() }
func (e invalidInput) Unwrap() error { return e.err }

func asInvalid(err error) error {
	var he *Error
	if errors.As(err, &he) {
		return err
	}
	return invalidInput{err}
}

// jsonSpace is the whitespace JSON allows around values (RFC 8259), not
// the wider set bytes.TrimSpace removes.
const jsonSpace = " \t\r\n"

// DecodeStrict decodes a JSON object into v: unknown fields (names match
// exactly, case included), a field given twice, trailing data, and values of
// the wrong JSON type (a string or a fraction for an integer) are errors.
func DecodeStrict(body []byte, v any) error {
	trimmed := bytes.Trim(body, jsonSpace)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return InvalidRequest("body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return InvalidRequest("body: %v", jsonError(err))
	}
	if len(bytes.Trim(trimmed[dec.InputOffset():], jsonSpace)) > 0 {
		return InvalidRequest("body: data after the JSON object")
	}
	return checkKeys(trimmed, v)
}

// checkKeys refuses what encoding/json lets through: a key that names a
// field only in another case ("Amount" for "amount") and a key given twice
// (the last would win). body is a single valid JSON object.
func checkKeys(body []byte, v any) error {
	fields := jsonFields(reflect.TypeOf(v))
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return InvalidRequest("body: %v", err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return InvalidRequest("body: %v", err)
		}
		key, _ := tok.(string)
		if fields != nil && !fields[key] {
			return InvalidRequest("body: json: unknown field %q", key)
		}
		if seen[key] {
			return InvalidRequest("body: field %q is given twice", key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return InvalidRequest("body: %v", err)
		}
	}
	return nil
}

var fieldCache sync.Map // reflect.Type -> map[string]bool

// jsonFields returns the JSON names of the fields of the struct t points
// to, or nil when t is not a pointer to a struct.
func jsonFields(t reflect.Type) map[string]bool {
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]bool)
	}
	names := map[string]bool{}
	for _, f := range reflect.VisibleFields(t.Elem()) {
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			continue // its fields are promoted
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		names[name] = true
	}
	fieldCache.Store(t, names)
	return names
}

func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %q must be a JSON %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("must be a JSON object, not %s", te.Value)
	}
	return err.Error()
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32", "uint64":
		return "integer"
	case "struct", "map":
		return "object"
	}
	return k
}
