// Command loadtest drives the bank example's HTTP API (the local runner or
// a deployed execute function) with concurrent clients. Before the load it
// opens and funds its accounts; afterwards it prints a summary: commands/s,
// p50/p95/p99 latency, and the count of each status, error code and
// transport error, throttled answers (429) apart (-json: the same as
// JSON). It stops on SIGINT and prints the summary of what ran. While it
// runs, a progress bar is drawn on stderr when stderr is a terminal.
//
//	go run ./cmd/loadtest -url http://127.0.0.1:8080 -clients 32 -n 2000 -accounts 10 -mix transfer=1
//	go run ./cmd/loadtest -url https://ID.execute-api.eu-west-1.amazonaws.com -sigv4 -region eu-west-1 -duration 1m -histogram latency.png
//
// -sigv4 signs every request with AWS Signature Version 4 for the service
// execute-api (an HTTP API with IAM authorization), with the credentials
// of the default chain; -histogram writes the latency histogram as a PNG.
//
// The engine is package load, for Go tests and benchmarks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest: "+err.Error())
		os.Exit(2)
	}
	if term.IsTerminal(int(os.Stderr.Fd())) { //nolint:gosec // a file descriptor fits an int
		opts.progress = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opts, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest: "+err.Error())
		os.Exit(1)
	}
}
