package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

// options are the parsed flags.
type options struct {
	load.Config
	// JSON prints the summary as JSON instead of text.
	JSON bool
	// SigV4 signs every request for Service in Region (empty: the
	// configured region) with the default AWS credentials.
	SigV4           bool
	Region, Service string
	// Histogram is a .png file to write the latency histogram to.
	Histogram string
	// progress, when set, shows a progress bar there (main sets it to
	// stderr when stderr is a terminal).
	progress io.Writer
}

// parseFlags reads args. Errors are one line naming the flag; -h writes
// the usage to usage and returns flag.ErrHelp.
func parseFlags(args []string, usage io.Writer) (options, error) {
	o := options{Config: load.Default()}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, one line each
	fs.StringVar(&o.URL, "url", o.URL, "base URL of the API: commands go to URL/commands/{name}")
	fs.IntVar(&o.Clients, "clients", o.Clients, "concurrent clients, one request in flight each")
	fs.DurationVar(&o.Duration, "duration", 0, "start commands for this long (give -duration or -n)")
	fs.IntVar(&o.Count, "n", 0, "send this many commands (give -n or -duration)")
	fs.IntVar(&o.Accounts, "accounts", o.Accounts, "accounts opened and funded before the load")
	fs.StringVar(&o.Prefix, "prefix", "", "account id prefix, so that runs on one server do not collide (ids are PREFIX-0, PREFIX-1...; default: random)")
	mix := fs.String("mix", load.DefaultMix, "shares of the commands: open-account, deposit, withdraw, transfer")
	fs.Int64Var(&o.Fund, "fund", o.Fund, "amount deposited into each account before the load")
	fs.Int64Var(&o.Amount, "amount", o.Amount, "largest amount of one deposit, withdrawal or transfer (drawn from 1 to it)")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "deadline of each request")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the random choices")
	fs.BoolVar(&o.IdempotencyKeys, "idempotency-keys", false, "send a unique Idempotency-Key with every command")
	fs.BoolVar(&o.Verify, "verify", false, "after the load, read the accounts back and check that the balances add up")
	fs.BoolVar(&o.JSON, "json", false, "print the summary as JSON")
	fs.BoolVar(&o.SigV4, "sigv4", false, "sign requests with AWS Signature Version 4 (an HTTP API with IAM authorization), with the default AWS credentials")
	fs.StringVar(&o.Region, "region", "", "AWS region of the API, for -sigv4 (default: AWS_REGION or the profile's)")
	fs.StringVar(&o.Service, "service", DefaultSigningService, "service name signed for, with -sigv4")
	fs.StringVar(&o.Histogram, "histogram", "", "write the latency histogram to this .png file")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp { //nolint:errorlint // flag returns it as is
			fs.SetOutput(usage)
			_, _ = fmt.Fprintln(usage, "usage: loadtest (-n COUNT | -duration D) [flags]")
			fs.PrintDefaults()
		}
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	m, err := load.ParseMix(*mix)
	if err != nil {
		return options{}, err
	}
	o.Mix = m
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	switch {
	case given["n"] && given["duration"]:
		return options{}, fmt.Errorf("-n and -duration: give only one of them")
	case given["n"] && o.Count < 1:
		return options{}, fmt.Errorf("-n: %d: want at least 1", o.Count)
	case given["duration"] && o.Duration <= 0:
		return options{}, fmt.Errorf("-duration: %v: want a positive duration", o.Duration)
	}
	switch {
	case given["region"] && !o.SigV4:
		return options{}, fmt.Errorf("-region: only with -sigv4")
	case given["service"] && !o.SigV4:
		return options{}, fmt.Errorf("-service: only with -sigv4")
	case o.SigV4 && o.Service == "":
		return options{}, fmt.Errorf("-service: empty")
	}
	if given["histogram"] {
		if err := checkHistogramPath(o.Histogram); err != nil {
			return options{}, err
		}
	}
	if err := o.Validate(); err != nil {
		return options{}, err
	}
	return o, nil
}
