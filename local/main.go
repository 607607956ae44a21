// Command local is the local runner: the execute and project handlers of the
// bank example behind one HTTP server, on SQLite files under ./data/, with
// no cloud. It serves the same http.Handlers the Lambda functions adapt
// API Gateway events to, so routes, statuses and bodies are identical.
//
// Configuration comes from the environment, with the names the functions
// use (EVENTCORE_DB, EVENTCORE_READ_DB, EVENTCORE_SYNC, ...); -addr sets the
// listen address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	rebuild := flag.String("rebuild", "", "comma-separated projections to empty and replay from the log before serving, or all")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	opts := runOptions{addr: *addr, rebuild: splitNames(*rebuild), progress: os.Stderr}
	err := runWith(ctx, opts, os.Getenv, func(url string) {
		fmt.Printf("eventcore local runner on %s\n", url)
		fmt.Printf("dashboard: %s/\n", url)
		fmt.Printf("try:\n  curl -s -X POST %s/commands/open-account -d '{\"account\":\"alice\",\"owner\":\"Alice\"}'\n", url)
	})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "local: "+err.Error())
		os.Exit(1)
	}
}

// run serves on addr until ctx ends, then stops accepting, finishes the
// requests in flight and closes the databases. ready is called with the
// base URL once the server listens.
func run(ctx context.Context, addr string, getenv func(string) string, ready func(url string)) error {
	return runWith(ctx, runOptions{addr: addr, progress: os.Stderr}, getenv, ready)
}

// runOptions are the flags of the runner.
type runOptions struct {
	addr    string
	rebuild []string // projections to rebuild before serving ("all": every one)
	// progress is where long work (a restore, a rebuild) draws its bar
	// when it is a terminal, or always with forceProgress.
	progress      io.Writer
	forceProgress bool
}

// runWith is run with every flag.
func runWith(ctx context.Context, opts runOptions, getenv func(string) string, ready func(url string)) error {
	addr := opts.addr
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	a, err := app.OpenWithProgress(ctx, cfg, reg, logger, newProgress(ctx, opts.progress, opts.forceProgress))
	if err != nil {
		return err
	}
	defer func() { _ = a.Close() }() // after Shutdown below, a no-op
	if err := rebuild(ctx, a, opts.rebuild, opts.progress, opts.forceProgress); err != nil {
		return fmt.Errorf("-rebuild: %w", err)
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	srv := newServer(a)
	httpSrv := &http.Server{Handler: newLimits(srv, cfg.MaxInFlight), ReadHeaderTimeout: headerTimeout, IdleTimeout: idleTimeout}
	projections := make(chan struct{})
	go func() {
		defer close(projections)
		srv.projectLoop(ctx, cfg.ProjectionInterval)
	}()
	go a.Background(ctx)
	go srv.dash.Run(ctx)
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(ln) }()
	ready("http://" + ln.Addr().String())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = httpSrv.Shutdown(shutdown)
	<-projections
	// The metrics group is deleted (a stopped runner's must not linger),
	// the replicas synced a last time and their leases released.
	if err := a.Shutdown(shutdown); err != nil {
		logger.Warn("shutdown", "error", err.Error())
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
