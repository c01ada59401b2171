package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// runCmd runs one execution date end to end, printing each step as it happens and a summary.
type runCmd struct {
	common
	Pipeline string        `need:"" placeholder:"NAME" help:"pipeline name"`
	Date     string        `need:"" placeholder:"YYYY-MM-DD" help:"execution date"`
	Timeout  time.Duration `default:"3h" placeholder:"D" help:"give up watching after this long"`
}

func (c *runCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	pipeline, ds, timeout := &c.Pipeline, &c.Date, &c.Timeout
	cfg, pc, err := c.loadPipeline(*pipeline)
	if err != nil {
		return err
	}
	if _, err := event.ParseDS(*ds); err != nil {
		return err
	}
	stackCtx, stopStack := context.WithCancel(context.WithoutCancel(ctx))
	st, err := c.connect(stackCtx, cfg, stderr, allServices...)
	if err != nil {
		stopStack()
		return err
	}
	defer func() { stopStack(); _ = st.Wait() }()
	if err := c.checkAttach(cfg, *pipeline, stderr); err != nil {
		return err
	}

	prefix := cfg.NATS.SubjectPrefix
	sub, err := st.NC.SubscribeSync(fmt.Sprintf("%s.%s.*.%s", prefix, *pipeline, *ds))
	if err != nil {
		return err
	}
	defer sub.Unsubscribe() //nolint:errcheck
	req, err := flow.Request(ctx, st.JS, st.Tracer, prefix, *pipeline, *ds, "run", flow.WithSLA(pc.SLA))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s  run %s\n", *pipeline, *ds, req.RunID)
	w := &watcher{out: stdout, runID: req.RunID, started: time.Now(), docs: docsBase(c.up)}
	deadline := time.Now().Add(*timeout)
	var endedAt time.Time // when the run's record said it ended
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return w.stopped(stderr, c.up != nil, "interrupted")
		}
		msg, err := sub.NextMsg(250 * time.Millisecond)
		switch {
		case errors.Is(err, nats.ErrTimeout):
			rec, err := st.Router.Runs().Get(ctx, *pipeline, *ds, req.RunID)
			if err != nil {
				continue
			}
			w.state(rec)
			// Every final state ends the command. Completed and failed runs also announce their
			// end as an event, which carries the summary; a run whose end has no event (skipped)
			// or whose event does not come ends from its record.
			if rec.State.Final() {
				if endedAt.IsZero() {
					endedAt = time.Now()
				}
				if rec.State != runstate.Completed && rec.State != runstate.Failed || time.Since(endedAt) > 5*time.Second {
					return w.ended(rec)
				}
			}
			continue
		case err != nil:
			return err
		}
		done, err := w.event(msg)
		if done {
			return err
		}
	}
	return w.stopped(stderr, c.up != nil, fmt.Sprintf("not finished after --timeout %s", *timeout))
}

// docsBase is the HTTP endpoint of the attached `sluice up`, which serves the run's dbt docs
// ("" when this process runs the services: its endpoint ends with it).
func docsBase(up *stackInfo) string {
	if up != nil {
		return up.HTTP
	}
	return ""
}

// watcher prints one run's progress.
type watcher struct {
	out        io.Writer
	runID      string
	traceID    string
	docs       string // host:port serving /docs/ ("" when none)
	started    time.Time
	lastDetail string
}

// stopped ends following a run that goes on without this command.
func (w *watcher) stopped(stderr io.Writer, attached bool, why string) error {
	goesOn := "it goes on in the running `sluice up`"
	if !attached {
		goesOn = "it is stored and goes on when `sluice up` (or another `sluice run`) runs the services"
	}
	fmt.Fprintf(stderr, "\nsluice: stopped following run %s (%s): %s; `sluice status` shows it\n", w.runID, why, goesOn)
	return &exitError{code: exitStopped}
}

// ended reports a run that ended without its end event: its state says how, the exit code too.
func (w *watcher) ended(rec runstate.Record) error {
	why := rec.Detail
	if rec.Error != "" {
		why = rec.Error
	}
	mark := "✗"
	if rec.State == runstate.Skipped {
		mark = "⊘"
	}
	if rec.State == runstate.Completed {
		fmt.Fprintf(w.out, "  ✓ completed    (its completed event did not arrive; `sluice status` has the record)\n")
		return nil
	}
	fmt.Fprintf(w.out, "  %s %-12s at %s: %s\n", mark, rec.State, rec.Step, why)
	return &exitError{code: exitCodeOf(rec.State), err: fmt.Errorf("%s %s: run %s %s at %s: %s", rec.Pipeline, rec.DS, rec.RunID, rec.State, rec.Step, why)}
}

// exitCodeOf is the exit code of a run that ended in state s (documented in usage).
func exitCodeOf(s runstate.State) int {
	switch s {
	case runstate.Completed:
		return 0
	case runstate.Skipped:
		return exitSkipped
	}
	return exitFailed
}

func (w *watcher) state(rec runstate.Record) {
	if rec.State != runstate.Waiting && rec.State != runstate.Queued && rec.Detail == "" && rec.Error == "" {
		return
	}
	detail := rec.Detail
	if rec.Error != "" && rec.State != runstate.Failed {
		detail += ": " + rec.Error
	}
	if detail != w.lastDetail && !rec.State.Final() && !strings.HasPrefix(detail, runstate.HandedOn) {
		fmt.Fprintf(w.out, "  … %-12s %s %s\n", rec.Step, rec.State, detail)
	}
	w.lastDetail = detail
}

// event prints an event of the run; done is true at completed or failed.
func (w *watcher) event(msg *nats.Msg) (done bool, err error) {
	parts := strings.Split(msg.Subject, ".")
	if len(parts) < 4 {
		return false, nil
	}
	e, err := event.Decode(event.Kind(parts[len(parts)-2]), msg.Data)
	if err != nil || e.Header().RunID != w.runID {
		return false, nil
	}
	if w.traceID == "" {
		if tp := msg.Header.Get("traceparent"); len(tp) >= 35 {
			w.traceID = tp[3:35]
		}
	}
	switch e := e.(type) {
	case *event.Requested:
		fmt.Fprintf(w.out, "  ✓ requested\n")
	case *event.Available:
		fmt.Fprintf(w.out, "  ✓ available    %s (after %d poke(s) of the source)\n", e.URL, e.Pokes)
	case *event.Landed:
		fmt.Fprintf(w.out, "  ✓ landed       s3://%s/%s (%d bytes)\n", e.Object.Bucket, e.Object.Key, e.Object.Size)
	case *event.Validated:
		fmt.Fprintf(w.out, "  ✓ validated    %d rows → %s\n", e.Rows, e.StagingTable)
		if e.Rejected > 0 {
			fmt.Fprintf(w.out, "  ! quarantined  %d bad row(s) → s3://%s/%s\n", e.Rejected, e.Object.Bucket, e.RejectsKey)
		}
	case *event.Partitioned:
		fmt.Fprintf(w.out, "  ✓ partitioned  %s\n", e.Partition)
	case *event.Completed:
		fmt.Fprintf(w.out, "  ✓ completed    %d inserted, %d updated, %d unchanged\n", e.Inserted, e.Updated, e.Unchanged)
		w.summary(e)
		return true, nil
	case *event.Failed:
		fmt.Fprintf(w.out, "  ✗ failed       at %s after %d attempt(s) [%s]\n", e.Step, e.Attempts, e.Class)
		return true, fmt.Errorf("%s %s: %s failed: %s", e.Pipeline, e.DS, e.Step, e.Error)
	}
	return false, nil
}

func (w *watcher) summary(c *event.Completed) {
	var end time.Time
	var work time.Duration
	var sensor *event.StepResult
	for i, st := range c.Steps {
		if e := st.StartedAt.Add(time.Duration(st.DurationMS) * time.Millisecond); e.After(end) {
			end = e
		}
		if st.Step == "sensor" {
			sensor = &c.Steps[i]
			continue
		}
		work += time.Duration(st.DurationMS) * time.Millisecond
	}
	total := end.Sub(c.RequestedAt)
	fmt.Fprintf(w.out, "\nSummary  %s %s  run %s  completed in %s (requested %s)\n", c.Pipeline, c.DS, c.RunID,
		round(total), c.RequestedAt.Local().Format(time.TimeOnly))
	var wait time.Duration
	if sensor != nil {
		available := sensor.StartedAt.Add(time.Duration(sensor.DurationMS) * time.Millisecond)
		wait = available.Sub(c.RequestedAt)
		detail := fmt.Sprintf("%d poke(s) of the source", sensor.Pokes)
		if !sensor.LeaseAt.IsZero() {
			detail = fmt.Sprintf("%s for its turn at the lease, %s for the file: %s", round(sensor.LeaseAt.Sub(c.RequestedAt)), round(available.Sub(sensor.LeaseAt)), detail)
		}
		fmt.Fprintf(w.out, "  wait       %-9s requested → available (%s)\n", round(wait), detail)
	}
	fmt.Fprintf(w.out, "  work       %-9s the steps below\n", round(work))
	if gap := total - wait - work; gap > 0 {
		fmt.Fprintf(w.out, "  hand-offs  %-9s between steps (broker delivery, run-state writes)\n", round(gap))
	}
	tw := tabwriter.NewWriter(w.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  step\tduration\tattempts")
	for _, s := range c.Steps {
		if s.Step == "sensor" {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\n", s.Step, time.Duration(s.DurationMS)*time.Millisecond, s.Attempts)
	}
	tw.Flush()
	fmt.Fprintf(w.out, "  object     s3://%s/%s  %d bytes  sha256 %s\n", c.Object.Bucket, c.Object.Key, c.Object.Size, c.Object.SHA256)
	fmt.Fprintf(w.out, "  rows       %d staged → %s: %d inserted, %d updated, %d unchanged\n", c.Staged, c.Partition, c.Inserted, c.Updated, c.Unchanged)
	if len(c.Partitions) > 0 {
		// Where the rows went: an update of a row stored in another date's partition moves it
		// into this one; a staged row older than the stored one leaves that row where it is.
		tw := tabwriter.NewWriter(w.out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  partition\tinserted\tupdated\tmoved in\tmoved out\tunchanged")
		for _, pr := range c.Partitions {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\n", pr.Partition, pr.Inserted, pr.Updated, pr.MovedIn, pr.MovedOut, pr.Unchanged)
		}
		tw.Flush()
	}
	if c.Rejected > 0 {
		fmt.Fprintf(w.out, "  rejected   %d row(s) quarantined in s3://%s/%s\n", c.Rejected, c.Object.Bucket, c.RejectsKey)
	}
	if c.DocsKey != "" {
		path := fmt.Sprintf("/docs/%s/%s/%s/", c.Pipeline, c.DS, c.RunID)
		fmt.Fprintf(w.out, "  dbt docs   s3://%s/%sindex.html\n", c.Object.Bucket, strings.TrimSuffix(c.DocsKey, "/")+"/")
		if w.docs != "" {
			fmt.Fprintf(w.out, "             http://%s%s (served while that `sluice up` runs)\n", w.docs, path)
		} else {
			fmt.Fprintf(w.out, "             served at http://ADDR%s by `sluice up --http ADDR` (and every service's --http)\n", path)
		}
	}
	fmt.Fprintf(w.out, "  run id     %s\n  trace id   %s\n", c.RunID, w.traceID)
}

// round keeps a duration readable: milliseconds under a second, then tenths of a second.
func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
