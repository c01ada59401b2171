package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// RunService is the service name of the runs' root spans: a run belongs to no one service.
const RunService = "sluice"

// Tracing is a process's tracer providers: Provider for the spans of the services it runs, and
// Runs for the root spans of runs (service "sluice"). Both export to the same OTLP endpoint.
type Tracing struct {
	Provider *sdktrace.TracerProvider
	Runs     *sdktrace.TracerProvider
	// Exporting says whether an OTLP exporter is configured.
	Exporting bool
}

// NewTracing builds the tracer providers for service. The exporter is configured only by the
// standard OpenTelemetry variables, read through lookup (main passes os.LookupEnv; the OTLP
// exporters read the rest of theirs, such as OTEL_EXPORTER_OTLP_HEADERS, themselves):
//   - nothing is exported unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
//     is set, or when OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true;
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL choose grpc or
//     http/protobuf (the default);
//   - OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES add to the resource, OTEL_BSP_* tune the
//     batching and OTEL_TRACES_SAMPLER the sampling, as the SDK defines them.
func NewTracing(ctx context.Context, service string, lookup func(string) (string, bool)) (*Tracing, error) {
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	exp, err := exporter(ctx, get)
	if err != nil {
		return nil, err
	}
	t := &Tracing{Exporting: exp != nil}
	for _, p := range []struct {
		name string
		dst  **sdktrace.TracerProvider
	}{{service, &t.Provider}, {RunService, &t.Runs}} {
		res, err := resource.New(ctx, resource.WithAttributes(semconv.ServiceName(p.name)), resource.WithFromEnv())
		if err != nil && !errors.Is(err, resource.ErrPartialResource) {
			return nil, fmt.Errorf("tracing resource: %w", err)
		}
		opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithIDGenerator(idGenerator{})}
		switch {
		case exp != nil && p.name == RunService:
			opts = append(opts, sdktrace.WithBatcher(sharedExporter{exp}))
		case exp != nil:
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
		*p.dst = sdktrace.NewTracerProvider(opts...)
	}
	return t, nil
}

// Shutdown flushes and stops both providers.
func (t *Tracing) Shutdown(ctx context.Context) error {
	// The run provider first: the exporter it shares is shut down with the service provider.
	return errors.Join(t.Runs.Shutdown(ctx), t.Provider.Shutdown(ctx))
}

// sharedExporter lets a second provider use an exporter that the first one shuts down.
type sharedExporter struct{ sdktrace.SpanExporter }

func (sharedExporter) Shutdown(context.Context) error { return nil }

func exporter(ctx context.Context, get func(string) string) (sdktrace.SpanExporter, error) {
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return nil, nil
	}
	switch e := get("OTEL_TRACES_EXPORTER"); e {
	case "", "otlp":
	case "none":
		return nil, nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: sluice exports traces with otlp (or none)", e)
	}
	base, signal := get("OTEL_EXPORTER_OTLP_ENDPOINT"), get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if base == "" && signal == "" {
		return nil, nil
	}
	proto := get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = get("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	// The endpoint is passed explicitly, so the lookup decides it even where it is not the
	// process environment; the exporters read their other settings from the environment.
	switch proto {
	case "", "http/protobuf":
		url := signal
		if url == "" {
			url = strings.TrimRight(base, "/") + "/v1/traces"
		}
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(url))
	case "grpc":
		url := signal
		if url == "" {
			url = base
		}
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(url))
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: use grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	return exp, nil
}
