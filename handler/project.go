package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/eventcore-go/eventcore/eventlog"
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
// projection, and the read side of the API. It is safe for concurrent use.
type Project struct {
	reg    *Registry
	store  eventlog.Store
	runner *projection.Runner
	log    *slog.Logger
	routes []queryRoute
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
	p := &Project{reg: reg, store: store, runner: runner, log: logger}
	p.routes = append(p.routes,
		queryRoute{route: mustRoute(http.MethodGet, ProjectionsRoute), fn: p.projections},
		queryRoute{route: mustRoute(http.MethodGet, DeadLettersRoute), fn: p.deadLetters},
		queryRoute{route: mustRoute(http.MethodGet, StreamRoute), fn: p.stream},
		queryRoute{route: mustRoute(http.MethodGet, EventsRoute), fn: p.feed},
	)
	p.routes = append(p.routes, reg.queries...)
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

// Invoke is the Lambda entry point: an HTTP API request; an operator's
// direct invocation {"rebuild":"<projection>"}, which resets that
// projection and replays it from position 0 (then catches everything up);
// or anything else, such as an EventBridge scheduled event, which catches
// every projection up.
func (p *Project) Invoke(ctx context.Context, payload json.RawMessage) (any, error) {
	if req, ok, bad := httpEvent(payload); ok {
		if bad != nil {
			return *bad, nil
		}
		return p.HandleHTTP(ctx, req), nil
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
		p.log.ErrorContext(ctx, "projection catch-up failed", "request_id", requestID(ctx), "error", err.Error())
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

// HandleHTTP answers one read request.
func (p *Project) HandleHTTP(ctx context.Context, req events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	path := requestPath(req)
	segs, err := splitPath(path)
	if err != nil {
		return routeError(path, nil)
	}
	var allowed []string
	for _, r := range p.routes {
		vars, ok := r.match(segs)
		if !ok {
			continue
		}
		if requestMethod(req) != r.method {
			allowed = append(allowed, r.method)
			continue
		}
		query, bad := queryValues(req)
		if bad != nil {
			return errorResponse(bad, nil)
		}
		if r.projection != "" {
			if e := p.readYourWrites(ctx, r.projection, query); e != nil {
				return errorResponse(e, nil)
			}
		}
		out, err := r.fn(ctx, QueryEnv{Store: p.store, Projections: p.runner}, vars, query)
		if err != nil {
			return errorResponse(p.queryError(ctx, r.pattern, err), nil)
		}
		return jsonResponse(http.StatusOK, out, nil)
	}
	return routeError(path, allowed)
}

func queryValues(req events.APIGatewayV2HTTPRequest) (map[string][]string, *Error) {
	q := map[string][]string{}
	if req.RawQueryString != "" {
		parsed, err := parseQuery(req.RawQueryString)
		if err != nil {
			return nil, InvalidRequest("malformed query string: %v", err)
		}
		return parsed, nil
	}
	for k, v := range req.QueryStringParameters {
		// HTTP API joins repeated parameters with commas.
		q[k] = splitComma(v)
	}
	return q, nil
}

// readYourWrites catches the projection up to ?min_position within the
// request's deadline; 503 projection_behind when it cannot.
func (p *Project) readYourWrites(ctx context.Context, name string, query map[string][]string) *Error {
	raw, ok := query["min_position"]
	if !ok {
		return nil
	}
	min, err := strconv.ParseUint(first(raw), 10, 64)
	if err != nil {
		return InvalidRequest("min_position must be a non-negative integer")
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
	behind := func() *Error {
		return Errorf(http.StatusServiceUnavailable, "projection_behind", "projection %q has not reached position %d", name, want)
	}
	for {
		at, err := p.runner.Checkpoint(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return behind()
			}
			return p.queryError(ctx, name, err)
		}
		if at >= want {
			return nil
		}
		// Catch up only when the log holds events the projection has not
		// seen: a catch-up at the head still writes (it takes and gives
		// back the lease), every 20 ms while waiting.
		head, err := p.store.Head(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return behind()
			}
			return p.queryError(ctx, name, err)
		}
		if at < head {
			report, err := p.runner.CatchUp(ctx, name, want)
			p.observeApplied(report)
			if err != nil && !errors.Is(err, projection.ErrLocked) && ctx.Err() == nil {
				return p.queryError(ctx, name, err)
			}
		}
		if at, err := p.runner.Checkpoint(ctx, name); err == nil && at >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return behind()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
