package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/handler"
)

// InvokeFunc is a Lambda handler over raw events.
type InvokeFunc func(ctx context.Context, payload json.RawMessage) (any, error)

// maxSchedulePayload bounds the payloads inspected for maintenanceRequest.
const maxSchedulePayload = 4 << 10

// ShutdownBudget is how long the instance takes to shut down after the
// runtime's SIGTERM: Lambda sends SIGKILL about 500 ms after it.
const ShutdownBudget = 450 * time.Millisecond

// maintenanceRequest is the scheduled direct invocation that runs
// Litestream's periodic work on the execute function.
type maintenanceRequest struct {
	Maintenance bool   `json:"maintenance"`
	Source      string `json:"source"` // "aws.events" for an EventBridge schedule
}

// RunLambda is the whole of a function's main: it loads the
// configuration, registers the domain, opens the App for role and serves
// pick(app) to the Lambda runtime, as many invocations at once as the
// runtime asks (AWS_LAMBDA_MAX_CONCURRENCY on Lambda Managed Instances),
// each one a unit of work of App.Do. With a replica, the payload
// {"maintenance":true} runs Maintenance instead of a handler, and a
// scheduled (EventBridge) invocation is a Scheduled unit.
//
// It returns nil after the runtime's SIGTERM, once the instance has shut
// down within ShutdownBudget (the leases released, see App.Shutdown), and
// an error naming the variable at fault when the configuration is bad or
// the instance cannot open. The caller prints it and exits non-zero.
func RunLambda(role Role, register func(*handler.Registry), pick func(*App) InvokeFunc) error {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return err
	}
	reg := handler.NewRegistry()
	register(reg)
	a, err := OpenAs(context.Background(), role, cfg, reg, logger)
	if err != nil {
		return err
	}
	background, stopBackground := context.WithCancel(context.Background())
	go a.Background(background)
	stopped := make(chan struct{})
	go lambda.StartWithOptions(a.lambdaHandler(pick), lambda.WithEnableSIGTERM(func() {
		stopBackground()
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownBudget)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			logger.Warn("shutdown", "error", err.Error())
		}
		close(stopped)
	}))
	<-stopped
	return nil
}

// lambdaHandler runs each invocation as a unit of work.
func (a *App) lambdaHandler(pick func(*App) InvokeFunc) InvokeFunc {
	return func(ctx context.Context, payload json.RawMessage) (any, error) {
		var m maintenanceRequest
		// Schedules send a few hundred bytes; a command's event, which the
		// handler decodes anyway, is not scanned twice.
		if a.Replicated() && len(payload) <= maxSchedulePayload {
			_ = json.Unmarshal(payload, &m)
		}
		if m.Maintenance {
			err := a.Do(ctx, Maintenance, a.Maintain)
			a.holdIfStopping()
			if err != nil {
				return nil, err
			}
			return map[string]bool{"maintained": true}, nil
		}
		kind := Request
		if m.Source == "aws.events" {
			kind = Scheduled
		}
		var out any
		err := a.Do(ctx, kind, func(ctx context.Context) error {
			var err error
			out, err = pick(a)(ctx, payload)
			return err
		})
		a.holdIfStopping()
		return out, err
	}
}

// holdIfStopping never returns once Shutdown has begun. The runtime has
// then given up the invocations in flight (their callers were answered
// that the environment shut down), and answers the post of their
// responses with an error, on which aws-lambda-go ends the process at
// once, cutting the shutdown short before the lease is released. The
// process ends when RunLambda returns. An invocation held here is never
// answered, even one whose command was made durable: its caller sees the
// environment shut down and retries with its Idempotency-Key, which
// answers the first execution's events.
func (a *App) holdIfStopping() {
	if a.life.stopping.Load() {
		select {}
	}
}
