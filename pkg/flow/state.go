package flow

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// maxWaits bounds the waits a run record keeps for a step's span events.
const maxWaits = 50

// RunState keeps the run's record (pkg/runstate) as its steps go: running at this step before
// the step, then waiting or queued, retrying, handed on or skipped by what became of the
// delivery. Ends (completed, failed) are recorded by Advance and Fail before they are announced.
// Consumers of a run's final events and of its SLA deadline report on the run: they do not mark
// it running at their own step (the alerter reads where an overdue run is stuck).
func (r *Router) RunState(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		d := deliveryOf(ctx)
		if !terminal(d.rt.Consumes) {
			r.markRunning(ctx, d)
		}
		out, err := next(ctx, p, in)
		switch d.outcome {
		case outcomeOK:
			if out != nil {
				r.handedOn(ctx, out)
			}
		case outcomeWait:
			r.recordWait(ctx, d)
		case outcomeRetry:
			r.state(ctx, *d.run, func(rec *runstate.Record) {
				rec.State, rec.Step, rec.Stage, rec.NextAttempt = runstate.Retrying, string(d.rt.Step), runstate.StageOf(d.rt.Consumes, true), d.next
				rec.Detail, rec.Error = d.detail, d.cause.Error()
				rec.Span = nil
			})
		case outcomeSkip:
			r.state(ctx, *d.run, func(rec *runstate.Record) {
				rec.State, rec.Detail, rec.Span, rec.NextAttempt = runstate.Skipped, d.cause.Error(), nil, time.Time{}
			})
			// A skipped run that held the lease (say, a soft-failed sensor) gives it back, so the
			// next run need not wait it out; Release does nothing for a run that never held it.
			if err := r.leases.Release(ctx, d.run.Pipeline, d.run.RunID); err != nil {
				Logger(ctx).Warn("release lease", "err", err)
			}
		}
		return out, err
	}
}

// markRunning marks the run running at this step and picks up the span a waiting delivery of
// this step left open.
func (r *Router) markRunning(ctx context.Context, d *delivery) {
	var open *runstate.Span
	run := d.run
	r.state(ctx, *run, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Attempts, rec.TraceID = runstate.Running, string(d.rt.Step), d.attempt, d.runSC.TraceID().String()
		rec.Stage, rec.Detail, rec.NextAttempt = runstate.StageOf(d.rt.Consumes, true), "", time.Time{}
		if len(run.Steps) > len(rec.Steps) {
			rec.Steps = run.Steps // the steps done so far travel with the event
		}
		if rec.Trigger == "" {
			rec.Trigger = run.Trigger
		}
		open = rec.Span
	})
	if open != nil && open.Step == string(d.rt.Step) {
		d.open = open
	}
}

// recordWait records a deferrable wait. The step's span stays open: the run record keeps its
// id, start and this wait, and the delivery that ends the wait exports the span with one event
// per wait, so a sensor that poked twenty times is one span, not twenty.
func (r *Router) recordWait(ctx context.Context, d *delivery) {
	var sc trace.SpanContext
	keep := false
	if d.span != nil {
		sc = d.span.SpanContext()
		keep = d.span.IsRecording() && sc.SpanID() != d.runSC.SpanID()
	}
	r.state(ctx, *d.run, func(rec *runstate.Record) {
		rec.State, rec.Detail, rec.Stage = runstate.Waiting, d.wait.Reason, runstate.StageOf(d.rt.Consumes, true)
		if d.wait.Queued {
			rec.State = runstate.Queued
		}
		if !keep {
			rec.Span = nil
			return
		}
		s := runstate.Span{Step: string(d.rt.Step), SpanID: sc.SpanID().String(), Started: d.spanStart()}
		if d.open != nil {
			s.Waits, s.Dropped = append(s.Waits, d.open.Waits...), d.open.Dropped
		}
		s.Waits = append(s.Waits, runstate.Wait{At: time.Now().UTC(), Reason: d.wait.Reason})
		if n := len(s.Waits) - maxWaits; n > 0 {
			s.Waits, s.Dropped = s.Waits[n:], s.Dropped+n
		}
		rec.Span = &s
	})
}
