package flow

import (
	"context"
	"crypto/sha256"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// What the router reports about each delivery — step spans and their poke events, the run's root
// span, metrics and OpenLineage events — is kept here, in three middleware, apart from the
// consume loop itself.

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
	m.EventsRefused.WithLabelValues(string(rt.Step))
	for name := range r.pipelines {
		for _, o := range metrics.StepOutcomes {
			m.StepOutcomes.WithLabelValues(name, string(rt.Step), o)
		}
		m.Retries.WithLabelValues(name, string(rt.Step))
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

// Tracing makes each delivery a span of the step, a child of the run's root span, and puts the
// trace and span ids on the step's logger. A delivery that waits leaves its span open (in the
// run record, RunState) for the next delivery to continue; the one that ends the wait exports it
// with a "poke" event per wait. The delivery that ends the run exports the run's root span.
func (r *Router) Tracing(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		d, run := deliveryOf(ctx), in.Header()
		spanCtx, spanStart := ctx, d.started
		if d.open != nil {
			if sid, err := trace.SpanIDFromHex(d.open.SpanID); err == nil {
				spanCtx, spanStart = telemetry.WithSpanIDs(ctx, d.runSC.TraceID(), sid), d.open.Started
			} else {
				d.open = nil
			}
		}
		ctx, d.span = r.tracer.Start(spanCtx, string(d.rt.Step), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(spanStart),
			trace.WithAttributes(
				attribute.String("sluice.pipeline", run.Pipeline), attribute.String("sluice.ds", run.DS),
				attribute.String("sluice.run_id", run.RunID), attribute.String("sluice.step", string(d.rt.Step)),
				attribute.Int("sluice.attempt", d.attempt), attribute.String("messaging.system", "nats"),
				attribute.String("messaging.destination.name", d.msg.Subject())))
		ctx = WithLogger(ctx, Logger(ctx).With("trace_id", telemetry.TraceID(ctx), "span_id", telemetry.SpanID(ctx)))
		out, err := next(ctx, p, in)
		r.traceOutcome(ctx, d)
		if d.outcome != outcomeWait {
			d.span.End()
		}
		return out, err
	}
}

// traceOutcome labels the step's span with what became of the delivery.
func (r *Router) traceOutcome(ctx context.Context, d *delivery) {
	switch d.outcome {
	case outcomeNone, outcomeWait:
		return
	case outcomeRetry, outcomeFailed, outcomeRedeliver:
		if d.cause != nil {
			d.span.SetStatus(codes.Error, d.cause.Error())
		}
	}
	if d.outcome == outcomeRedeliver {
		return
	}
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
		d.span.AddEvent("poke", trace.WithAttributes(attribute.String("sluice.poke.result", d.outcome.label())))
		d.span.SetAttributes(attribute.Int("sluice.pokes", d.attempt))
	}
	switch {
	case d.outcome == outcomeOK && d.out != nil:
		inputs, outputs := r.datasets.Step(d.in, d.out)
		d.span.SetAttributes(datasetAttrs(inputs, outputs)...)
		d.span.SetAttributes(eventAttrs(d.out)...)
	case d.outcome == outcomeFailed && !terminal(d.rt.Consumes):
		inputs, _ := r.datasets.Step(d.in, nil)
		d.span.SetAttributes(datasetAttrs(inputs, nil)...)
	}
	if d.runEnded() {
		r.exportRun(ctx, d)
	}
}

// exportRun exports the run's root span, from the run's request to now, with the ids every step
// already used as their parent.
func (r *Router) exportRun(ctx context.Context, d *delivery) {
	run := d.run
	outcome, errMsg := runOutcome(d), ""
	attrs := []attribute.KeyValue{
		attribute.String("sluice.pipeline", run.Pipeline), attribute.String("sluice.ds", run.DS),
		attribute.String("sluice.run_id", run.RunID), attribute.String("sluice.trigger", run.Trigger),
		attribute.String("sluice.outcome", outcome), attribute.Int("sluice.steps", len(run.Steps)+1)}
	switch d.outcome {
	case outcomeOK:
		in, out := r.datasets.Run(d.out.(*event.Completed))
		attrs = append(attrs, datasetAttrs(in, out)...)
	case outcomeFailed:
		errMsg = d.cause.Error()
		attrs = append(attrs, attribute.String("sluice.failed_step", string(d.rt.Step)), attribute.String("sluice.failure_class", string(d.class)))
	}
	rctx := telemetry.WithSpanIDs(context.WithoutCancel(ctx), d.runSC.TraceID(), d.runSC.SpanID())
	_, span := r.runTracer.Start(rctx, "run "+run.Pipeline+" "+run.DS, trace.WithNewRoot(), trace.WithTimestamp(d.runStart()),
		trace.WithAttributes(attrs...))
	if errMsg != "" {
		span.SetStatus(codes.Error, errMsg)
	}
	span.End()
}

// runOutcome is the run's outcome label for a delivery that ended it.
func runOutcome(d *delivery) string {
	switch d.outcome {
	case outcomeOK:
		return metrics.RunCompleted
	case outcomeSkip:
		return metrics.RunSkipped
	}
	return metrics.RunFailed
}

// Metrics counts each delivery by step and outcome with its duration, the sensor's pokes and
// lease contention, retries, the rows and bytes a step moved, SLA misses, and each run that
// ended, with its duration and, for a failure, its failing step and class.
func (r *Router) Metrics(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		out, err := next(ctx, p, in)
		if m := r.metrics; m != nil {
			countDelivery(m, deliveryOf(ctx))
		}
		return out, err
	}
}

func countDelivery(m *metrics.Metrics, d *delivery) {
	label := d.outcome.label()
	if label == "" || d.outcome == outcomeRedeliver {
		return
	}
	pl, step := d.run.Pipeline, string(d.rt.Step)
	m.StepOutcomes.WithLabelValues(pl, step, label).Inc()
	m.StepDuration.WithLabelValues(pl, step, label).Observe(time.Since(d.started).Seconds())
	if d.rt.pokes() {
		switch {
		case d.outcome == outcomeWait && d.wait.Queued: // waits for its turn at the lease, not a poke
			m.LeaseContention.WithLabelValues(pl).Inc()
		case d.outcome == outcomeWait:
			m.Pokes.WithLabelValues(pl, "not_ready").Inc()
		case d.outcome == outcomeOK:
			m.Pokes.WithLabelValues(pl, "ready").Inc()
		case d.outcome == outcomeFailed || d.outcome == outcomeRetry:
			m.Pokes.WithLabelValues(pl, "failed").Inc()
		}
	}
	switch d.outcome {
	case outcomeRetry:
		m.Retries.WithLabelValues(pl, step).Inc()
	case outcomeOK:
		countMoved(m, pl, step, d.out)
	case outcomeFailed:
		if !terminal(d.rt.Consumes) {
			if d.class == event.ClassFenced {
				m.LeaseLost.WithLabelValues(pl, step).Inc()
			}
			m.RunFailures.WithLabelValues(pl, step, string(d.class)).Inc()
		}
	}
	if d.rt.Consumes == event.KindSLAMissed && (d.outcome == outcomeOK || d.outcome == outcomeFailed) {
		m.SLAMisses.WithLabelValues(pl).Inc()
	}
	if d.runEnded() {
		outcome := runOutcome(d)
		m.RunsFinished.WithLabelValues(pl, outcome).Inc()
		m.RunDuration.WithLabelValues(pl, outcome).Observe(time.Since(d.runStart()).Seconds())
	}
}

// countMoved counts the rows and bytes a step's next event says it moved.
func countMoved(m *metrics.Metrics, p, step string, out event.Event) {
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

// Lineage sends OpenLineage events: START for the run (at its first step) and for each step at
// its first delivery, then COMPLETE, ABORT (a skipped run) or FAIL for the step and, when the
// step ended it, for the run. Reports on a run's end send none.
func (r *Router) Lineage(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		d := deliveryOf(ctx)
		if r.lineage == nil || terminal(d.rt.Consumes) {
			return next(ctx, p, in)
		}
		if d.attempt == 1 {
			r.lineageStart(d)
		}
		out, err := next(ctx, p, in)
		now, e := time.Now(), r.lineage
		switch d.outcome {
		case outcomeOK:
			if d.out == nil {
				break
			}
			inputs, outputs := r.datasets.Step(d.in, d.out)
			e.Emit(e.Event(lineage.Complete, now, d.run, string(d.rt.Step), inputs, outputs, ""))
			if c, ok := d.out.(*event.Completed); ok {
				in, out := r.datasets.Run(c)
				e.Emit(e.Event(lineage.Complete, now, d.run, "", in, out, ""))
			}
		case outcomeSkip:
			e.Emit(e.Event(lineage.Abort, now, d.run, string(d.rt.Step), nil, nil, d.cause.Error()))
			e.Emit(e.Event(lineage.Abort, now, d.run, "", nil, nil, d.cause.Error()))
		case outcomeFailed:
			inputs, _ := r.datasets.Step(d.in, nil)
			e.Emit(e.Event(lineage.Fail, now, d.run, string(d.rt.Step), inputs, nil, d.cause.Error()))
			e.Emit(e.Event(lineage.Fail, now, d.run, "", nil, nil, string(d.rt.Step)+": "+d.cause.Error()))
		}
		return out, err
	}
}

// lineageStart sends START for the step (and for the run, at its first step).
func (r *Router) lineageStart(d *delivery) {
	now := time.Now()
	if d.rt.pokes() {
		r.lineage.Emit(r.lineage.Event(lineage.Start, now, d.run, "", nil, nil, ""))
	}
	inputs, _ := r.datasets.Step(d.in, nil)
	r.lineage.Emit(r.lineage.Event(lineage.Start, now, d.run, string(d.rt.Step), inputs, nil, ""))
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
