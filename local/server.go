package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/handler"
)

// requestTimeout bounds each request as API Gateway's integration timeout
// and the functions' timeouts do on AWS: a read waiting for ?min_position
// answers 503 projection_behind instead of waiting forever.
var requestTimeout = 30 * time.Second

// server turns HTTP requests into HTTP API events for the handlers.
type server struct {
	app     *app.App
	wake    chan struct{}
	metrics http.Handler
}

func newServer(a *app.App) *server {
	s := &server{
		app: a, wake: make(chan struct{}, 1),
		metrics: promhttp.HandlerFor(a.Metrics.Gatherer(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
	}
	a.Execute.AfterCommand = func(eventlog.Position) {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return s
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
		return
	case "/metrics":
		s.metrics.ServeHTTP(w, r)
		return
	}
	ev, err := toEvent(r)
	if err != nil {
		// Errors are JSON like every answer of the handlers.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"code":"invalid_request","message":"the body could not be read"}}`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	ctx = handler.WithRequestID(ctx, ev.RequestContext.RequestID)
	resp := events.APIGatewayV2HTTPResponse{ // when the runner is shutting down
		StatusCode: http.StatusServiceUnavailable,
		Headers:    map[string]string{"Content-Type": "application/json"},
		Body:       `{"error":{"code":"unavailable","message":"the runner is shutting down"}}`,
	}
	_ = s.app.Do(ctx, app.Request, func(ctx context.Context) error {
		if strings.HasPrefix(r.URL.Path, "/commands/") {
			resp = s.app.Execute.HandleHTTP(ctx, ev)
		} else {
			resp = s.app.Project.HandleHTTP(ctx, ev)
		}
		return nil
	})
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.WriteString(w, resp.Body)
}

// toEvent builds the HTTP API (payload 2.0) event API Gateway would send.
// It reads at most one byte more than the handlers accept, so that an
// oversized body is still answered 413 by the handler.
func toEvent(r *http.Request) (events.APIGatewayV2HTTPRequest, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, handler.MaxBodyBytes+1))
	if err != nil {
		return events.APIGatewayV2HTTPRequest{}, err
	}
	headers := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	now := time.Now()
	return events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       "$default",
		RawPath:        r.URL.EscapedPath(),
		RawQueryString: r.URL.RawQuery,
		Headers:        headers,
		Body:           string(body),
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:  "$default",
			Stage:     "$default",
			RequestID: uuid.NewString(),
			Time:      now.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch: now.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: r.Method, Path: r.URL.Path, Protocol: r.Proto, SourceIP: r.RemoteAddr, UserAgent: r.UserAgent(),
			},
		},
	}, nil
}

// projectLoop runs a Scheduled unit of work (the projections caught up,
// then the replicas' maintenance when due) after commands, without
// holding up their answers, and on a timer, until ctx ends. Like every
// unit, it first renews the writer leases when due and reloads a replica
// that another writer moved, so that an idle runner notices too.
func (s *server) projectLoop(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-ticker.C:
		}
		run, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.app.Do(run, app.Scheduled, func(ctx context.Context) error {
			_, err := s.app.Project.CatchUp(ctx)
			return err
		})
		if err != nil && ctx.Err() == nil {
			s.app.Logger.Error("projection catch-up failed", "error", err.Error())
		}
		cancel()
	}
}
