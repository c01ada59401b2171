package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// cmdStatus lists recent runs from the run-state bucket.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var c common
	c.register(fs)
	pipeline := fs.String("pipeline", "", "only this pipeline")
	limit := fs.Int("limit", 20, "at most this many runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := c.load()
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
	recs, err := st.Router.Runs().List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PIPELINE\tDS\tRUN ID\tSTATE\tSTEP\tATTEMPTS\tUPDATED\tDETAIL")
	n := 0
	for _, r := range recs {
		if *pipeline != "" && r.Pipeline != *pipeline {
			continue
		}
		if n++; n > *limit {
			break
		}
		detail := r.Detail
		if r.Error != "" {
			detail = r.Error
		}
		if len(detail) > 80 {
			detail = detail[:77] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Pipeline, r.DS, r.RunID, r.State, r.Step, r.Attempts,
			r.UpdatedAt.Local().Format(time.DateTime), detail)
	}
	return tw.Flush()
}
