package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// runCmd runs one execution date end to end, printing each step as it happens and a summary.
type runCmd struct {
	common
	Pipeline string        `need:"" placeholder:"NAME" help:"pipeline name"`
	Date     string        `need:"" placeholder:"YYYY-MM-DD" help:"execution date"`
	Timeout  time.Duration `default:"3h" placeholder:"D" help:"give up watching after this long"`
}

func (c *runCmd) run(ctx context.Context, stdout, stderr io.Writer) error {
	cfg, _, err := c.loadPipeline(c.Pipeline)
	if err != nil {
		return err
	}
	if _, err := event.ParseDS(c.Date); err != nil {
		return err
	}
	// trigger + follow + summary: the date is requested as `sluice trigger` requests it (a run
	// already queued for it is followed, not queued again), then followed from its record.
	st, dates, stop, err := c.request(ctx, cfg, stderr, c.Pipeline, []string{c.Date}, "run", reprocessAll, allServices)
	if err != nil {
		return err
	}
	defer stop()
	d := dates[0]
	w := &watcher{out: stdout, runID: d.runID, started: time.Now(), docs: docsBase(c.up)}
	fmt.Fprintf(stdout, "%s %s  run %s\n", c.Pipeline, c.Date, d.runID)
	if d.note == trigger.NoteAlreadyQueued {
		fmt.Fprintf(stdout, "  … already queued: following that run\n")
	} else {
		fmt.Fprintf(stdout, "  ✓ requested\n")
	}
	p := &progress{out: stdout, pipeline: c.Pipeline, dates: dates, started: time.Now(), each: w.record,
		stopped: func(why string) error { return w.stopped(stderr, c.up != nil, why) }}
	if err := p.follow(ctx, st.Router.Runs(), 250*time.Millisecond, c.Timeout); err != nil {
		return err
	}
	return w.end(d.rec)
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
	steps      int // steps of the run already shown
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
		fmt.Fprintf(w.out, "  ✓ completed    (its completed event is not recorded; `sluice status` has the record)\n")
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

// record shows what is new in the run's record: each step done, and why it waits or retries.
func (w *watcher) record(d *dateRun) {
	if !d.loaded {
		return
	}
	rec := d.rec
	for _, st := range rec.Steps[min(w.steps, len(rec.Steps)):] {
		took := round(time.Duration(st.DurationMS) * time.Millisecond)
		switch {
		case st.Step == "sensor":
			fmt.Fprintf(w.out, "  ✓ %-12s %s (after %d poke(s) of the source)\n", st.Step, took, st.Pokes)
		case st.Attempts > 1:
			fmt.Fprintf(w.out, "  ✓ %-12s %s (%d attempts)\n", st.Step, took, st.Attempts)
		default:
			fmt.Fprintf(w.out, "  ✓ %-12s %s\n", st.Step, took)
		}
	}
	w.steps = max(w.steps, len(rec.Steps))
	w.state(rec)
}

// end reports the run's end from its record, which holds the event that announced it: a
// completed run's summary, a failed run's step and cause, else its state and why. The exit code
// says which.
func (w *watcher) end(rec runstate.Record) error {
	w.traceID = rec.TraceID
	switch rec.State {
	case runstate.Completed:
		if e, err := event.Decode(event.KindCompleted, rec.Final); err == nil {
			c := e.(*event.Completed)
			fmt.Fprintf(w.out, "  ✓ completed    %d inserted, %d updated, %d unchanged\n", c.Inserted, c.Updated, c.Unchanged)
			w.summary(c)
			return nil
		}
	case runstate.Failed:
		if e, err := event.Decode(event.KindFailed, rec.Final); err == nil {
			f := e.(*event.Failed)
			fmt.Fprintf(w.out, "  ✗ failed       at %s after %d attempt(s) [%s]\n", f.Step, f.Attempts, f.Class)
			return fmt.Errorf("%s %s: %s failed: %s", f.Pipeline, f.DS, f.Step, f.Error)
		}
	}
	return w.ended(rec)
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
