package flow

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/sla"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Request publishes a `requested` event for a new run of pipeline for ds and returns it. The run
// gets its trace here: a root span id that every step's span takes as parent (the router exports
// the root span itself when the run ends, from the request to the end). A short "request" span
// under it records the request in this process's traces. With WithSLA the run's deadline is
// armed in the broker right after the request is stored.
func Request(ctx context.Context, js jetstream.JetStream, tp trace.TracerProvider, prefix, pipeline, ds, trigger string, opts ...RequestOption) (*event.Requested, error) {
	if _, err := event.ParseDS(ds); err != nil {
		return nil, err
	}
	var o requestOptions
	for _, opt := range opts {
		opt(&o)
	}
	now := time.Now().UTC()
	req := &event.Requested{Run: event.Run{
		RunID:       ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(),
		Pipeline:    pipeline,
		DS:          ds,
		Trigger:     trigger,
		RequestedAt: now,
	}}
	root := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: telemetry.NewTraceID(), SpanID: telemetry.NewSpanID(), TraceFlags: trace.FlagsSampled})
	runCtx := trace.ContextWithSpanContext(ctx, root)
	_, span := tp.Tracer(tracerScope).Start(runCtx, "request "+pipeline+" "+ds, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("sluice.pipeline", pipeline), attribute.String("sluice.ds", ds),
			attribute.String("sluice.run_id", req.RunID), attribute.String("sluice.trigger", trigger)))
	defer span.End()
	ack, err := publish(runCtx, js, prefix, req)
	if err != nil {
		return nil, err
	}
	// The run's place in the lease queue, before the caller can request anything else.
	if err := lease.Join(ctx, js, pipeline, lease.Entry{Seq: ack.Sequence, DS: ds, RunID: req.RunID}); err != nil {
		return req, fmt.Errorf("run %s requested: %w", req.RunID, err)
	}
	// After the request, never before: a deadline armed for a request that was then not stored
	// would alert on a run that does not exist.
	if o.sla != nil {
		if err := sla.Arm(runCtx, js, prefix, req.Run, sla.Deadline(*o.sla, o.scheduledAt(now))); err != nil {
			return req, fmt.Errorf("run %s requested, but its SLA deadline is not armed: %w", req.RunID, err)
		}
	}
	return req, nil
}

// RequestOption adds to a request.
type RequestOption func(*requestOptions)

type requestOptions struct {
	sla       *config.SLA
	scheduled time.Time
}

func (o requestOptions) scheduledAt(requested time.Time) time.Time {
	if o.scheduled.IsZero() {
		return requested
	}
	return o.scheduled
}

// WithSLA arms the run's SLA deadline (nil: the pipeline has none). The deadline counts from
// the request, or from WithScheduledAt.
func WithSLA(s *config.SLA) RequestOption { return func(o *requestOptions) { o.sla = s } }

// WithScheduledAt sets the run's scheduled time (the end of a scheduled run's data interval),
// from which its SLA deadline counts.
func WithScheduledAt(t time.Time) RequestOption { return func(o *requestOptions) { o.scheduled = t } }
