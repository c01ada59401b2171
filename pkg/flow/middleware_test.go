package flow

// Each of the router's middleware alone, around a handler, on a real message from an embedded
// JetStream server: what it does before and after the handler, and what became of the message.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

type mw struct {
	r     *Router
	js    jetstream.JetStream
	m     *metrics.Metrics
	spans *tracetest.InMemoryExporter
}

var fetcherRoute = Route{Step: "fetcher", Consumes: event.KindAvailable}

func newMW(t *testing.T, retries int) *mw {
	t.Helper()
	_, js := testkit.Connect(t, testkit.NATS(t))
	opts := bus.Options{Stream: "T", SubjectPrefix: "etl"}
	ctx := context.Background()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	p := config.Pipeline{Name: "orders", Lease: config.Lease{TTL: time.Minute}, Retries: config.Retries{Max: &retries, Delay: 10 * time.Millisecond},
		Deadlines: map[string]time.Duration{"fetcher": 100 * time.Millisecond}}
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewInMemoryExporter()
	tp := telemetry.TracerProvider("test", sdktrace.WithSyncer(spans))
	r, err := NewRouter(ctx, js, opts, []config.Pipeline{p}, tp, telemetry.Logger(io.Discard, 0), WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	return &mw{r: r, js: js, m: m, spans: spans}
}

// run returns a run of orders holding the pipeline's lease: its fencing token is the lease's.
func (h *mw) run(t *testing.T) event.Run {
	t.Helper()
	id := ulid.Make().String()
	holder, err := h.r.leases.Acquire(context.Background(), "orders", id, "2026-11-25", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return event.Run{RunID: id, Pipeline: "orders", DS: "2026-11-25", Fence: holder.Fence, RequestedAt: time.Now().UTC()}
}

// deliver publishes e and takes it from rt's consumer (nth delivery after n-1 naks), returning
// the context a middleware gets for it.
func (h *mw) deliver(t *testing.T, rt Route, e event.Event, nth int) (context.Context, *delivery) {
	t.Helper()
	ctx := context.Background()
	if err := Publish(ctx, h.js, "etl", e); err != nil {
		t.Fatal(err)
	}
	if err := h.r.Bind(ctx, rt); err != nil {
		t.Fatal(err)
	}
	var msg jetstream.Msg
	for i := 0; i < nth; i++ {
		m, err := h.r.bound[rt.durable()].Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if msg = m; i < nth-1 {
			_ = m.Nak()
		}
	}
	d, err := h.r.receive(rt, msg)
	if err != nil {
		t.Fatal(err)
	}
	return h.r.withDelivery(ctx, d), d
}

func avail(run event.Run) *event.Available {
	return &event.Available{Run: run, URL: "http://source/orders.csv", Pokes: 1}
}

func returns(out event.Event, err error) Handler {
	return func(context.Context, *config.Pipeline, event.Event) (event.Event, error) { return out, err }
}

func TestRecoverTurnsAPanicIntoAnError(t *testing.T) {
	h := Chain(func(context.Context, *config.Pipeline, event.Event) (event.Event, error) { panic("boom") }, Recover("fetcher"))
	ctx := WithLogger(context.Background(), telemetry.Logger(io.Discard, 0))
	_, err := h(ctx, &config.Pipeline{}, &event.Available{})
	if err == nil || err.Error() != "fetcher panicked: boom" {
		t.Fatalf("err = %v, want the panic as an error", err)
	}
}

func TestDeadlineCancelsAHungStepButNotAWait(t *testing.T) {
	p := &config.Pipeline{Deadlines: map[string]time.Duration{"fetcher": 50 * time.Millisecond}}
	hung := func(ctx context.Context, _ *config.Pipeline, _ event.Event) (event.Event, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if _, err := Chain(hung, Deadline("fetcher"))(context.Background(), p, &event.Available{}); !errors.Is(err, ErrDeadline) {
		t.Fatalf("err = %v, want ErrDeadline", err)
	}
	waits := func(ctx context.Context, _ *config.Pipeline, _ event.Event) (event.Event, error) {
		<-ctx.Done()
		return nil, Wait(time.Second, "not yet")
	}
	var wait *WaitError
	if _, err := Chain(waits, Deadline("fetcher"))(context.Background(), p, &event.Available{}); !errors.As(err, &wait) || errors.Is(err, ErrDeadline) {
		t.Fatalf("err = %v, want the wait as it is", err)
	}
}

func TestLeaseGuardRunsTheStepOnlyUnderTheLease(t *testing.T) {
	h := newMW(t, 0)
	mine := h.run(t)
	called := 0
	step := Chain(func(context.Context, *config.Pipeline, event.Event) (event.Event, error) { called++; return nil, nil }, h.r.LeaseGuard)
	ctx, d := h.deliver(t, fetcherRoute, avail(mine), 1)
	if _, err := step(ctx, d.p, d.in); err != nil || called != 1 {
		t.Fatalf("holder: err %v, called %d; want the step run", err, called)
	}
	stale := mine
	stale.RunID, stale.DS = ulid.Make().String(), "2026-11-24"
	ctx, d = h.deliver(t, fetcherRoute, avail(stale), 1)
	if _, err := step(ctx, d.p, d.in); !errors.Is(err, lease.ErrLost) || called != 1 {
		t.Fatalf("not the holder: err %v, called %d; want lease.ErrLost and the step not run", err, called)
	}
}

func TestClassifySettlesByTheErrorsClass(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		retries int
		want    outcome
		class   event.FailureClass
	}{
		{"wait", Wait(time.Minute, "source answered 404"), 3, outcomeWait, ""},
		{"skip", ErrSkip, 3, outcomeSkip, ""},
		{"transient", errors.New("connection reset"), 3, outcomeRetry, ""},
		{"retries spent", errors.New("connection reset"), 0, outcomeFailed, event.ClassTransient},
		{"permanent", Permanentf("bad row"), 3, outcomeFailed, event.ClassPermanent},
		{"lost lease", lease.ErrLost, 3, outcomeFailed, event.ClassFenced},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newMW(t, c.retries)
			ctx, d := h.deliver(t, fetcherRoute, avail(h.run(t)), 1)
			if _, err := Chain(returns(nil, c.err), h.r.Classify)(ctx, d.p, d.in); !errors.Is(err, c.err) {
				t.Fatalf("err = %v, want the step's error passed on", err)
			}
			if d.outcome != c.want || d.class != c.class {
				t.Fatalf("outcome %d class %q, want %d %q", d.outcome, d.class, c.want, c.class)
			}
			if c.want != outcomeFailed {
				return
			}
			// The run's end is recorded before its `failed` is announced.
			rec, err := h.r.runs.Get(ctx, "orders", d.run.DS, d.run.RunID)
			if err != nil || rec.State != runstate.Failed || rec.Detail != string(c.class) {
				t.Fatalf("record %+v (%v), want failed with class %s", rec, err, c.class)
			}
			stream, err := h.js.Stream(ctx, "T")
			if err != nil {
				t.Fatal(err)
			}
			m, err := stream.GetLastMsgForSubject(ctx, event.Subject("etl", "orders", event.KindFailed, d.run.DS))
			if err != nil {
				t.Fatalf("no failed event: %v", err)
			}
			if f, err := event.Decode(event.KindFailed, m.Data); err != nil || f.(*event.Failed).Class != c.class {
				t.Fatalf("failed event %s (%v), want class %s", m.Data, err, c.class)
			}
		})
	}
}

func TestDropEndedAcksALeftoverOfAnEndedRun(t *testing.T) {
	h := newMW(t, 3)
	run := h.run(t)
	if err := h.r.runs.Update(context.Background(), run, func(r *runstate.Record) { r.State = runstate.Completed }); err != nil {
		t.Fatal(err)
	}
	called := false
	step := Chain(func(context.Context, *config.Pipeline, event.Event) (event.Event, error) {
		called = true
		return nil, nil
	}, h.r.DropEnded)
	ctx, d := h.deliver(t, fetcherRoute, avail(run), 2)
	if _, err := step(ctx, d.p, d.in); err != nil || called || d.outcome != outcomeLeftover {
		t.Fatalf("err %v, called %v, outcome %d: want the leftover dropped", err, called, d.outcome)
	}
}

func TestRunStateRecordsAWaitAndARetry(t *testing.T) {
	h := newMW(t, 3)
	run := h.run(t)
	ctx, d := h.deliver(t, fetcherRoute, avail(run), 1)
	_, _ = Chain(returns(nil, Wait(time.Minute, "source answered 404")), h.r.RunState, h.r.Classify)(ctx, d.p, d.in)
	rec, err := h.r.runs.Get(ctx, "orders", run.DS, run.RunID)
	if err != nil || rec.State != runstate.Waiting || rec.Detail != "source answered 404" || rec.Step != "fetcher" {
		t.Fatalf("after a wait: %+v (%v)", rec, err)
	}
	run.RunID, run.DS = ulid.Make().String(), "2026-11-26"
	ctx, d = h.deliver(t, fetcherRoute, avail(run), 1)
	_, _ = Chain(returns(nil, errors.New("connection reset")), h.r.RunState, h.r.Classify)(ctx, d.p, d.in)
	rec, err = h.r.runs.Get(ctx, "orders", run.DS, run.RunID)
	if err != nil || rec.State != runstate.Retrying || rec.Error != "connection reset" || rec.NextAttempt.IsZero() {
		t.Fatalf("after a transient error: %+v (%v)", rec, err)
	}
}

func TestMetricsCountTheOutcome(t *testing.T) {
	h := newMW(t, 3)
	ctx, d := h.deliver(t, fetcherRoute, avail(h.run(t)), 1)
	_, _ = Chain(returns(nil, errors.New("connection reset")), h.r.Metrics, h.r.Classify)(ctx, d.p, d.in)
	if n := testutil.ToFloat64(h.m.StepOutcomes.WithLabelValues("orders", "fetcher", metrics.OutcomeRetry)); n != 1 {
		t.Errorf("retry outcomes = %v, want 1", n)
	}
	if n := testutil.ToFloat64(h.m.Retries.WithLabelValues("orders", "fetcher")); n != 1 {
		t.Errorf("retries = %v, want 1", n)
	}
}

func TestTracingMakesTheStepAChildOfTheRun(t *testing.T) {
	h := newMW(t, 3)
	ctx, d := h.deliver(t, fetcherRoute, avail(h.run(t)), 1)
	var inTrace bool
	step := func(ctx context.Context, _ *config.Pipeline, _ event.Event) (event.Event, error) {
		inTrace = telemetry.TraceID(ctx) == d.runSC.TraceID().String()
		return nil, Permanentf("bad row")
	}
	_, _ = Chain(step, h.r.Tracing, h.r.Classify)(ctx, d.p, d.in)
	if !inTrace {
		t.Error("the step's context does not carry the run's trace")
	}
	var stepSpan, root *tracetest.SpanStub
	for i, s := range h.spans.GetSpans() {
		switch s.Name {
		case "fetcher":
			stepSpan = &h.spans.GetSpans()[i]
		case "run orders 2026-11-25":
			root = &h.spans.GetSpans()[i]
		}
	}
	if stepSpan == nil || stepSpan.Parent.SpanID() != d.runSC.SpanID() || stepSpan.SpanContext.TraceID() != d.runSC.TraceID() {
		t.Fatalf("step span %+v, want a fetcher span under the run's root", stepSpan)
	}
	if stepSpan.Status.Description != "bad row" {
		t.Errorf("step span status %+v, want the failure", stepSpan.Status)
	}
	// The failure ended the run: its root span is exported with the ids the steps used.
	if root == nil || root.SpanContext.SpanID() != d.runSC.SpanID() {
		t.Fatalf("root span %+v, want the run's root exported", root)
	}
}

func TestLineageStartsAndEndsTheStepAndTheRun(t *testing.T) {
	h := newMW(t, 3)
	file := filepath.Join(t.TempDir(), "lineage.jsonl")
	h.r.lineage = lineage.NewEmitter("sluice", "", file, nil, nil)
	sensor := Route{Step: event.StepSensor, Consumes: event.KindRequested}
	run := h.run(t)
	ctx, d := h.deliver(t, sensor, &event.Requested{Run: run}, 1)
	_, _ = Chain(returns(nil, fmt.Errorf("%w: lease held", ErrSkip)), h.r.Lineage, h.r.Classify)(ctx, d.p, d.in)
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.r.lineage.Close(closeCtx)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev lineage.RunEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.EventType+" "+ev.Job.Name)
	}
	// The run's first step starts the run; a skipped run aborts the step and the run.
	want := []string{"START orders", "START orders.sensor", "ABORT orders.sensor", "ABORT orders"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("lineage events %v, want %v", got, want)
	}
}
