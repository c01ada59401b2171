package trigger

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// Reprocess says which dates with an ended run a trigger or backfill requests again.
type Reprocess string

const (
	ReprocessNone   Reprocess = "none"   // only dates never run (or whose run was skipped)
	ReprocessFailed Reprocess = "failed" // also dates whose latest run failed
	ReprocessAll    Reprocess = "all"    // every date
)

// ParseReprocess checks a reprocess mode's name.
func ParseReprocess(s string) (Reprocess, error) {
	switch r := Reprocess(s); r {
	case ReprocessNone, ReprocessFailed, ReprocessAll:
		return r, nil
	}
	return "", fmt.Errorf("reprocess %q: use none, failed or all", s)
}

// MaxDates bounds one backfill, so a typo in a year does not queue a century.
const MaxDates = 3660

// DateRange lists the dates from..to, inclusive.
func DateRange(from, to string) ([]string, error) { return DateRangeNamed(from, to, "from", "to") }

// DateRangeNamed is DateRange with its errors naming the bounds as the caller's input does (the
// CLI's --from and --to).
func DateRangeNamed(from, to, fromName, toName string) ([]string, error) {
	a, err := event.ParseDS(from)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fromName, err)
	}
	b, err := event.ParseDS(to)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", toName, err)
	}
	if b.Before(a) {
		return nil, fmt.Errorf("%s %s is before %s %s", toName, to, fromName, from)
	}
	var out []string
	for d := a; !d.After(b); d = d.AddDate(0, 0, 1) {
		if len(out) == MaxDates {
			return nil, fmt.Errorf("%s to %s is more than %d dates; backfill it in parts", from, to, MaxDates)
		}
		out = append(out, d.Format(time.DateOnly))
	}
	return out, nil
}

// DateResult is what requesting one date did: the run that serves it (RunID empty when the date
// was left alone) and a note saying why.
type DateResult struct {
	DS    string
	RunID string
	// Note is "requested", "already queued", or why the date was left as it was.
	Note string
	// Record is the date's latest run when the request did not queue a new one.
	Record runstate.Record
	Loaded bool
}

// Note values of a date that has a run.
const (
	NoteRequested     = "requested"
	NoteAlreadyQueued = "already queued"
)

// RequestDates requests each date oldest first, under the rule that a date already queued is not
// queued twice, and returns one result per date. It is how the CLI (trigger, backfill) and the
// console request runs.
func (r *Requester) RequestDates(ctx context.Context, pipeline string, sla *config.SLA, dates []string, by string, rp Reprocess) ([]DateResult, error) {
	var out []DateResult
	for _, ds := range dates {
		d := DateResult{DS: ds}
		latest, ok, err := r.Latest(ctx, pipeline, ds)
		if err != nil {
			return out, err
		}
		if ok {
			switch {
			case !latest.State.Final():
				d.RunID, d.Record, d.Loaded, d.Note = latest.RunID, latest, true, NoteAlreadyQueued
				out = append(out, d)
				continue
			case latest.State == runstate.Completed && rp != ReprocessAll:
				d.Record, d.Note = latest, "completed by run "+latest.RunID+" (reprocess all to rerun)"
				out = append(out, d)
				continue
			case latest.State == runstate.Failed && rp == ReprocessNone:
				d.Record, d.Note = latest, "failed in run "+latest.RunID+" (reprocess failed to rerun)"
				out = append(out, d)
				continue
			}
		}
		res, err := r.Request(ctx, Request{Pipeline: pipeline, DS: ds, Trigger: by, SLA: sla})
		if err != nil {
			return out, err
		}
		d.RunID, d.Note = res.RunID, NoteRequested
		if !res.Queued {
			d.Note = NoteAlreadyQueued
		}
		out = append(out, d)
	}
	return out, nil
}

// SetPaused pauses or unpauses a pipeline's schedule, as `sluice pause|unpause` and the console
// do; on unpause the schedule is looked at now rather than at its next fire. changed is false
// when it already was.
func SetPaused(ctx context.Context, js jetstream.JetStream, prefix string, p *config.Pipeline, paused bool, why string) (changed bool, err error) {
	states, err := NewStates(ctx, js)
	if err != nil {
		return false, err
	}
	if changed, err = states.SetPaused(ctx, p.Name, paused); err != nil || !changed {
		return changed, err
	}
	if !paused && p.Schedule != "" {
		if err := Kick(ctx, js, prefix, p.Name, why); err != nil {
			return true, err
		}
	}
	return true, nil
}
