package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"
)

// A run's root span and a step that waits across several deliveries are spans whose start and
// end happen in different deliveries, often in different processes. The SDK cannot end a span
// another process started, so sluice starts such a span only when it ends it, with the ids the
// earlier deliveries already used as their children's parent. The tracer providers sluice builds
// take those ids from the context (WithSpanIDs); everything else gets random ids.

type fixedIDsKey struct{}

type fixedIDs struct {
	traceID trace.TraceID
	spanID  trace.SpanID
	used    atomic.Bool
}

// WithSpanIDs makes the next span started from ctx (by a provider from NewTracing or
// TracerProvider) get traceID and spanID. Only that one span gets them: spans started from
// the contexts derived from it get fresh ids.
func WithSpanIDs(ctx context.Context, traceID trace.TraceID, spanID trace.SpanID) context.Context {
	return context.WithValue(ctx, fixedIDsKey{}, &fixedIDs{traceID: traceID, spanID: spanID})
}

func takeFixed(ctx context.Context) *fixedIDs {
	f, ok := ctx.Value(fixedIDsKey{}).(*fixedIDs)
	if !ok || !f.used.CompareAndSwap(false, true) {
		return nil
	}
	return f
}

// idGenerator gives spans random ids, or the ids WithSpanIDs put in the context.
type idGenerator struct{}

func (idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if f := takeFixed(ctx); f != nil && f.traceID.IsValid() && f.spanID.IsValid() {
		return f.traceID, f.spanID
	}
	return NewTraceID(), NewSpanID()
}

func (idGenerator) NewSpanID(ctx context.Context, traceID trace.TraceID) trace.SpanID {
	if f := takeFixed(ctx); f != nil && f.traceID == traceID && f.spanID.IsValid() {
		return f.spanID
	}
	return NewSpanID()
}

// NewTraceID returns a random, valid trace id.
func NewTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

// NewSpanID returns a random, valid span id.
func NewSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}
