package flow

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// The two things that move a run, written once: advance it to its next step, and fail it. The
// router does both for every step; the sensor's webhook advances a waiting run in the sensor's
// place, and the max-deliveries watcher fails a run the broker gave up on.

// Advance moves a run on from the step that produced out: out gets the run's steps so far plus
// step, and is published with the run's root span as its trace parent (ctx carries the run's
// span context, as telemetry.Extract gives it from an event of the run; without one the ids
// derived from the run id are used). A completed run's end is recorded and its lease released
// before it is announced; any other next event is recorded as the run handed on.
func (r *Router) Advance(ctx context.Context, from event.Run, step event.StepResult, out event.Event) error {
	ctx = withRunSpan(ctx, from.RunID)
	if err := r.advance(ctx, &from, step, out); err != nil {
		return err
	}
	r.handedOn(ctx, out)
	return nil
}

// StepResult is the entry of step, started at started and done now after attempts, in the run's
// list of steps done, for the event out that hands the run on.
func StepResult(step event.Step, started time.Time, attempts int, out event.Event) event.StepResult {
	res := event.StepResult{Step: string(step), StartedAt: started.UTC(), DurationMS: time.Since(started).Milliseconds(), Attempts: attempts}
	if av, ok := out.(*event.Available); ok { // the sensor's wait, for the run's summary
		res.LeaseAt, res.Pokes = av.LeaseAt, av.Pokes
	}
	return res
}

// advance is Advance up to the publish (the router acks in between, then records handing on).
func (r *Router) advance(ctx context.Context, from *event.Run, step event.StepResult, out event.Event) error {
	oh := out.Header()
	oh.Steps = append(append([]event.StepResult(nil), from.Steps...), step)
	if out.Kind() == event.KindCompleted {
		// The run's end is recorded, and its lease released, before it is announced.
		r.end(ctx, out, func(rec *runstate.Record) {
			rec.State, rec.Detail, rec.Error, rec.Steps = runstate.Completed, "", "", oh.Steps
			rec.Stage = runstate.StageOf(event.KindCompleted, false)
		})
	}
	return Publish(ctx, r.js, r.opts.SubjectPrefix, out)
}

// handedOn records that the run went on with out. It is written at the next event's stage: if
// the next step has already marked the run running, this write is older news and is dropped.
func (r *Router) handedOn(ctx context.Context, out event.Event) {
	if out.Kind() == event.KindCompleted {
		return
	}
	oh := out.Header()
	r.state(ctx, *oh, func(rec *runstate.Record) {
		rec.Steps = oh.Steps
		rec.Error = ""
		rec.Span = nil
		rec.Stage = runstate.StageOf(out.Kind(), false)
		rec.State, rec.Detail = runstate.Running, runstate.HandedOn+string(out.Kind())
	})
}

// Fail ends a run that failed for good at step: its end recorded (failed, with the cause), its
// lease released (unless it was fenced: it no longer holds it), then one `failed` event
// published, whose message id makes it one per run whoever publishes it. ctx carries the run's
// span context as for Advance. Whoever hears of the end — `sluice run`, which then exits, or a
// trigger of the same date — finds the run ended and the pipeline free.
func (r *Router) Fail(ctx context.Context, run event.Run, step event.Step, attempts int, class event.FailureClass, cause error) error {
	ctx = withRunSpan(ctx, run.RunID)
	f := &event.Failed{Run: run, Step: string(step), Attempts: attempts, Class: class, Error: cause.Error()}
	r.end(ctx, f, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Attempts, rec.Error, rec.Detail = runstate.Failed, string(step), attempts, cause.Error(), string(class)
	})
	return Publish(ctx, r.js, r.opts.SubjectPrefix, f)
}

// withRunSpan makes the run's root span the span of ctx.
func withRunSpan(ctx context.Context, runID string) context.Context {
	return trace.ContextWithRemoteSpanContext(ctx, runSpanContext(ctx, runID))
}

// end records a run's end with the final event that announces it, then releases the run's
// lease (a fenced run no longer holds it). A delivery that comes back after a crash between
// this and the publish finds the run ended and publishes the recorded event (DropEnded); the
// stream's duplicate window drops it if the first publish got through after all.
func (r *Router) end(ctx context.Context, final event.Event, fn func(*runstate.Record)) {
	data, err := event.Encode(final)
	if err != nil {
		Logger(ctx).Warn("encode final event", "err", err)
	}
	run := final.Header()
	r.state(ctx, *run, func(rec *runstate.Record) {
		fn(rec)
		rec.Span, rec.NextAttempt, rec.Final = nil, time.Time{}, data
	})
	if f, ok := final.(*event.Failed); ok && f.Class == event.ClassFenced {
		return
	}
	if err := r.leases.Release(ctx, run.Pipeline, run.RunID); err != nil {
		Logger(ctx).Warn("release lease", "err", err)
	}
}

// state updates the run's record; a failure to record is logged, not fatal to the step.
func (r *Router) state(ctx context.Context, run event.Run, fn func(*runstate.Record)) {
	if run.Fence != 0 {
		// A run that held the lease and no longer does, without an end, is lost (runstate.Lost).
		fn0 := fn
		fn = func(rec *runstate.Record) { fn0(rec); rec.Fence = run.Fence }
	}
	if err := r.runs.Update(ctx, run, fn); err != nil {
		Logger(ctx).Warn("record run state", "err", err)
	}
}
