package flow_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// A step's message that comes back after its run ended (its process died after publishing,
// before acking) is dropped: not handled again, not failed.
func TestLeftoverDeliveryOfAnEndedRunIsDropped(t *testing.T) {
	h := newHarness(t, 3)
	var calls atomic.Int32
	h.run(t, flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		if calls.Add(1) == 1 {
			// The run ends elsewhere while this delivery is out; then this one "fails".
			if err := h.router.Runs().Update(ctx, *in.Header(), func(r *runstate.Record) { r.State = runstate.Completed }); err != nil {
				t.Error(err)
			}
			return nil, errors.New("connection reset")
		}
		return toAvailable(ctx, p, in)
	}})
	request(t, h.js, h.tp, "orders", "2026-11-25")
	h.none(t, event.KindAvailable, time.Second)
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want once: the redelivery of an ended run must be dropped", n)
	}
	h.none(t, event.KindFailed, 100*time.Millisecond)
}

// The alerter's consumer of a fired SLA deadline reads where the run is stuck: the router must
// not have marked the run as running at the alerter first.
func TestReportsOnARunLeaveItsStateAlone(t *testing.T) {
	h := newHarness(t, 3)
	ctx := context.Background()
	run := event.Run{RunID: "01JSTATE000000000000000000", Pipeline: "orders", DS: "2026-11-25", RequestedAt: time.Now().UTC()}
	if err := h.router.Runs().Update(ctx, run, func(r *runstate.Record) { r.State, r.Step = runstate.Waiting, "sensor" }); err != nil {
		t.Fatal(err)
	}
	seen := make(chan runstate.Record, 1)
	h.run(t, flow.Route{Step: "alerter", Durable: "alerter-sla", Consumes: event.KindSLAMissed, Handle: func(ctx context.Context, _ *config.Pipeline, in event.Event) (event.Event, error) {
		rec, err := h.router.Runs().Get(ctx, "orders", run.DS, run.RunID)
		if err != nil {
			return nil, err
		}
		seen <- rec
		return nil, nil
	}})
	if err := flow.Publish(ctx, h.js, "etl", &event.SLAMissed{Run: run, Deadline: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	select {
	case rec := <-seen:
		if rec.State != runstate.Waiting || rec.Step != "sensor" {
			t.Errorf("the deadline's handler saw the run %s at %s, want waiting at sensor", rec.State, rec.Step)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sla_missed not handled")
	}
}

// retries.steps overrides the pipeline's policy for one step, and the delay grows by the backoff.
func TestRetryPolicyPerStepAndBackoff(t *testing.T) {
	nc, js := testkit.Connect(t, testkit.NATS(t))
	ctx := context.Background()
	opts := bus.Options{Stream: "T", SubjectPrefix: "etl"}
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	three, none := 3, 0
	p := config.Pipeline{Name: "orders", Lease: config.Lease{TTL: time.Minute}, Retries: config.Retries{
		Max: &three, Delay: 100 * time.Millisecond, Backoff: 4, MaxDelay: 5 * time.Second,
		Steps: map[string]config.Retries{"fetcher": {Max: &none}},
	}}
	r, err := flow.NewRouter(ctx, js, opts, []config.Pipeline{p}, telemetry.TracerProvider("test"), telemetry.Logger(io.Discard, 0))
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	attempts := make(chan struct{}, 10)
	failing := func(ctx context.Context, _ *config.Pipeline, in event.Event) (event.Event, error) {
		if in.Kind() == event.KindRequested {
			at = append(at, time.Now())
		}
		attempts <- struct{}{}
		return nil, errors.New("503 from the source")
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		_ = r.Run(rctx, flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: failing, Workers: 1},
			flow.Route{Step: "fetcher", Consumes: event.KindAvailable, Handle: failing, Workers: 1})
		close(done)
	}()
	defer func() { cancel(); <-done }()

	sub, err := nc.SubscribeSync("etl.orders.failed.>")
	if err != nil {
		t.Fatal(err)
	}
	request(t, js, telemetry.TracerProvider("test"), "orders", "2026-11-24")
	m, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatal("the sensor's run never failed")
	}
	e, _ := event.Decode(event.KindFailed, m.Data)
	if f := e.(*event.Failed); f.Step != "sensor" || f.Attempts != 4 {
		t.Errorf("failed %+v, want the sensor after 4 attempts", f)
	}
	// Waits of 100ms, 400ms, 1.6s: each retry waits backoff times longer than the one before.
	if len(at) == 4 {
		if first, last := at[1].Sub(at[0]), at[3].Sub(at[2]); last < 10*first || last < 1500*time.Millisecond {
			t.Errorf("waits %v then %v, want the third about 16 times the first", first, last)
		}
	} else {
		t.Errorf("%d sensor attempts, want 4", len(at))
	}

	// The fetcher's override: no retries, so its first failure ends the run.
	run := event.Run{RunID: "01JFETCH000000000000000000", Pipeline: "orders", DS: "2026-11-25", RequestedAt: time.Now().UTC()}
	holder, err := r.Leases().Acquire(ctx, "orders", run.RunID, run.DS, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	run.Fence = holder.Fence
	if err := flow.Publish(ctx, js, "etl", &event.Available{Run: run, URL: "http://source/x.csv", Pokes: 1}); err != nil {
		t.Fatal(err)
	}
	m, err = sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatal("the fetcher's run never failed")
	}
	e, _ = event.Decode(event.KindFailed, m.Data)
	if f := e.(*event.Failed); f.Step != "fetcher" || f.Attempts != 1 {
		t.Errorf("failed %+v, want the fetcher after 1 attempt", f)
	}
}
