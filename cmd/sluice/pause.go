package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// cmdPause stops a pipeline's schedule from requesting runs; runs already requested go on.
func cmdPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return setPaused(ctx, "pause", args, stdout, stderr, true)
}

// cmdUnpause lets the schedule request runs again, at once: with catchup every interval missed
// while paused, else the latest.
func cmdUnpause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return setPaused(ctx, "unpause", args, stdout, stderr, false)
}

func setPaused(ctx context.Context, name string, args []string, stdout, stderr io.Writer, paused bool) error {
	fs := newFlags(name, args, stdout, stderr)
	var c common
	c.register(fs.FlagSet)
	pipeline := fs.String("pipeline", "", "pipeline name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, p, err := c.loadPipeline(*pipeline)
	if err != nil {
		return err
	}
	stackCtx, stop := context.WithCancel(ctx)
	st, err := c.connect(stackCtx, cfg, stderr)
	if err != nil {
		stop()
		return err
	}
	defer func() { stop(); _ = st.Wait() }()
	changed, err := trigger.SetPaused(ctx, st.JS, app.BusOptions(cfg).SubjectPrefix, p, paused, "unpause")
	if err != nil {
		return err
	}
	word := map[bool]string{true: "paused", false: "unpaused"}[paused]
	if !changed {
		fmt.Fprintf(stdout, "%s was already %s\n", p.Name, word)
		return nil
	}
	if p.Schedule == "" {
		fmt.Fprintf(stdout, "%s %s (it has no schedule: triggers and backfills are not affected)\n", p.Name, word)
		return nil
	}
	if paused {
		fmt.Fprintf(stdout, "%s paused: its schedule %q requests nothing until `sluice unpause`; runs already requested go on\n", p.Name, p.Schedule)
		return nil
	}
	what := "the latest interval"
	if p.Catchup {
		what = "every interval missed while paused, oldest first"
	}
	fmt.Fprintf(stdout, "%s unpaused: its schedule %q requests %s now\n", p.Name, p.Schedule, what)
	return nil
}
