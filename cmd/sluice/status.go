package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// statusCmd lists the pipelines' schedules and recent runs from the schedule and run-state
// buckets; with --watch it redraws until interrupted.
type statusCmd struct {
	common
	Pipeline string        `placeholder:"NAME" help:"only this pipeline"`
	Limit    int           `default:"20" placeholder:"N" help:"at most this many runs"`
	Watch    bool          `help:"redraw until interrupted"`
	Interval time.Duration `default:"1s" placeholder:"D" help:"how often --watch redraws"`
}

func (c *statusCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, err := c.load()
	if err != nil {
		return err
	}
	st, done, err := c.attach(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer done()
	states, err := trigger.NewStates(ctx, st.JS)
	if err != nil {
		return err
	}
	v := statusView{cfg: cfg, js: st.JS, runs: st.Router.Runs(), states: states, pipeline: c.Pipeline, limit: c.Limit}
	if !c.Watch {
		return v.render(ctx, stdout)
	}
	tty := isTerminal(stdout)
	var last []byte
	for {
		var b bytes.Buffer
		if err := v.render(ctx, &b); err != nil && ctx.Err() == nil {
			fmt.Fprintf(&b, "\nerror: %v\n", err)
		}
		switch {
		case tty:
			fmt.Fprintf(stdout, "\033[H\033[2J%s  (every %s; Ctrl-C to stop)\n%s", time.Now().Format(time.DateTime), c.Interval, b.Bytes())
		case !bytes.Equal(b.Bytes(), last): // a log: print only what changed
			fmt.Fprintf(stdout, "--- %s\n%s", time.Now().Format(time.DateTime), b.Bytes())
		}
		last = b.Bytes()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.Interval):
		}
	}
}

type statusView struct {
	cfg      *config.Config
	js       jetstream.JetStream
	runs     *runstate.Store
	states   *trigger.States
	pipeline string
	limit    int
}

func (v statusView) render(ctx context.Context, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	scheduled := false
	for _, p := range v.cfg.Pipelines {
		if p.Schedule == "" || (v.pipeline != "" && p.Name != v.pipeline) {
			continue
		}
		if !scheduled {
			fmt.Fprintln(tw, "PIPELINE\tSCHEDULE\tCATCHUP\tSTATE\tNEXT TICK\tLAST INTERVAL\tDS\tRUN")
			scheduled = true
		}
		s, err := schedule.Parse(p.Schedule, p.Timezone)
		if err != nil {
			return err
		}
		st, _, err := v.states.Get(ctx, p.Name)
		if err != nil {
			return err
		}
		state := "active"
		if st.Paused {
			state = "paused"
		}
		next, _ := s.Next(time.Now())
		last, run := "-", "-"
		if !st.End.IsZero() {
			last, run = st.Interval().String(), st.RunID
			if st.Coalesced {
				run += " (already queued)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%v\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Schedule, p.Timezone, p.Catchup, state,
			next.Local().Format(time.DateTime), last, st.DS, run)
	}
	if scheduled {
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "PIPELINE\tDS\tRUN ID\tTRIGGER\tSTATE\tSTEP\tATTEMPTS\tTOOK\tUPDATED\tDETAIL")
	recs, err := v.runs.List(ctx)
	if err != nil {
		return err
	}
	n := 0
	holders := map[string]string{}
	for _, r := range recs {
		if v.pipeline != "" && r.Pipeline != v.pipeline {
			continue
		}
		if !r.State.Final() && r.Fence != 0 {
			h, ok := holders[r.Pipeline]
			if !ok {
				if h, err = trigger.LeaseHolder(ctx, v.js, r.Pipeline); err != nil {
					return err
				}
				holders[r.Pipeline] = h
			}
			if r.Orphaned(h) { // shown as what it is; a trigger of its date records it
				r.State, r.Detail, r.Error = runstate.Lost, "its lease is gone and it never ended (its process died)", ""
			}
		}
		if n++; n > v.limit {
			break
		}
		detail := r.Detail
		switch {
		case r.State == runstate.Retrying:
			detail += ": " + r.Error // when it runs again, and why it failed
		case r.Error != "":
			detail = r.Error
		}
		end := r.UpdatedAt
		if !r.State.Final() {
			end = time.Now()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Pipeline, r.DS, r.RunID, r.Trigger, r.State, r.Step, r.Attempts,
			end.Sub(r.RequestedAt).Round(time.Second), r.UpdatedAt.Local().Format(time.DateTime), oneLine(detail, 80))
	}
	return tw.Flush()
}
