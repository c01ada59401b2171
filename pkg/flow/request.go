package flow

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/event"
)

// Request publishes a `requested` event for a new run of pipeline for ds and returns it. The
// run's root span starts here, so every step's span joins one trace per run.
func Request(ctx context.Context, js jetstream.JetStream, tp trace.TracerProvider, prefix, pipeline, ds, trigger string) (*event.Requested, error) {
	if _, err := event.ParseDS(ds); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	req := &event.Requested{Run: event.Run{
		RunID:       ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(),
		Pipeline:    pipeline,
		DS:          ds,
		Trigger:     trigger,
		RequestedAt: now,
	}}
	ctx, span := tp.Tracer("github.com/sluice-etl/sluice/pkg/flow").Start(ctx, "run "+pipeline+" "+ds,
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
			attribute.String("sluice.pipeline", pipeline), attribute.String("sluice.ds", ds),
			attribute.String("sluice.run_id", req.RunID), attribute.String("sluice.trigger", trigger)))
	defer span.End()
	if err := Publish(ctx, js, prefix, req); err != nil {
		return nil, err
	}
	return req, nil
}
