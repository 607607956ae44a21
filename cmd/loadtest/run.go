package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

// run runs the load and writes its summary to stdout. It fails when the
// load cannot start (its setup failed, or ctx ended during it) or when
// -verify finds that the balances do not add up; an interrupted load is
// summarized and not an error.
func run(ctx context.Context, o options, stdout io.Writer) error {
	if o.SigV4 {
		client := load.NewClient(o.Clients)
		t, err := newSigningTransport(ctx, client.Transport, o.Region, o.Service)
		if err != nil {
			return err
		}
		client.Transport = t
		o.Client = client
	}
	if o.progress != nil {
		bar := newProgress(o.progress, o.Config)
		o.Progress = bar
		defer bar.finish()
	}
	s, err := load.Run(ctx, o.Config)
	if err != nil && s.Requests == 0 {
		return err
	}
	if o.Histogram != "" && s.Answered() > 0 {
		if herr := writeHistogram(o.Histogram, s); herr != nil {
			return herr
		}
	}
	if o.JSON {
		b, jerr := json.MarshalIndent(s, "", "  ")
		if jerr != nil {
			return jerr
		}
		if _, jerr := fmt.Fprintf(stdout, "%s\n", b); jerr != nil {
			return jerr
		}
	} else if werr := s.WriteText(stdout); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if v := s.Verify; v != nil && !v.OK() && v.Unknown == 0 {
		return fmt.Errorf("verify: the accounts hold %d, expected %d", v.Total, v.Expected)
	}
	return nil
}
