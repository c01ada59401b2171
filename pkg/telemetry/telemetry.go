// Package telemetry sets up what every service reports: a JSON slog logger that adds the run and
// trace to every line and redacts secrets, OpenTelemetry tracer providers exporting over OTLP as
// the standard OTEL_* variables say, spans for outbound HTTP, S3 and SQL calls, and the W3C trace
// context in NATS message headers, so one run is one trace across every service that handles it.
package telemetry

import (
	"context"
	"io"
	"log/slog"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Logger returns a JSON logger writing to w. Lines logged with a context carry that context's
// run (pipeline, ds, run id; see ContextWithRun) and trace and span ids.
func Logger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(&contextHandler{h: slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})})
}

// TracerProvider returns a tracer provider for service with no exporter unless opts add one.
// Spans get real trace ids, so runs can be followed in logs, and honour WithSpanIDs.
func TracerProvider(service string, opts ...sdktrace.TracerProviderOption) *sdktrace.TracerProvider {
	res := resource.NewSchemaless(semconv.ServiceName(service))
	return sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithIDGenerator(idGenerator{})}, opts...)...)
}

// Propagator is the W3C trace context propagator used on every message.
var Propagator = propagation.TraceContext{}

// HeaderCarrier adapts nats.Header to the OpenTelemetry carrier interface.
type HeaderCarrier nats.Header

func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's span context into h.
func Inject(ctx context.Context, h nats.Header) { Propagator.Inject(ctx, HeaderCarrier(h)) }

// Extract reads a span context from h into ctx.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return Propagator.Extract(ctx, HeaderCarrier(h))
}

// SpanID returns the span id of ctx's span, or "".
func SpanID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasSpanID() {
		return ""
	}
	return sc.SpanID().String()
}

// TraceID returns the trace id of ctx's span, or "".
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}
