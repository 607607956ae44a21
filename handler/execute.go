package handler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/cache"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/handler/apigw"
)

// MaxBodyBytes is the largest command body accepted (413 too_large above).
const MaxBodyBytes = 256 << 10

// MaxIdempotencyKeyLength bounds the Idempotency-Key header.
const MaxIdempotencyKeyLength = 128

// CommandRoute is the pattern of the execute function's route.
const CommandRoute = "/commands/{name}"

// Execute is the execute function's handler: POST /commands/{name}, an
// http.Handler, also over API Gateway HTTP API (payload 2.0) events and
// direct invocations (Invoke). It is safe for concurrent use.
type Execute struct {
	router   *router
	reg      *Registry
	store    eventlog.Store
	options  executor.Options
	log      *slog.Logger
	observer CommandObserver
	durable  func(context.Context) error
	// AfterCommand, when set, is called after every command that recorded
	// events, with the last position; the local runner uses it to wake its
	// projections. It must not block.
	AfterCommand func(eventlog.Position)
}

// ExecuteOptions configure an Execute handler.
type ExecuteOptions struct {
	Cache             *cache.Cache         // warm-instance cache; nil for none
	Retry             executor.RetryPolicy // nil = executor.DefaultRetryPolicy
	SnapshotThreshold int                  // 0 = executor default; negative disables
	Logger            *slog.Logger         // nil = slog.Default()
	Observer          CommandObserver      // nil for none
	// Admission orders the commands of this process whose declared
	// streams overlap, so that they do not fail each other's version
	// checks (see executor.Admission); nil = one of the handler's own.
	Admission *executor.Admission
	// Durable, when set, is called after every command that succeeded
	// (whether it recorded events, found its idempotency key already
	// recorded, or decided nothing) or was refused by a business rule
	// (422), before the answer: it makes the log
	// durable beyond this instance (a replica sync). Any error answers 503
	// replica_unavailable (outcome unknown): the command is not
	// acknowledged. An append refused with eventlog.ErrNotWriter answers
	// 503 writer_unavailable (nothing recorded).
	Durable func(context.Context) error
}

// CommandObserver is told about every executed command (metrics). Its
// methods must be safe for concurrent use and must not block.
type CommandObserver interface {
	// ObserveCommand reports one command of a registered name: its outcome
	// (ok, rejected, conflict, error), its duration, its attempts and the
	// events it recorded.
	ObserveCommand(command, outcome string, took time.Duration, attempts, events int)
	// ObserveRetry reports a retry after a version conflict.
	ObserveRetry()
	// ObserveAdmission reports how long a command waited for the commands
	// ahead of it on its streams (see ExecuteOptions.Admission).
	ObserveAdmission(wait time.Duration)
}

// Command outcomes reported to a CommandObserver.
const (
	OutcomeOK       = "ok"
	OutcomeRejected = "rejected"
	OutcomeConflict = "conflict"
	OutcomeError    = "error"
)

// NewExecute returns the execute handler of reg's commands over store.
func NewExecute(reg *Registry, store eventlog.Store, opts ExecuteOptions) *Execute {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	x := &Execute{
		reg: reg, store: store, log: opts.Logger, observer: opts.Observer, durable: opts.Durable,
		options: executor.Options{Cache: opts.Cache, Retry: opts.Retry, SnapshotThreshold: opts.SnapshotThreshold, Admission: opts.Admission},
	}
	x.router = newRouter()
	x.router.handle(http.MethodPost, CommandRoute, x.serveCommand)
	if x.options.Admission == nil {
		x.options.Admission = executor.NewAdmission()
	}
	if opts.Observer != nil {
		x.options.OnRetry = func(executor.RetryInfo) { opts.Observer.ObserveRetry() }
		x.options.OnAdmit = opts.Observer.ObserveAdmission
	}
	return x
}

// CommandRequest is a direct invocation of the execute function.
type CommandRequest struct {
	Command        string          `json:"command"`
	Input          json.RawMessage `json:"input"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	CorrelationID  string          `json:"correlation_id,omitempty"`
	CausationID    string          `json:"causation_id,omitempty"`
}

// CommandResponse is the body of a successful command.
type CommandResponse struct {
	Attempts int          `json:"attempts"`
	Events   []EventIndex `json:"events"`
}

// EventIndex says where a recorded event landed.
type EventIndex struct {
	Stream   string            `json:"stream"`
	Version  eventlog.Version  `json:"version"`
	Position eventlog.Position `json:"position"`
	Type     string            `json:"type"`
}

// Invoke is the Lambda entry point: an HTTP API request, which ServeHTTP
// answers through the apigw adapter, or a direct invocation, told apart by
// shape. Both answer exactly the same JSON body; an HTTP request gets it
// inside an HTTP API response.
func (x *Execute) Invoke(ctx context.Context, payload json.RawMessage) (any, error) {
	ev, err := apigw.Decode(payload)
	switch {
	case errors.Is(err, apigw.ErrMalformed):
		return eventError(InvalidRequest("malformed HTTP API event")), nil
	case err == nil:
		return x.HandleHTTP(ctx, ev), nil
	}
	var req CommandRequest
	if err := DecodeStrict(payload, &req); err != nil {
		return json.RawMessage(errorJSON(asError(err))), nil
	}
	_, body, _ := x.HandleDirect(ctx, req)
	return json.RawMessage(body), nil
}

// HandleDirect runs a direct invocation and returns the status the HTTP
// route would answer and the body.
func (x *Execute) HandleDirect(ctx context.Context, req CommandRequest) (int, []byte, string) {
	if len(req.Input) > MaxBodyBytes {
		e := tooLarge()
		return e.Status, errorJSON(e), ""
	}
	status, body, correlation, _ := x.run(ctx, req.Command, req.Input, req.IdempotencyKey, req.CorrelationID, req.CausationID)
	return status, body, correlation
}

// HandleHTTP answers one HTTP API event with ServeHTTP.
func (x *Execute) HandleHTTP(ctx context.Context, ev events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	return serveEvent(ctx, x, ev)
}

// ServeHTTP answers POST /commands/{name}. Checks run in this order: body
// size (413 too_large), route (404 not_found, 405 method_not_allowed with
// Allow), command name (404 unknown_command), body encoding (a body that
// cannot be read: 400 invalid_request), then the command's own checks. It
// reads at most MaxBodyBytes+1 bytes of the body.
func (x *Execute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > MaxBodyBytes {
		writeError(w, tooLarge())
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	switch {
	case errors.Is(err, apigw.ErrInvalidBase64):
		// Answered after the route and command name checks.
	case err != nil:
		writeError(w, InvalidRequest("the body could not be read"))
		return
	case len(body) > MaxBodyBytes:
		writeError(w, tooLarge())
		return
	}
	read := new(http.Request)
	*read = *r
	read.Body = &readBody{body: body, err: err}
	x.router.ServeHTTP(w, read)
}

// readBody is a body ServeHTTP has read: its bytes, or the error that
// reading it met.
type readBody struct {
	body []byte
	err  error
}

func (b *readBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(b.body) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.body)
	b.body = b.body[n:]
	return n, nil
}

func (b *readBody) Close() error { return nil }

// serveCommand is the route POST /commands/{name}.
func (x *Execute) serveCommand(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rb, _ := r.Body.(*readBody)
	if rb == nil {
		writeError(w, internalError())
		return
	}
	if _, known := x.reg.commands[name]; known && rb.err != nil {
		writeError(w, InvalidRequest("body is not valid base64"))
		return
	}
	status, out, correlation, e := x.run(r.Context(), name, rb.body,
		headerValue(r, "Idempotency-Key"), headerValue(r, "X-Correlation-Id"), headerValue(r, "X-Causation-Id"))
	setRetryAfter(w, e)
	if correlation != "" {
		w.Header().Set("X-Correlation-Id", correlation)
	}
	writeBody(w, status, out)
}

// headerValue is a request header, its values joined with commas when it
// is given more than once.
func headerValue(r *http.Request, name string) string {
	v := r.Header.Values(name)
	if len(v) == 1 {
		return v[0]
	}
	return strings.Join(v, ",")
}

// serveEvent answers an HTTP API event with h; an event whose path does
// not decode answers 404 not_found, as a path no route has.
func serveEvent(ctx context.Context, h http.Handler, ev events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	resp, err := apigw.Serve(ctx, h, ev)
	if err != nil {
		path := ev.RawPath
		if path == "" {
			path = ev.RequestContext.HTTP.Path
		}
		return eventError(Errorf(http.StatusNotFound, "not_found", "no route for %s", path))
	}
	return resp
}

// eventError is the HTTP API response of an error.
func eventError(e *Error) events.APIGatewayV2HTTPResponse {
	w := apigw.NewResponseWriter()
	writeError(w, e)
	return w.Response()
}

// run executes one command and returns the status, body and correlation
// id, and the error answered, if any.
func (x *Execute) run(ctx context.Context, name string, body []byte, key, correlation, causation string) (int, []byte, string, *Error) {
	fail := func(e *Error) (int, []byte, string, *Error) {
		if !validHeader(correlation) {
			return e.Status, errorJSON(e), "", e // never echo a header that was refused
		}
		return e.Status, errorJSON(e), correlation, e
	}
	runner, ok := x.reg.commands[name]
	if !ok {
		return fail(Errorf(http.StatusNotFound, "unknown_command", "no command %q", name))
	}
	if !utf8.Valid(body) {
		return fail(InvalidRequest("body is not valid UTF-8"))
	}
	if err := validateKey(key); err != nil {
		return fail(err)
	}
	for _, h := range []struct{ name, value string }{{"X-Correlation-Id", correlation}, {"X-Causation-Id", causation}} {
		if !validHeader(h.value) {
			return fail(InvalidRequest("%s must be at most 256 printable ASCII characters", h.name))
		}
	}
	if correlation == "" {
		correlation = uuid.Must(uuid.NewV7()).String()
	}
	opts := x.options
	opts.CommandID = key
	opts.Metadata = eventlog.Metadata{Command: name, CorrelationID: correlation, CausationID: causation}
	start := time.Now()
	res, err := runner(ctx, x.store, body, opts)
	if err != nil {
		e := x.classify(ctx, name, err)
		if e.Status == http.StatusUnprocessableEntity && x.durable != nil {
			// A refusal rests on the state read, which may include events
			// that are not durable yet: it is answered once they are.
			if derr := x.durable(ctx); derr != nil {
				x.log.WarnContext(ctx, "refusal not answered", "command", name, "request_id", requestID(ctx), "error", derr.Error())
				e = unknownOutcome()
			}
		}
		x.observe(name, outcomeOf(e.Status), start, res)
		return fail(e)
	}
	if x.durable != nil {
		// Also when the command recorded nothing now: its answer may rest
		// on events that are not durable yet.
		if err := x.durable(ctx); err != nil {
			x.log.WarnContext(ctx, "command not acknowledged", "command", name, "request_id", requestID(ctx), "error", err.Error())
			e := unknownOutcome()
			x.observe(name, outcomeOf(e.Status), start, res)
			return fail(e)
		}
	}
	x.observe(name, OutcomeOK, start, res)
	resp := CommandResponse{Attempts: res.Attempts, Events: make([]EventIndex, len(res.Events))}
	for i, r := range res.Events {
		resp.Events[i] = EventIndex{Stream: r.Stream.String(), Version: r.Version, Position: r.Position, Type: r.Type}
	}
	if n := len(res.Events); n > 0 && x.AfterCommand != nil {
		x.AfterCommand(res.Events[n-1].Position)
	}
	out, _ := json.Marshal(resp)
	return http.StatusOK, out, correlation, nil
}

func (x *Execute) observe(name, outcome string, start time.Time, res executor.Result) {
	if x.observer != nil {
		x.observer.ObserveCommand(name, outcome, time.Since(start), res.Attempts, len(res.Events))
	}
}

func outcomeOf(status int) string {
	switch {
	case status == http.StatusConflict:
		return OutcomeConflict
	case status >= 500:
		return OutcomeError
	}
	return OutcomeRejected
}

// unknownOutcome answers a command that may have been recorded but could
// not be made durable.
func unknownOutcome() *Error {
	return Errorf(http.StatusServiceUnavailable, "replica_unavailable",
		"the command's events could not be made durable in the replica, so its outcome is unknown; retry it with the same Idempotency-Key")
}

// Retry-After of the storage errors: a full disk is not freed at once; a
// reopen after an I/O error takes milliseconds.
const (
	StorageFullRetryAfter        = 10 * time.Second
	StorageUnavailableRetryAfter = time.Second
)

// storageFull answers a command refused because the event log's disk is
// full: nothing was recorded.
func storageFull() *Error {
	e := Errorf(http.StatusInsufficientStorage, "storage_full",
		"the event log's storage is full; nothing was recorded; retry later")
	e.RetryAfter = StorageFullRetryAfter
	return e
}

// storageUnavailable answers a command whose commit met an I/O error, or
// that arrived while the store reopened its database after one: its
// outcome is unknown.
func storageUnavailable() *Error {
	e := Errorf(http.StatusServiceUnavailable, "storage_unavailable",
		"the event log's storage failed and is being reopened, so the command's outcome is unknown; retry it with the same Idempotency-Key")
	e.RetryAfter = StorageUnavailableRetryAfter
	return e
}

func tooLarge() *Error {
	return Errorf(http.StatusRequestEntityTooLarge, "too_large", "body is over %d bytes", MaxBodyBytes)
}

// validHeader reports whether a correlation or causation id is acceptable.
func validHeader(v string) bool { return len(v) <= 256 && printableASCII(v) }

func validateKey(key string) *Error {
	if len(key) > MaxIdempotencyKeyLength || !printableASCII(key) {
		return InvalidRequest("Idempotency-Key must be 1 to %d printable ASCII characters", MaxIdempotencyKeyLength)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// classify maps a command's error to its answer; a 500 is logged with the
// request id and answered without internals.
func (x *Execute) classify(ctx context.Context, name string, err error) *Error {
	var he *Error
	var invalid invalidInput
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &invalid):
		return InvalidRequest("%v", invalid.err)
	case errors.Is(err, executor.ErrConcurrency):
		return Errorf(http.StatusConflict, "concurrency", "the command kept conflicting with concurrent commands; retry it")
	case errors.Is(err, eventlog.ErrUnavailable):
		x.log.WarnContext(ctx, "command not acknowledged", "command", name, "request_id", requestID(ctx), "error", err.Error())
		return unknownOutcome()
	case errors.Is(err, eventlog.ErrStorageFull):
		// The store logs the episode once; every refusal is counted.
		return storageFull()
	case errors.Is(err, eventlog.ErrStorageUnavailable):
		return storageUnavailable()
	case errors.Is(err, eventlog.ErrNotWriter):
		x.log.WarnContext(ctx, "command refused: not the writer", "command", name, "request_id", requestID(ctx), "error", err.Error())
		return Errorf(http.StatusServiceUnavailable, "writer_unavailable",
			"this instance does not hold the event log's writer lease; nothing was recorded; retry shortly")
	}
	if x.reg.errorMapper != nil {
		if e := x.reg.errorMapper(err); e != nil {
			return e
		}
	}
	x.log.ErrorContext(ctx, "command failed", "command", name, "request_id", requestID(ctx), "error", err.Error())
	return internalError()
}

func asError(err error) *Error {
	var he *Error
	if errors.As(err, &he) {
		return he
	}
	return InvalidRequest("%v", err)
}

// requestID is the Lambda request id, when there is one.
func requestID(ctx context.Context) string {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		return lc.AwsRequestID
	}
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return id
	}
	if rc, ok := apigw.RequestContext(ctx); ok {
		return rc.RequestID
	}
	return ""
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying a request id for logs, for callers
// outside Lambda (the local runner).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}
