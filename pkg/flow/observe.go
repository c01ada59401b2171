package flow

import (
	"context"
	"crypto/sha256"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// What the router reports about each delivery — step spans and their poke events, the run's root
// span, metrics and OpenLineage events — is kept here, apart from the consume loop itself.

// maxWaits bounds the waits a run record keeps for a step's span events.
const maxWaits = 50

// runSpanContext is the run's root span context from the message headers. An event published
// without trace context (by a tool that does not propagate it) gets ids derived from its run id,
// so every step of that run still joins one trace.
func runSpanContext(ctx context.Context, runID string) trace.SpanContext {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc
	}
	sum := sha256.Sum256([]byte("sluice run " + runID))
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], sum[:16])
	copy(sid[:], sum[16:24])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// initSeries creates a route's series at zero, so rates and alerts see the first increment.
func (r *Router) initSeries(rt Route) {
	m := r.metrics
	if m == nil {
		return
	}
	m.EventsRefused.WithLabelValues(rt.Step)
	for name := range r.pipelines {
		for _, o := range metrics.StepOutcomes {
			m.StepOutcomes.WithLabelValues(name, rt.Step, o)
		}
		m.Retries.WithLabelValues(name, rt.Step)
		for _, o := range []string{metrics.RunCompleted, metrics.RunFailed, metrics.RunSkipped} {
			m.RunsFinished.WithLabelValues(name, o)
		}
		switch rt.Consumes {
		case event.KindRequested:
			for _, res := range []string{"ready", "not_ready", "failed"} {
				m.Pokes.WithLabelValues(name, res)
			}
			m.LeaseContention.WithLabelValues(name)
		case event.KindSLAMissed:
			m.SLAMisses.WithLabelValues(name)
		}
	}
}

// pokes reports whether the route's deliveries are pokes: the sensor, which consumes `requested`,
// checks the source once per delivery.
func (rt Route) pokes() bool { return rt.Consumes == event.KindRequested }

// done records a delivery that did not wait: its outcome and duration, and the poke events of
// the deliveries that waited before it.
func (r *Router) done(_ context.Context, d *delivery, outcome string) {
	if d.open != nil {
		for _, w := range d.open.Waits {
			d.span.AddEvent("poke", trace.WithTimestamp(w.At), trace.WithAttributes(
				attribute.String("sluice.poke.result", "waiting"), attribute.String("sluice.poke.reason", w.Reason)))
		}
		if d.open.Dropped > 0 {
			d.span.SetAttributes(attribute.Int("sluice.pokes.dropped", d.open.Dropped))
		}
	}
	if d.rt.pokes() {
		d.span.AddEvent("poke", trace.WithAttributes(attribute.String("sluice.poke.result", outcome)))
		d.span.SetAttributes(attribute.Int("sluice.pokes", d.attempt))
	}
	m := r.metrics
	if m == nil {
		return
	}
	m.StepOutcomes.WithLabelValues(d.run.Pipeline, d.rt.Step, outcome).Inc()
	m.StepDuration.WithLabelValues(d.run.Pipeline, d.rt.Step, outcome).Observe(time.Since(d.started).Seconds())
	if d.rt.pokes() {
		switch outcome {
		case metrics.OutcomeOK:
			m.Pokes.WithLabelValues(d.run.Pipeline, "ready").Inc()
		case metrics.OutcomeFailed, metrics.OutcomeRetry:
			m.Pokes.WithLabelValues(d.run.Pipeline, "failed").Inc()
		}
	}
}

// waited records a deferrable wait. The step's span stays open: the run record keeps its id,
// start and this wait, and the delivery that ends the wait exports the span with one event per
// wait, so a sensor that poked twenty times is one span, not twenty.
func (r *Router) waited(ctx context.Context, d *delivery, wait *WaitError) {
	reason := wait.Reason
	d.waiting = true
	if m := r.metrics; m != nil {
		m.StepOutcomes.WithLabelValues(d.run.Pipeline, d.rt.Step, metrics.OutcomeWait).Inc()
		m.StepDuration.WithLabelValues(d.run.Pipeline, d.rt.Step, metrics.OutcomeWait).Observe(time.Since(d.started).Seconds())
		if d.rt.pokes() && d.p != nil {
			// The sensor waits for the source or for its turn at the lease; only the first is a poke.
			if wait.Queued {
				m.LeaseContention.WithLabelValues(d.run.Pipeline).Inc()
			} else {
				m.Pokes.WithLabelValues(d.run.Pipeline, "not_ready").Inc()
			}
		}
	}
	sc := d.span.SpanContext()
	keep := d.span.IsRecording() && sc.SpanID() != d.runSC.SpanID()
	r.state(ctx, *d.run, func(rec *runstate.Record) {
		rec.State, rec.Detail, rec.Stage = runstate.Waiting, reason, runstate.StageOf(d.rt.Consumes, true)
		if wait.Queued {
			rec.State = runstate.Queued
		}
		if !keep {
			rec.Span = nil
			return
		}
		s := runstate.Span{Step: d.rt.Step, SpanID: sc.SpanID().String(), Started: d.spanStart()}
		if d.open != nil {
			s.Waits, s.Dropped = append(s.Waits, d.open.Waits...), d.open.Dropped
		}
		s.Waits = append(s.Waits, runstate.Wait{At: time.Now().UTC(), Reason: reason})
		if n := len(s.Waits) - maxWaits; n > 0 {
			s.Waits, s.Dropped = s.Waits[n:], s.Dropped+n
		}
		rec.Span = &s
	})
}

func (d *delivery) spanStart() time.Time {
	if d.open != nil {
		return d.open.Started
	}
	return d.started
}

// succeeded labels the step's span with what it read and wrote, counts the rows and bytes it
// moved, and ends the run when the step completed it.
func (r *Router) succeeded(ctx context.Context, d *delivery, out event.Event) {
	r.done(ctx, d, metrics.OutcomeOK)
	inputs, outputs := r.datasets.Step(d.in, out)
	d.span.SetAttributes(datasetAttrs(inputs, outputs)...)
	d.span.SetAttributes(eventAttrs(out)...)
	if m := r.metrics; m != nil {
		p, step := d.run.Pipeline, d.rt.Step
		switch e := out.(type) {
		case *event.Landed:
			m.Bytes.WithLabelValues(p, step).Add(float64(e.Object.Size))
		case *event.Validated:
			m.Rows.WithLabelValues(p, step, "staged").Add(float64(e.Rows))
			if e.Rejected > 0 {
				m.Rows.WithLabelValues(p, step, "quarantined").Add(float64(e.Rejected))
			}
		case *event.Completed:
			m.Rows.WithLabelValues(p, step, "inserted").Add(float64(e.Inserted))
			m.Rows.WithLabelValues(p, step, "updated").Add(float64(e.Updated))
			m.Rows.WithLabelValues(p, step, "unchanged").Add(float64(e.Unchanged))
		}
	}
	now := time.Now()
	if r.lineage != nil && !terminal(d.rt.Consumes) {
		r.lineage.Emit(r.lineage.Event(lineage.Complete, now, d.run, d.rt.Step, inputs, outputs, ""))
	}
	if c, ok := out.(*event.Completed); ok {
		in, out := r.datasets.Run(c)
		r.endRun(ctx, d, metrics.RunCompleted, "", datasetAttrs(in, out)...)
		if r.lineage != nil {
			r.lineage.Emit(r.lineage.Event(lineage.Complete, now, d.run, "", in, out, ""))
		}
	}
}

// skipped ends a run that was dropped (lease busy with on_busy: skip).
func (r *Router) skipped(ctx context.Context, d *delivery, reason string) {
	r.endRun(ctx, d, metrics.RunSkipped, "")
	if r.lineage != nil {
		now := time.Now()
		r.lineage.Emit(r.lineage.Event(lineage.Abort, now, d.run, d.rt.Step, nil, nil, reason))
		r.lineage.Emit(r.lineage.Event(lineage.Abort, now, d.run, "", nil, nil, reason))
	}
}

// failed ends a run that failed at this step.
func (r *Router) failed(ctx context.Context, d *delivery, class string, cause error) {
	if class == "fenced" && r.metrics != nil {
		r.metrics.LeaseLost.WithLabelValues(d.run.Pipeline, d.rt.Step).Inc()
	}
	if m := r.metrics; m != nil {
		m.RunFailures.WithLabelValues(d.run.Pipeline, d.rt.Step, class).Inc()
	}
	inputs, _ := r.datasets.Step(d.in, nil)
	d.span.SetAttributes(datasetAttrs(inputs, nil)...)
	r.endRun(ctx, d, metrics.RunFailed, cause.Error(), attribute.String("sluice.failed_step", d.rt.Step), attribute.String("sluice.failure_class", class))
	if r.lineage != nil {
		now := time.Now()
		r.lineage.Emit(r.lineage.Event(lineage.Fail, now, d.run, d.rt.Step, inputs, nil, cause.Error()))
		r.lineage.Emit(r.lineage.Event(lineage.Fail, now, d.run, "", nil, nil, d.rt.Step+": "+cause.Error()))
	}
}

// finished records the consumption of a run's final event (by the alerter): SLA misses.
func (r *Router) finished(d *delivery) {
	if r.metrics != nil && d.rt.Consumes == event.KindSLAMissed {
		r.metrics.SLAMisses.WithLabelValues(d.run.Pipeline).Inc()
	}
}

// endRun exports the run's root span — from the run's request to now, with the ids every step
// already used as their parent — and counts the finished run.
func (r *Router) endRun(ctx context.Context, d *delivery, outcome, errMsg string, attrs ...attribute.KeyValue) {
	run := d.run
	start := run.RequestedAt
	if start.IsZero() || start.After(time.Now()) {
		start = d.started
	}
	rctx := telemetry.WithSpanIDs(context.WithoutCancel(ctx), d.runSC.TraceID(), d.runSC.SpanID())
	_, span := r.runTracer.Start(rctx, "run "+run.Pipeline+" "+run.DS, trace.WithNewRoot(), trace.WithTimestamp(start),
		trace.WithAttributes(append([]attribute.KeyValue{
			attribute.String("sluice.pipeline", run.Pipeline), attribute.String("sluice.ds", run.DS),
			attribute.String("sluice.run_id", run.RunID), attribute.String("sluice.trigger", run.Trigger),
			attribute.String("sluice.outcome", outcome), attribute.Int("sluice.steps", len(run.Steps)+1),
		}, attrs...)...))
	if m := r.metrics; m != nil {
		m.RunsFinished.WithLabelValues(run.Pipeline, outcome).Inc()
		m.RunDuration.WithLabelValues(run.Pipeline, outcome).Observe(time.Since(start).Seconds())
	}
	if errMsg != "" {
		span.SetStatus(codes.Error, errMsg)
	}
	span.End()
}

// lineageStart sends START for the step (and for the run, at its first step).
func (r *Router) lineageStart(d *delivery) {
	if r.lineage == nil || terminal(d.rt.Consumes) {
		return
	}
	now := time.Now()
	if d.rt.pokes() {
		r.lineage.Emit(r.lineage.Event(lineage.Start, now, d.run, "", nil, nil, ""))
	}
	inputs, _ := r.datasets.Step(d.in, nil)
	r.lineage.Emit(r.lineage.Event(lineage.Start, now, d.run, d.rt.Step, inputs, nil, ""))
}

// datasetAttrs names what a step read and wrote on its span.
func datasetAttrs(inputs, outputs []lineage.Dataset) []attribute.KeyValue {
	str := func(ds []lineage.Dataset) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.String()
		}
		return out
	}
	var attrs []attribute.KeyValue
	if len(inputs) > 0 {
		attrs = append(attrs, attribute.StringSlice("sluice.lineage.inputs", str(inputs)))
	}
	if len(outputs) > 0 {
		attrs = append(attrs, attribute.StringSlice("sluice.lineage.outputs", str(outputs)))
	}
	return attrs
}

// eventAttrs are the facts of a step's output event that a trace reader wants on the span.
func eventAttrs(out event.Event) []attribute.KeyValue {
	switch e := out.(type) {
	case *event.Available:
		return []attribute.KeyValue{attribute.String("sluice.source.url", lineage.Source(e.URL).String())}
	case *event.Landed:
		return []attribute.KeyValue{attribute.String("sluice.s3.object", lineage.Object(e.Object).String()),
			attribute.Int64("sluice.bytes", e.Object.Size), attribute.String("sluice.sha256", e.Object.SHA256)}
	case *event.Validated:
		return []attribute.KeyValue{attribute.String("sluice.staging_table", e.StagingTable), attribute.Int64("sluice.rows", e.Rows)}
	case *event.Partitioned:
		return []attribute.KeyValue{attribute.String("sluice.table", e.Table), attribute.String("sluice.partition", e.Partition)}
	case *event.Completed:
		return []attribute.KeyValue{attribute.String("sluice.table", e.Table), attribute.String("sluice.partition", e.Partition),
			attribute.StringSlice("sluice.models", lineage.Models(e)), attribute.Int64("sluice.rows.inserted", e.Inserted),
			attribute.Int64("sluice.rows.updated", e.Updated), attribute.Int64("sluice.rows.unchanged", e.Unchanged),
			attribute.String("sluice.docs_key", e.DocsKey)}
	}
	return nil
}
