package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// dateRun is one date of a trigger or backfill: the run that serves it, or why none does.
type dateRun struct {
	ds     string
	runID  string // empty when the date was not requested
	note   string // requested, already queued, or why it was left alone
	rec    runstate.Record
	loaded bool
}

func (d *dateRun) done() bool { return d.runID == "" || (d.loaded && d.rec.State.Final()) }

// mark is the date's one-character state in the progress line.
func (d *dateRun) mark() string {
	if d.runID == "" {
		return "-"
	}
	switch d.rec.State {
	case runstate.Completed:
		return "✓"
	case runstate.Failed, runstate.Lost:
		return "✗"
	case runstate.Skipped:
		return "⊘"
	case runstate.Running:
		if d.rec.Step != "sensor" {
			return "▶"
		}
		return "…" // the sensor's turn: waiting for the lease or the file
	case runstate.Waiting, runstate.Retrying:
		return "…"
	}
	return "○"
}

const legend = "✓ completed  ✗ failed  ⊘ skipped  ▶ running  … waiting or retrying  ○ queued  - not requested"

// progress redraws a compact per-date state line until every requested date's run has ended.
type progress struct {
	out      io.Writer
	tty      bool
	pipeline string
	dates    []*dateRun
	drawn    int    // lines drawn last time (tty)
	last     string // last line printed (not a tty)
	started  time.Time
	// each, when set, is shown each date's record as it is read, in place of the progress line
	// (`sluice run` shows its one run step by step).
	each func(d *dateRun)
	// stopped, when set, says following stopped (interrupted, or the timeout: why) and returns
	// the command's error, in place of the progress line's message.
	stopped func(why string) error
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// follow polls the run-state bucket and redraws until all runs end, ctx ends or timeout passes.
func (p *progress) follow(ctx context.Context, runs *runstate.Store, every, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if p.each == nil {
		fmt.Fprintln(p.out, legend)
	}
	for {
		all := true
		for _, d := range p.dates {
			if d.runID == "" || (d.loaded && d.rec.State.Final()) {
				continue
			}
			if rec, err := runs.Get(ctx, p.pipeline, d.ds, d.runID); err == nil {
				d.rec, d.loaded = rec, true
			}
			if p.each != nil {
				p.each(d)
			}
			all = all && d.done()
		}
		if p.each == nil {
			p.draw(all)
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			if p.stopped != nil {
				return p.stopped(fmt.Sprintf("not finished after --timeout %s", timeout))
			}
			return &exitError{code: exitStopped, err: fmt.Errorf("%s: runs not finished after %s (they go on; see `sluice status`)", p.pipeline, timeout)}
		}
		select {
		case <-ctx.Done():
			if p.stopped != nil {
				return p.stopped("interrupted")
			}
			fmt.Fprintf(p.out, "\nstopped following (interrupted): the runs go on; `sluice status` shows them\n")
			return &exitError{code: exitStopped}
		case <-time.After(every):
		}
	}
}

func (p *progress) draw(final bool) {
	counts := map[string]int{}
	marks := make([]string, len(p.dates))
	current := ""
	for i, d := range p.dates {
		marks[i] = d.mark()
		counts[marks[i]]++
		if current == "" && (marks[i] == "▶" || marks[i] == "…") {
			current = d.ds + " " + describe(d.rec)
		}
	}
	requested := len(p.dates) - counts["-"]
	var lines []string
	const width = 50
	for i := 0; i < len(marks); i += width {
		j := min(i+width, len(marks))
		lines = append(lines, fmt.Sprintf("%s %s [%s]", p.pipeline, p.dates[i].ds, strings.Join(marks[i:j], "")))
	}
	summary := fmt.Sprintf("%d/%d ended  ✓%d ✗%d ⊘%d ▶%d …%d ○%d", counts["✓"]+counts["✗"]+counts["⊘"], requested,
		counts["✓"], counts["✗"], counts["⊘"], counts["▶"], counts["…"], counts["○"])
	if p.tty {
		summary += "  " + time.Since(p.started).Round(time.Second).String()
		if current != "" && !final {
			summary += "  " + current
		}
		if p.drawn > 0 {
			fmt.Fprintf(p.out, "\033[%dA", p.drawn) // back to the first line drawn last time
		}
		for _, l := range append(lines, summary) {
			fmt.Fprintf(p.out, "\r\033[K%s\n", l)
		}
		p.drawn = len(lines) + 1
		return
	}
	// Not a terminal (a log, CI): one line per change of state, no redrawing.
	text := strings.Join(append(lines, summary), "\n")
	if text != p.last {
		fmt.Fprintln(p.out, text)
		p.last = text
	}
}

// describe is a run's current state in words: "running validator (attempt 2)".
func describe(r runstate.Record) string { return r.Describe() }

// report prints each date's outcome and returns an error naming the dates that did not complete.
func (p *progress) report() error {
	tw := tabwriter.NewWriter(p.out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DS\tRUN ID\tSTATE\tTOOK\tDETAIL")
	var bad []string
	failed := false
	for _, d := range p.dates {
		if d.runID == "" {
			fmt.Fprintf(tw, "%s\t\t-\t\t%s\n", d.ds, d.note)
			continue
		}
		took, detail, state := "", d.note, runstate.Queued
		if d.loaded {
			state = d.rec.State
			took = d.rec.UpdatedAt.Sub(d.rec.RequestedAt).Round(time.Millisecond).String()
			switch {
			case d.rec.Error != "":
				detail = d.rec.Error
			case state.Final() || d.rec.Detail != "":
				detail = d.rec.Detail // why it was skipped, or what it waits for
			}
			if state == runstate.Failed && d.rec.Step != "" {
				detail = "at " + d.rec.Step + ": " + detail
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ds, d.runID, state, took, oneLine(detail, 100))
		if state == runstate.Failed || state == runstate.Skipped || state == runstate.Lost {
			bad = append(bad, fmt.Sprintf("%s %s", d.ds, state))
		}
		if state == runstate.Failed || state == runstate.Lost {
			failed = true
		}
	}
	tw.Flush()
	if len(bad) > 0 {
		err := fmt.Errorf("%s: %d of %d dates did not complete: %s", p.pipeline, len(bad), len(p.dates), strings.Join(bad, ", "))
		if !failed {
			return &exitError{code: exitSkipped, err: err}
		}
		return err
	}
	return nil
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		s = s[:n-3] + "..."
	}
	return s
}

// reprocess says which dates with an ended run a backfill requests again.
type reprocess = trigger.Reprocess

// reprocessAll requests a date again whatever its last run did (trigger, run).
const reprocessAll = trigger.ReprocessAll

// requestDates requests each date oldest first (trigger.RequestDates, which the console uses
// too) and returns one entry per date.
func requestDates(ctx context.Context, req *trigger.Requester, pipeline string, sla *config.SLA, dates []string, by string, rp reprocess) ([]*dateRun, error) {
	res, err := req.RequestDates(ctx, pipeline, sla, dates, by, rp)
	out := make([]*dateRun, len(res))
	for i, r := range res {
		out[i] = &dateRun{ds: r.DS, runID: r.RunID, note: r.Note, rec: r.Record, loaded: r.Loaded}
	}
	return out, err
}
