package trigger_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// sched is a scheduler on a real embedded JetStream server. The tests call Tick with chosen
// reference times instead of waiting for the clock; the broker's own ticks are exercised in
// TestBrokerTicksRequestRuns and in cmd/sluice's acceptance test.
type sched struct {
	*trigger.Scheduler
	js     jetstream.JetStream
	req    *trigger.Requester
	states *trigger.States
}

func newSched(t *testing.T, p config.Pipeline) *sched {
	t.Helper()
	_, js := testkit.Connect(t, testkit.NATS(t))
	return schedOn(t, js, p)
}

func schedOn(t *testing.T, js jetstream.JetStream, p config.Pipeline) *sched {
	t.Helper()
	ctx := context.Background()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	runs, err := runstate.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	states, err := trigger.NewStates(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if p.Timezone == "" {
		p.Timezone = "UTC"
	}
	leases, err := lease.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if p.Sensor.PokeInterval == 0 {
		p.Sensor.PokeInterval = 200 * time.Millisecond
	}
	req := trigger.New(js, runs, noop.NewTracerProvider(), opts)
	s, err := trigger.NewScheduler(req, states, leases, []config.Pipeline{p}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &sched{Scheduler: s, js: js, req: req, states: states}
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func (s *sched) tick(t *testing.T, ref, ended string) trigger.Outcome {
	t.Helper()
	out, err := s.Tick(context.Background(), "orders", ts(ref), ended)
	if err != nil {
		t.Fatalf("tick at %s: %v", ref, err)
	}
	return out
}

// end records a run's end as the router does after its last step.
func (s *sched) end(t *testing.T, ds, runID string, state runstate.State) {
	t.Helper()
	if err := s.req.Runs().Update(context.Background(), event.Run{RunID: runID, Pipeline: "orders", DS: ds}, func(r *runstate.Record) {
		r.State = state
	}); err != nil {
		t.Fatal(err)
	}
}

// requested returns the requested events in the stream, in order.
func (s *sched) requested(t *testing.T) []*event.Requested {
	t.Helper()
	ctx := context.Background()
	cons, err := s.js.OrderedConsumer(ctx, opts.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"etl.*.requested.*"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*event.Requested
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		ev, err := event.Decode(event.KindRequested, msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.(*event.Requested))
	}
}

func TestCatchupFalseRunsOnlyTheLatestIntervalAfterAnOutage(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@hourly"})
	first := s.tick(t, "2026-11-25T10:00:00.3Z", "")
	if !first.Requested || first.Interval.String() != "2026-11-25T09:00:00Z/2026-11-25T10:00:00Z" || first.DS != "2026-11-25" {
		t.Fatalf("first tick: %+v", first)
	}
	// The run has not ended: the next tick requests nothing (one scheduled run at a time).
	if out := s.tick(t, "2026-11-25T11:00:00.2Z", ""); out.Requested || out.RunID != first.RunID {
		t.Fatalf("tick while the run is active: %+v", out)
	}
	s.end(t, first.DS, first.RunID, runstate.Completed)
	// Ten intervals pass with no scheduler; then the run's end event and every tick that piled
	// up are delivered at once.
	var outs []trigger.Outcome
	for i := 0; i < 10; i++ {
		outs = append(outs, s.tick(t, "2026-11-25T21:00:01Z", first.RunID))
	}
	if !outs[0].Requested || outs[0].Interval.String() != "2026-11-25T20:00:00Z/2026-11-25T21:00:00Z" {
		t.Fatalf("first tick after the outage: %+v, want the latest interval 20:00-21:00", outs[0])
	}
	for _, o := range outs[1:] {
		if o.Requested {
			t.Errorf("a piled-up tick requested another run: %+v", o)
		}
	}
	reqs := s.requested(t)
	if len(reqs) != 2 || reqs[1].RunID != outs[0].RunID || reqs[1].Trigger != "schedule" {
		t.Errorf("requested events: %d, want 2 (the first interval, then only the latest)", len(reqs))
	}
	rec, err := s.req.Runs().Get(context.Background(), "orders", "2026-11-25", outs[0].RunID)
	if err != nil || rec.State != runstate.Queued || rec.Interval != "2026-11-25T20:00:00Z/2026-11-25T21:00:00Z" || rec.Trigger != "schedule" {
		t.Errorf("run state of the scheduled run: %+v, %v", rec, err)
	}
}

func TestCatchupTrueRequestsEveryMissedIntervalOldestFirst(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@daily", Catchup: true})
	first := s.tick(t, "2026-11-20T00:00:00.5Z", "")
	if first.DS != "2026-11-19" || !first.Requested {
		t.Fatalf("first tick: %+v", first)
	}
	// Down from the 20th to the 25th: the late tick requests the oldest missed day; each run's
	// end (its completed or failed event) requests the next, whatever the run's outcome.
	ended := first.RunID
	var got []string
	for i := 0; i < 10; i++ {
		out := s.tick(t, "2026-11-25T08:00:00Z", ended)
		if !out.Requested {
			if out.Reason != "up to date" {
				t.Fatalf("catch-up stopped: %+v", out)
			}
			break
		}
		got = append(got, out.DS)
		state := runstate.Completed
		if out.DS == "2026-11-22" {
			state = runstate.Failed
		}
		s.end(t, out.DS, out.RunID, state)
		ended = out.RunID
	}
	want := []string{"2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24"}
	if len(got) != len(want) {
		t.Fatalf("caught up %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("caught up %v, want %v", got, want)
		}
	}
}

func TestStartDateBoundsTheCatchup(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@daily", Catchup: true, StartDate: "2026-11-23"})
	out := s.tick(t, "2026-11-25T08:00:00Z", "")
	if out.DS != "2026-11-23" {
		t.Fatalf("first run with no history: ds %s, want start_date 2026-11-23", out.DS)
	}
	s2 := newSched(t, config.Pipeline{Name: "orders", Schedule: "@daily", StartDate: "2026-12-01"})
	if out := s2.tick(t, "2026-11-25T08:00:00Z", ""); out.Requested {
		t.Errorf("requested %s before start_date", out.DS)
	}
}

func TestPausedPipelineRequestsNothingAndCatchesUpWhenUnpaused(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@daily", Catchup: true})
	first := s.tick(t, "2026-11-20T00:00:01Z", "")
	s.end(t, first.DS, first.RunID, runstate.Completed)
	if _, err := s.states.SetPaused(context.Background(), "orders", true); err != nil {
		t.Fatal(err)
	}
	if out := s.tick(t, "2026-11-23T00:00:01Z", first.RunID); out.Requested || out.Reason != "paused" {
		t.Fatalf("tick while paused: %+v", out)
	}
	if _, err := s.states.SetPaused(context.Background(), "orders", false); err != nil {
		t.Fatal(err)
	}
	if out := s.tick(t, "2026-11-23T00:00:02Z", first.RunID); out.DS != "2026-11-20" {
		t.Errorf("after unpausing, catch-up starts at %s, want the first day missed, 2026-11-20", out.DS)
	}
}

func TestIntervalOfADateAlreadyQueuedGoesToThatRun(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@daily"})
	manual, err := s.req.Request(context.Background(), trigger.Request{Pipeline: "orders", DS: "2026-11-24", Trigger: "cli"})
	if err != nil {
		t.Fatal(err)
	}
	out := s.tick(t, "2026-11-25T00:00:01Z", "")
	if out.Requested || !out.Coalesced || out.RunID != manual.RunID {
		t.Fatalf("tick for a date already queued: %+v, want it given to run %s", out, manual.RunID)
	}
	if n := len(s.requested(t)); n != 1 {
		t.Errorf("%d requests, want the manual one only", n)
	}
	// That run now serves the schedule: until it ends, nothing more is requested.
	if out := s.tick(t, "2026-11-26T00:00:01Z", ""); out.Requested {
		t.Errorf("requested %+v while the run serving the last interval is queued", out)
	}
}

// A scheduler that wrote its plan and died before publishing: the next tick publishes the same
// run, and publishing it twice leaves one request.
func TestPlannedButUnpublishedRequestIsPublishedByTheNextTick(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@daily"})
	planned, _, err := s.req.Plan(context.Background(), trigger.Request{Pipeline: "orders", DS: "2026-11-24", Trigger: "schedule"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.states.Put(context.Background(), "orders", trigger.State{Start: ts("2026-11-24T00:00:00Z"), End: ts("2026-11-25T00:00:00Z"),
		DS: "2026-11-24", RunID: planned.RunID, MsgID: planned.MsgID, RequestedAt: planned.RequestedAt}, 0); err != nil {
		t.Fatal(err)
	}
	out := s.tick(t, "2026-11-25T00:00:03Z", "")
	if out.RunID != planned.RunID {
		t.Fatalf("tick after the crash: %+v, want run %s", out, planned.RunID)
	}
	if _, err := s.req.Publish(context.Background(), planned); err != nil { // the copy that did get out
		t.Fatal(err)
	}
	reqs := s.requested(t)
	if len(reqs) != 1 || reqs[0].RunID != planned.RunID {
		t.Errorf("requests %d, want the planned run once", len(reqs))
	}
}

// Replicas receive ticks at the same time: each interval is requested once.
func TestReplicasRequestEachIntervalOnce(t *testing.T) {
	_, js := testkit.Connect(t, testkit.NATS(t))
	p := config.Pipeline{Name: "orders", Schedule: "@every 1s"}
	replicas := []*sched{schedOn(t, js, p), schedOn(t, js, p), schedOn(t, js, p)}
	base := ts("2026-11-25T10:00:00Z")
	ended := ""
	for i := 1; i <= 20; i++ {
		ref := base.Add(time.Duration(i)*time.Second + 100*time.Millisecond)
		var wg sync.WaitGroup
		outs := make([]trigger.Outcome, len(replicas)*2)
		for j := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := replicas[j%len(replicas)].Tick(context.Background(), "orders", ref, ended)
				if err != nil {
					t.Error(err)
				}
				outs[j] = out
			}()
		}
		wg.Wait()
		n := 0
		var runID string
		for _, o := range outs {
			if o.Requested {
				n++
				runID = o.RunID
			}
		}
		if n != 1 {
			t.Fatalf("tick %d: %d replicas requested a run, want exactly 1: %+v", i, n, outs)
		}
		replicas[0].end(t, "2026-11-25", runID, runstate.Completed)
		ended = runID // as each run's completed event says
	}
	if got := len(replicas[0].requested(t)); got != 20 {
		t.Errorf("%d requests for 20 intervals", got)
	}
}

// The schedule does not jump the lease queue: while another run holds the pipeline it requests
// nothing, and a run that has just ended leaves the freed lease to the runs queued on it.
func TestScheduleLeavesTheLeaseToQueuedRuns(t *testing.T) {
	s := newSched(t, config.Pipeline{Name: "orders", Schedule: "@every 1s", Sensor: config.Sensor{PokeInterval: time.Second}})
	ctx := context.Background()
	leases, err := lease.New(ctx, s.js)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := leases.Acquire(ctx, "orders", "01M8A7J9E2JAM2KTNT7D11WRS7", "2026-10-01", time.Minute); err != nil {
		t.Fatal(err)
	}
	if out, _ := s.Tick(ctx, "orders", now, ""); out.Requested {
		t.Fatalf("requested %+v while a backfill run holds the pipeline", out)
	}
	if err := leases.Release(ctx, "orders", "01M8A7J9E2JAM2KTNT7D11WRS7"); err != nil {
		t.Fatal(err)
	}
	first, err := s.Tick(ctx, "orders", time.Now(), "")
	if err != nil || !first.Requested {
		t.Fatalf("tick with the lease free: %+v, %v", first, err)
	}
	s.end(t, first.DS, first.RunID, runstate.Completed)
	if out, _ := s.Tick(ctx, "orders", time.Now(), ""); out.Requested {
		t.Errorf("requested %+v right after the last run ended, ahead of runs queued on the lease", out)
	}
	ended := time.Now()
	for {
		out, err := s.Tick(ctx, "orders", time.Now(), "")
		if err != nil {
			t.Fatal(err)
		}
		if out.Requested {
			break
		}
		if time.Since(ended) > 10*time.Second {
			t.Fatalf("after the queued runs' turn the schedule requested nothing: %+v", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The turn is the longest a queued run waits between looks (poke 1s) and a margin.
	if waited := time.Since(ended); waited < time.Second {
		t.Errorf("the next scheduled run came %s after the last ended, before queued runs could look", waited)
	}
}
