package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/handler/apigw"
	"github.com/eventcore-go/eventcore/projection"
)

// Read routes the project function always serves.
const (
	ProjectionsRoute = "/projections"
	DeadLettersRoute = "/projections/{name}/dead-letters"
	StreamRoute      = "/streams/{stream}"
	EventsRoute      = "/events"
)

// Feed limits of /events and /streams/{stream}.
const (
	DefaultReadLimit = 100
	MaxReadLimit     = 1000
)

// scheduleMargin is kept free of work before the Lambda deadline.
const scheduleMargin = 500 * time.Millisecond

// Project is the project function's handler: scheduled catch-up of every
// projection, and the read side of the API, an http.Handler of GET routes
// that also answers API Gateway HTTP API events (Invoke). It is safe for
// concurrent use.
type Project struct {
	reg    *Registry
	store  eventlog.Store
	runner *projection.Runner
	log    *slog.Logger
	router *router
	// Observer, when set, is told how many events each catch-up applied.
	Observer ProjectionObserver
}

// ProjectionObserver is told after each catch-up how many events it applied
// (possibly 0). It must be safe for concurrent use and must not block.
type ProjectionObserver interface {
	ObserveApplied(projection string, events int)
}

// NewProject returns the project handler over the event log store and the
// projection runner (built from reg.Projectors()).
func NewProject(reg *Registry, store eventlog.Store, runner *projection.Runner, logger *slog.Logger) *Project {
	if logger == nil {
		logger = slog.Default()
	}
	p := &Project{reg: reg, store: store, runner: runner, log: logger, router: newRouter()}
	for _, q := range []queryRoute{
		{pattern: ProjectionsRoute, fn: p.projections},
		{pattern: DeadLettersRoute, fn: p.deadLetters},
		{pattern: StreamRoute, fn: p.stream},
		{pattern: EventsRoute, fn: p.feed},
	} {
		p.router.handle(http.MethodGet, q.pattern, p.serveQuery(q))
	}
	for _, q := range reg.queries {
		p.router.handle(http.MethodGet, q.pattern, p.serveQuery(q))
	}
	return p
}

// ReadRoutes returns every GET pattern the project handler serves for reg:
// the event log and projection routes, then the domain's queries.
func ReadRoutes(reg *Registry) []string {
	return append([]string{ProjectionsRoute, DeadLettersRoute, StreamRoute, EventsRoute}, reg.QueryPatterns()...)
}

// ScheduleReport is the answer to a scheduled run.
type ScheduleReport struct {
	Projections []projection.Report `json:"projections"`
}

// Invoke is the Lambda entry point: an HTTP API request, which ServeHTTP
// answers through the apigw adapter; an operator's direct invocation
// {"rebuild":"<projection>"}, which resets that projection and replays it
// from position 0 (then catches everything up); or anything else, such as
// an EventBridge scheduled event, which catches every projection up.
func (p *Project) Invoke(ctx context.Context, payload json.RawMessage) (any, error) {
	ev, err := apigw.Decode(payload)
	switch {
	case errors.Is(err, apigw.ErrMalformed):
		return eventError(InvalidRequest("malformed HTTP API event")), nil
	case err == nil:
		return p.HandleHTTP(ctx, ev), nil
	}
	var op struct {
		Rebuild *string `json:"rebuild"`
	}
	if json.Unmarshal(payload, &op) == nil && op.Rebuild != nil {
		if err := p.runner.Rebuild(ctx, *op.Rebuild); err != nil {
			return nil, fmt.Errorf("rebuild %q: %w", *op.Rebuild, err)
		}
	}
	return p.CatchUp(ctx)
}

// CatchUp brings every projection up to the head, within ctx's deadline
// less a margin. A projection locked by another runner is reported as it
// is, not as an error.
func (p *Project) CatchUp(ctx context.Context) (ScheduleReport, error) {
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-scheduleMargin))
		defer cancel()
	}
	reports, err := p.runner.CatchUpAll(ctx)
	for _, r := range reports {
		p.observeApplied(r)
	}
	if err != nil && !onlyLocked(err) {
		if ctx.Err() == nil { // a caller that gave up, or a shutdown, is not a failure to report
			p.log.ErrorContext(ctx, "projection catch-up failed", "request_id", requestID(ctx), "error", err.Error())
		}
		return ScheduleReport{Projections: reports}, err
	}
	return ScheduleReport{Projections: reports}, nil
}

func (p *Project) observeApplied(r projection.Report) {
	if p.Observer != nil && r.Name != "" {
		p.Observer.ObserveApplied(r.Name, r.Applied)
	}
}

// onlyLocked reports whether err (possibly several joined) says nothing but
// that projections were locked by another runner.
func onlyLocked(err error) bool {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if !onlyLocked(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, projection.ErrLocked)
}

// HandleHTTP answers one HTTP API event with ServeHTTP.
func (p *Project) HandleHTTP(ctx context.Context, ev events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	return serveEvent(ctx, p, ev)
}

// ServeHTTP answers the read routes (GET only): 404 not_found for a path
// no route has, 405 method_not_allowed (with Allow) for another method, 400
// invalid_request for a malformed query string, then what the route
// answers. A route that reads a projection first waits for ?min_position
// (see Runner.WaitFor) within the request's deadline, or answers 503
// projection_behind, and adds "as_of" to its JSON object: the projection's
// checkpoint when the read began (the answer reflects every event up to it,
// maybe more).
func (p *Project) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.router.ServeHTTP(w, r) }

// serveQuery is the handler of one read route.
func (p *Project) serveQuery(q queryRoute) http.HandlerFunc {
	names := patternNames(q.pattern)
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		vars := make(map[string]string, len(names))
		for _, n := range names {
			vars[n] = r.PathValue(n)
		}
		query, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			writeError(w, InvalidRequest("malformed query string: %v", err))
			return
		}
		var asOf eventlog.Position
		if q.projection != "" {
			var e *Error
			if asOf, e = p.readYourWrites(ctx, q.projection, query); e != nil {
				writeError(w, e)
				return
			}
		}
		out, err := q.fn(ctx, QueryEnv{Store: p.store, Projections: p.runner}, vars, query)
		if err != nil {
			writeError(w, p.queryError(ctx, q.pattern, err))
			return
		}
		body, err := json.Marshal(out)
		if err != nil {
			writeError(w, internalError())
			return
		}
		if q.projection != "" {
			body = appendField(body, "as_of", uint64(asOf))
		}
		writeBody(w, http.StatusOK, body)
	}
}

// readYourWrites waits until the projection reaches ?min_position, within
// the request's deadline less a margin (503 projection_behind when it does
// not, or when catching it up fails), and returns its checkpoint.
func (p *Project) readYourWrites(ctx context.Context, name string, query map[string][]string) (eventlog.Position, *Error) {
	raw, ok := query["min_position"]
	if !ok {
		at, err := p.runner.Checkpoint(ctx, name)
		if err != nil {
			return 0, p.queryError(ctx, name, err)
		}
		return at, nil
	}
	min, err := strconv.ParseUint(first(raw), 10, 64)
	if err != nil {
		return 0, InvalidRequest("min_position must be a non-negative integer")
	}
	want := eventlog.Position(min)
	// Give up before the deadline: waiting until the deadline itself gets
	// the function killed (a timeout) instead of answering 503.
	if deadline, ok := ctx.Deadline(); ok {
		margin := scheduleMargin
		if half := time.Until(deadline) / 2; half < margin {
			margin = half
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
		defer cancel()
	}
	rep, err := p.runner.WaitFor(ctx, name, want)
	p.observeApplied(rep)
	if err != nil {
		behind := Errorf(http.StatusServiceUnavailable, "projection_behind", "projection %q has not reached position %d", name, want)
		if ctx.Err() != nil {
			return 0, behind
		}
		if errors.Is(err, projection.ErrUnknownProjection) || errors.Is(err, eventlog.ErrInvalid) {
			return 0, p.queryError(ctx, name, err)
		}
		// The catch-up failed (its database is full, say): the projection
		// stays behind, and reads without min_position go on answering.
		p.log.WarnContext(ctx, "read not answered: the projection could not catch up", "projection", name, "request_id", requestID(ctx), "error", err.Error())
		behind.RetryAfter = time.Second
		return 0, behind
	}
	return rep.Checkpoint, nil
}

func (p *Project) queryError(ctx context.Context, what string, err error) *Error {
	var he *Error
	if errors.As(err, &he) {
		return he
	}
	if errors.Is(err, eventlog.ErrInvalid) {
		return InvalidRequest("%v", err)
	}
	if errors.Is(err, eventlog.ErrUnavailable) {
		p.log.WarnContext(ctx, "query failed: the log is unavailable", "route", what, "request_id", requestID(ctx), "error", err.Error())
		return Errorf(http.StatusServiceUnavailable, "replica_unavailable", "the event log's copy could not be brought up to date from the replica; retry shortly")
	}
	if ctx.Err() != nil {
		return Errorf(http.StatusServiceUnavailable, "timeout", "the request ran out of time")
	}
	p.log.ErrorContext(ctx, "query failed", "route", what, "request_id", requestID(ctx), "error", err.Error())
	return internalError()
}

// EventJSON is an event as the read API shows it.
type EventJSON struct {
	Position   eventlog.Position `json:"position"`
	Stream     string            `json:"stream"`
	Version    eventlog.Version  `json:"version"`
	Type       string            `json:"type"`
	Data       json.RawMessage   `json:"data"`
	Metadata   eventlog.Metadata `json:"metadata"`
	RecordedAt string            `json:"recorded_at"`
}

// NewEventJSON converts a record.
func NewEventJSON(r eventlog.Record) EventJSON {
	return EventJSON{
		Position: r.Position, Stream: r.Stream.String(), Version: r.Version, Type: r.Type,
		Data: r.Data, Metadata: r.Metadata, RecordedAt: r.RecordedAt.UTC().Format(time.RFC3339Nano),
	}
}

func (p *Project) projections(ctx context.Context, env QueryEnv, _ map[string]string, _ map[string][]string) (any, error) {
	status, err := env.Projections.Status(ctx)
	if err != nil {
		return nil, err
	}
	if status == nil {
		status = []projection.Status{}
	}
	return map[string]any{"projections": status}, nil
}

// deadLetters lists the events a projection skipped, with their errors.
func (p *Project) deadLetters(ctx context.Context, env QueryEnv, vars map[string]string, query map[string][]string) (any, error) {
	limit, err := limitParam(query)
	if err != nil {
		return nil, err
	}
	letters, err := env.Projections.DeadLetters(ctx, vars["name"], limit)
	if errors.Is(err, projection.ErrUnknownProjection) {
		return nil, Errorf(http.StatusNotFound, "unknown_projection", "no projection %q", vars["name"])
	}
	if err != nil {
		return nil, err
	}
	if letters == nil {
		letters = []projection.DeadLetter{}
	}
	return map[string]any{"projection": vars["name"], "dead_letters": letters}, nil
}

func (p *Project) stream(ctx context.Context, env QueryEnv, vars map[string]string, query map[string][]string) (any, error) {
	stream, err := eventlog.NewStreamID(vars["stream"])
	if err != nil {
		return nil, InvalidRequest("%v", err)
	}
	after, err := uintParam(query, "after", 0)
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(query)
	if err != nil {
		return nil, err
	}
	versions, err := env.Store.StreamVersions(ctx, []eventlog.StreamID{stream})
	if err != nil {
		return nil, err
	}
	out := struct {
		Stream  string           `json:"stream"`
		Version eventlog.Version `json:"version"`
		Events  []EventJSON      `json:"events"`
	}{Stream: stream.String(), Version: versions[0], Events: []EventJSON{}}
	for r, err := range env.Store.ReadStream(ctx, stream, eventlog.Version(after)) {
		if err != nil {
			return nil, err
		}
		out.Events = append(out.Events, NewEventJSON(r))
		if len(out.Events) == limit {
			break
		}
	}
	return out, nil
}

func (p *Project) feed(ctx context.Context, env QueryEnv, _ map[string]string, query map[string][]string) (any, error) {
	after, err := uintParam(query, "after", 0)
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(query)
	if err != nil {
		return nil, err
	}
	q := eventlog.FeedQuery{After: eventlog.Position(after), Limit: limit, Types: query["type"]}
	if prefix, ok := query["prefix"]; ok {
		q.StreamPrefix = first(prefix)
	}
	records, err := env.Store.ReadFeed(ctx, q)
	if err != nil {
		return nil, err
	}
	out := struct {
		Events []EventJSON       `json:"events"`
		Next   eventlog.Position `json:"next"`
	}{Events: make([]EventJSON, len(records)), Next: q.After}
	for i, r := range records {
		out.Events[i] = NewEventJSON(r)
		out.Next = r.Position
	}
	return out, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func uintParam(query map[string][]string, name string, def uint64) (uint64, error) {
	raw, ok := query[name]
	if !ok {
		return def, nil
	}
	if len(raw) != 1 {
		return 0, InvalidRequest("%s must be given once", name)
	}
	v, err := strconv.ParseUint(raw[0], 10, 63)
	if err != nil {
		return 0, InvalidRequest("%s must be a non-negative integer", name)
	}
	return v, nil
}

func limitParam(query map[string][]string) (int, error) {
	v, err := uintParam(query, "limit", DefaultReadLimit)
	if err != nil {
		return 0, err
	}
	if v < 1 || v > MaxReadLimit {
		return 0, InvalidRequest("limit must be from 1 to %d", MaxReadLimit)
	}
	return int(v), nil
}
