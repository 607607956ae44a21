package main

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/eventcore-go/eventcore/cmd/loadtest/load"
)

// progress is a progress bar of the load's commands: out of -n, or a
// running count with the rate for -duration.
type progress struct {
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer, c load.Config) *progress {
	max, what := int64(c.Count), "commands"
	if c.Count == 0 {
		max, what = -1, "commands for "+c.Duration.String()
	}
	return &progress{bar: progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("commands"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
	)}
}

// Ended implements load.Progress.
func (p *progress) Ended() { _ = p.bar.Add(1) }

// finish clears the bar, so that the summary starts on a clean line.
func (p *progress) finish() { _ = p.bar.Finish() }
