// Command loadtest drives the bank example's HTTP API (the local runner or
// a deployed execute function) with concurrent clients. Before the load it
// opens and funds its accounts; afterwards it prints a summary: commands/s,
// p50/p95/p99 latency, and the count of each status, error code and
// transport error (-json: the same as JSON). It stops on SIGINT and prints
// the summary of what ran.
//
//	go run ./cmd/loadtest -url http://127.0.0.1:8080 -clients 32 -n 2000 -accounts 10 -mix transfer=1
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opts, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest: "+err.Error())
		os.Exit(1)
	}
}
