package flow_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// A run whose sensor waits three times and whose next step completes it: one sensor span with a
// poke event per delivery, both step spans children of the run's root span, and the root span
// exported once, at the end, with the id the steps used as their parent.
func TestRunIsOneTraceWithPokeEventsAndARootSpan(t *testing.T) {
	_, js := testkit.Connect(t, testkit.NATS(t))
	opts := bus.Options{Stream: "T", SubjectPrefix: "etl"}
	ctx := context.Background()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := telemetry.TracerProvider("test", sdktrace.WithSyncer(exp))
	runs := telemetry.TracerProvider(telemetry.RunService, sdktrace.WithSyncer(exp))
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	var r *flow.Router
	p := config.Pipeline{Name: "orders", Lease: config.Lease{TTL: time.Minute}, Retries: config.Retries{Delay: 10 * time.Millisecond}}
	r, err = flow.NewRouter(ctx, js, opts, []config.Pipeline{p}, tp, telemetry.Logger(io.Discard, 0),
		flow.WithMetrics(m), flow.WithRunTracer(runs))
	if err != nil {
		t.Fatal(err)
	}
	var pokes atomic.Int32
	sensor := func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		if pokes.Add(1) < 4 {
			return nil, flow.Wait(20*time.Millisecond, "source answered 404")
		}
		run := *in.Header()
		h, err := r.Leases().Acquire(ctx, p.Name, run.RunID, run.DS, p.Lease.TTL)
		if err != nil {
			return nil, err
		}
		run.Fence = h.Fence
		return &event.Available{Run: run, URL: "http://source/x.csv", Pokes: flow.Attempt(ctx)}, nil
	}
	complete := func(_ context.Context, _ *config.Pipeline, in event.Event) (event.Event, error) {
		av := in.(*event.Available)
		return &event.Completed{Run: av.Run, Object: event.Object{Bucket: "b", Key: "k", SHA256: strings.Repeat("0", 64), SourceURL: av.URL},
			Table: "public.orders", Partition: "public.orders_p20261125", Staged: 3, Inserted: 2, Updated: 1}, nil
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		_ = r.Run(runCtx, flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: sensor},
			flow.Route{Step: "dbtrunner", Consumes: event.KindAvailable, Handle: complete})
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })

	req := request(t, js, tp, "orders", "2026-11-25")
	var root, sensorSpan, stepSpan, request *tracetest.SpanStub
	deadline := time.Now().Add(10 * time.Second)
	for (root == nil || sensorSpan == nil || stepSpan == nil || request == nil) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		root, sensorSpan, stepSpan, request = nil, nil, nil, nil
		for _, s := range exp.GetSpans() {
			switch s.Name {
			case "run orders 2026-11-25":
				root = &s
			case "sensor":
				if sensorSpan != nil {
					t.Fatal("two sensor spans: the waits were not one span")
				}
				sensorSpan = &s
			case "dbtrunner":
				stepSpan = &s
			case "request orders 2026-11-25":
				request = &s
			}
		}
	}
	if root == nil || sensorSpan == nil || stepSpan == nil || request == nil {
		var names []string
		for _, s := range exp.GetSpans() {
			names = append(names, s.Name)
		}
		t.Fatalf("spans: root %v sensor %v step %v request %v; have %v", root != nil, sensorSpan != nil, stepSpan != nil, request != nil, names)
	}
	if root.Parent.IsValid() || root.Resource.String() == "" {
		t.Errorf("root span has a parent: %v", root.Parent)
	}
	for _, s := range []*tracetest.SpanStub{sensorSpan, stepSpan, request} {
		if s.SpanContext.TraceID() != root.SpanContext.TraceID() || s.Parent.SpanID() != root.SpanContext.SpanID() {
			t.Errorf("%s: trace %s parent %s, want trace %s parent %s", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID(),
				root.SpanContext.TraceID(), root.SpanContext.SpanID())
		}
	}
	if !root.StartTime.Equal(req.RequestedAt) || root.EndTime.Before(stepSpan.StartTime) {
		t.Errorf("root span %s..%s, want from the request (%s) to past the last step", root.StartTime, root.EndTime, req.RequestedAt)
	}
	var events []string
	for _, e := range sensorSpan.Events {
		if e.Name == "poke" {
			events = append(events, e.Name)
		}
	}
	if len(events) != 4 {
		t.Errorf("sensor span has %d poke events, want 4 (3 waits, then ready): %+v", len(events), sensorSpan.Events)
	}
	if !sensorSpan.StartTime.Before(sensorSpan.Events[0].Time) {
		t.Errorf("sensor span starts at %s, after its first poke %s", sensorSpan.StartTime, sensorSpan.Events[0].Time)
	}
	if got := testutil.ToFloat64(m.Pokes.WithLabelValues("orders", "not_ready")); got != 3 {
		t.Errorf("not_ready pokes = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.RunsFinished.WithLabelValues("orders", metrics.RunCompleted)); got != 1 {
		t.Errorf("completed runs = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Rows.WithLabelValues("orders", "dbtrunner", "inserted")); got != 2 {
		t.Errorf("inserted rows = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.StepOutcomes.WithLabelValues("orders", "sensor", metrics.OutcomeWait)); got != 3 {
		t.Errorf("sensor waits = %v, want 3", got)
	}
	rec, err := r.Runs().Get(ctx, "orders", "2026-11-25", req.RunID)
	if err != nil || rec.TraceID != root.SpanContext.TraceID().String() || rec.Span != nil {
		t.Errorf("run record trace %q span %+v (%v), want trace %s and no open span", rec.TraceID, rec.Span, err, root.SpanContext.TraceID())
	}
}
