package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// pauseCmd stops a pipeline's schedule from requesting runs; runs already requested go on.
type pauseCmd struct{ pipelineFlags }

func (c *pauseCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	return c.setPaused(ctx, stdout, stderr, true)
}

// unpauseCmd lets the schedule request runs again, at once: with catchup every interval missed
// while paused, else the latest.
type unpauseCmd struct{ pipelineFlags }

func (c *unpauseCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	return c.setPaused(ctx, stdout, stderr, false)
}

// pipelineFlags are the flags of a command about one pipeline.
type pipelineFlags struct {
	common
	Pipeline string `need:"" placeholder:"NAME" help:"pipeline name"`
}

func (c *pipelineFlags) setPaused(ctx context.Context, stdout, stderr io.Writer, paused bool) error {
	cfg, p, err := c.loadPipeline(c.Pipeline)
	if err != nil {
		return err
	}
	st, done, err := c.attach(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer done()
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
