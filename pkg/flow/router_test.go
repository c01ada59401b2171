package flow_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

type harness struct {
	js     jetstream.JetStream
	nc     *nats.Conn
	router *flow.Router
	tp     *sdktrace.TracerProvider
	events chan *nats.Msg
}

func newHarness(t *testing.T, retries int) *harness {
	t.Helper()
	nc, js := testkit.Connect(t, testkit.NATS(t))
	opts := bus.Options{Stream: "T", SubjectPrefix: "etl"}
	ctx := context.Background()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	p := config.Pipeline{Name: "orders", Lease: config.Lease{TTL: time.Minute}, Retries: config.Retries{Max: &retries, Delay: 10 * time.Millisecond}}
	// deadline is orders with a short step deadline (TestStepDeadlineCancelsAndRetriesAHungStep).
	d := p
	d.Name, d.Deadlines = "deadline", map[string]time.Duration{"fetcher": 300 * time.Millisecond}
	tp := telemetry.TracerProvider("test")
	r, err := flow.NewRouter(ctx, js, opts, []config.Pipeline{p, d}, tp, telemetry.Logger(io.Discard, 0))
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *nats.Msg, 100)
	sub, err := nc.ChanSubscribe("etl.>", events)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &harness{js: js, nc: nc, router: r, tp: tp, events: events}
}

// request requests a run of pipeline for ds as every producer does (trigger.Requester).
func request(t *testing.T, js jetstream.JetStream, tp trace.TracerProvider, pipeline, ds string) event.Run {
	t.Helper()
	res, err := trigger.RequestRun(context.Background(), js, tp, bus.Options{Stream: "T", SubjectPrefix: "etl"}, pipeline, ds, "test")
	if err != nil {
		t.Fatal(err)
	}
	runs, err := runstate.New(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := runs.Get(context.Background(), pipeline, ds, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	return event.Run{RunID: res.RunID, Pipeline: pipeline, DS: ds, Trigger: "test", RequestedAt: rec.RequestedAt}
}

func (h *harness) run(t *testing.T, routes ...flow.Route) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.router.Run(ctx, routes...); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// next returns the next event of kind k, failing after a deadline.
func (h *harness) next(t *testing.T, k event.Kind) (*nats.Msg, event.Event) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-h.events:
			if !strings.Contains(m.Subject, "."+string(k)+".") {
				continue
			}
			e, err := event.Decode(k, m.Data)
			if err != nil {
				t.Fatalf("decode %s: %v", m.Subject, err)
			}
			return m, e
		case <-deadline:
			t.Fatalf("no %s event", k)
		}
	}
}

// none checks that no event of kind k arrives for a while.
func (h *harness) none(t *testing.T, k event.Kind, wait time.Duration) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-h.events:
			if strings.Contains(m.Subject, "."+string(k)+".") {
				t.Fatalf("unexpected %s", m.Subject)
			}
		case <-deadline:
			return
		}
	}
}

func toAvailable(ctx context.Context, _ *config.Pipeline, in event.Event) (event.Event, error) {
	r := in.Header()
	run := *r
	run.Fence = 7
	return &event.Available{Run: run, URL: "http://source/x.csv", Pokes: flow.Attempt(ctx)}, nil
}

func TestNextEventCarriesRunAndTrace(t *testing.T) {
	h := newHarness(t, 0)
	h.run(t, flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: toAvailable})
	req := request(t, h.js, h.tp, "orders", "2026-11-25")
	reqMsg, _ := h.next(t, event.KindRequested)
	m, e := h.next(t, event.KindAvailable)
	av := e.(*event.Available)
	if av.RunID != req.RunID || av.DS != "2026-11-25" || av.Fence != 7 {
		t.Fatalf("available = %+v", av.Run)
	}
	if len(av.Steps) != 1 || av.Steps[0].Step != "sensor" || av.Steps[0].Attempts != 1 {
		t.Fatalf("steps = %+v", av.Steps)
	}
	if m.Subject != "etl.orders.available.2026-11-25" {
		t.Fatalf("subject %s", m.Subject)
	}
	traceOf := func(m *nats.Msg) string { return strings.Split(m.Header.Get("traceparent"), "-")[1] }
	if traceOf(m) == "" || traceOf(m) != traceOf(reqMsg) {
		t.Fatalf("trace changed: %q -> %q", reqMsg.Header.Get("traceparent"), m.Header.Get("traceparent"))
	}
}

func TestTransientErrorIsRetriedThenFailsOnce(t *testing.T) {
	h := newHarness(t, 2)
	var calls atomic.Int32
	h.run(t, flow.Route{Step: "fetcher", Consumes: event.KindRequested, Handle: func(context.Context, *config.Pipeline, event.Event) (event.Event, error) {
		calls.Add(1)
		return nil, errors.New("connection refused")
	}})
	req := request(t, h.js, h.tp, "orders", "2026-11-25")
	_, e := h.next(t, event.KindFailed)
	f := e.(*event.Failed)
	if f.RunID != req.RunID || f.Step != "fetcher" || f.Attempts != 3 || f.Class != "transient" || !strings.Contains(f.Error, "connection refused") {
		t.Fatalf("failed = %+v", f)
	}
	h.none(t, event.KindFailed, 300*time.Millisecond)
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler called %d times, want 3 (1 + 2 retries)", n)
	}
	rec, err := h.router.Runs().Get(context.Background(), "orders", "2026-11-25", req.RunID)
	if err != nil || rec.State != runstate.Failed || rec.Step != "fetcher" {
		t.Fatalf("run state %+v, %v", rec, err)
	}
}

func TestPermanentErrorFailsAtOnceAndReleasesLease(t *testing.T) {
	h := newHarness(t, 3)
	ctx := context.Background()
	var calls atomic.Int32
	h.run(t, flow.Route{Step: "validator", Consumes: event.KindRequested, Handle: func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		calls.Add(1)
		return nil, flow.Permanentf("contract violation at line 3")
	}})
	req := &event.Requested{Run: event.Run{RunID: ulid.Make().String(), Pipeline: "orders", DS: "2026-11-25", RequestedAt: time.Now()}}
	if _, err := h.router.Leases().Acquire(ctx, "orders", req.RunID, req.DS, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := flow.Publish(ctx, h.js, "etl", req); err != nil {
		t.Fatal(err)
	}
	_, e := h.next(t, event.KindFailed)
	if f := e.(*event.Failed); f.Class != "permanent" || f.Attempts != 1 {
		t.Fatalf("failed = %+v", f)
	}
	if calls.Load() != 1 {
		t.Fatalf("permanent error retried: %d calls", calls.Load())
	}
	// The failed event is published before the lease is released (a crash in between must not
	// lose the event), so poll.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, held, _ := h.router.Leases().Get(ctx, "orders"); !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease not released after failure")
		}
	}
}

func TestWaitRedeliversWithoutCountingAttempts(t *testing.T) {
	h := newHarness(t, 0) // no retries: a wait must not be mistaken for a failure
	var calls atomic.Int32
	h.run(t, flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		if calls.Add(1) < 4 {
			return nil, flow.Wait(20*time.Millisecond, "source answered 404")
		}
		return toAvailable(ctx, p, in)
	}})
	request(t, h.js, h.tp, "orders", "2026-11-25")
	_, e := h.next(t, event.KindAvailable)
	if av := e.(*event.Available); av.Pokes != 4 {
		t.Fatalf("pokes = %d, want 4", av.Pokes)
	}
}

func TestPanicIsATransientError(t *testing.T) {
	h := newHarness(t, 0)
	h.run(t, flow.Route{Step: "partitioner", Consumes: event.KindRequested, Handle: func(context.Context, *config.Pipeline, event.Event) (event.Event, error) {
		panic("boom")
	}})
	request(t, h.js, h.tp, "orders", "2026-11-25")
	_, e := h.next(t, event.KindFailed)
	if f := e.(*event.Failed); !strings.Contains(f.Error, "panicked: boom") {
		t.Fatalf("failed = %+v", f)
	}
}

func TestInvalidEventIsDropped(t *testing.T) {
	h := newHarness(t, 0)
	var calls atomic.Int32
	h.run(t, flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: func(context.Context, *config.Pipeline, event.Event) (event.Event, error) {
		calls.Add(1)
		return nil, nil
	}})
	if _, err := h.js.Publish(context.Background(), "etl.orders.requested.2026-11-25", []byte(`{"run_id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	h.none(t, event.KindFailed, 500*time.Millisecond)
	if calls.Load() != 0 {
		t.Fatal("handler saw an invalid event")
	}
}

// A step parked for a retry is `retrying`, with the time of its next attempt; the next attempt
// marks it running again.
func TestRetryingStateNamesTheNextAttempt(t *testing.T) {
	h := newHarness(t, 1)
	p := config.Pipeline{Name: "orders", Lease: config.Lease{TTL: time.Minute}}
	one := 1
	p.Retries = config.Retries{Max: &one, Delay: 2 * time.Second}
	r, err := flow.NewRouter(context.Background(), h.js, bus.Options{Stream: "T", SubjectPrefix: "etl"}, []config.Pipeline{p}, h.tp, telemetry.Logger(io.Discard, 0))
	if err != nil {
		t.Fatal(err)
	}
	h.router = r
	var calls atomic.Int32
	h.run(t, flow.Route{Step: "fetcher", Consumes: event.KindRequested, Handle: func(context.Context, *config.Pipeline, event.Event) (event.Event, error) {
		calls.Add(1)
		return nil, errors.New("connection refused")
	}})
	before := time.Now()
	req := request(t, h.js, h.tp, "orders", "2026-11-25")
	deadline := time.Now().Add(5 * time.Second)
	var rec runstate.Record
	for time.Now().Before(deadline) {
		if rec, err = r.Runs().Get(context.Background(), "orders", "2026-11-25", req.RunID); err == nil && rec.State == runstate.Retrying {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rec.State != runstate.Retrying || rec.Step != "fetcher" || rec.NextAttempt.Before(before.Add(time.Second)) ||
		!strings.HasPrefix(rec.Detail, "retry 1 of 1 at ") || !strings.Contains(rec.Error, "connection refused") {
		t.Fatalf("run state while parked for its retry: %+v; want retrying fetcher with the next attempt's time", rec)
	}
	_, e := h.next(t, event.KindFailed)
	if f := e.(*event.Failed); f.Attempts != 2 {
		t.Fatalf("failed = %+v, want after 2 attempts", f)
	}
}
