package trigger_test

import (
	"context"
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
	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

var opts = bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}

func setup(t *testing.T) (jetstream.JetStream, *trigger.Requester) {
	t.Helper()
	_, js := testkit.Connect(t, testkit.NATS(t))
	ctx := context.Background()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	runs, err := runstate.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	return js, trigger.New(js, runs, noop.NewTracerProvider(), opts)
}

func requests(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	info, err := js.Stream(context.Background(), opts.Stream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(context.Background(), jetstream.WithSubjectFilter("etl.*.requested.*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range si.State.Subjects {
		n += int(c)
	}
	return n
}

func TestADateAlreadyQueuedIsNotQueuedTwice(t *testing.T) {
	js, r := setup(t)
	ctx := context.Background()
	first, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "cli"})
	if err != nil || !first.Queued {
		t.Fatalf("first request: %+v, %v", first, err)
	}
	rec, err := r.Runs().Get(ctx, "orders", "2026-11-25", first.RunID)
	if err != nil || rec.State != runstate.Queued || rec.Trigger != "cli" {
		t.Fatalf("run state after request: %+v, %v; want queued by cli", rec, err)
	}
	again, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "backfill"})
	if err != nil || again.Queued || again.RunID != first.RunID {
		t.Fatalf("second request while queued: %+v, %v; want the first run, not queued", again, err)
	}
	// Once the run has ended the date can be requested again.
	if err := r.Runs().Update(ctx, event.Run{RunID: first.RunID, Pipeline: "orders", DS: "2026-11-25"}, func(rec *runstate.Record) {
		rec.State = runstate.Failed
	}); err != nil {
		t.Fatal(err)
	}
	rerun, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "cli"})
	if err != nil || !rerun.Queued || rerun.RunID == first.RunID {
		t.Fatalf("request after the run failed: %+v, %v; want a new run", rerun, err)
	}
	if n := requests(t, js); n != 2 {
		t.Errorf("%d requested events in the stream, want 2", n)
	}
}

// Producers racing on the same date (two backfills, a backfill and the schedule) publish the
// same message id, so the stream keeps one request and every producer learns its run id.
func TestConcurrentRequestsForOneDateQueueOneRun(t *testing.T) {
	js, r := setup(t)
	ctx := context.Background()
	const n = 8
	results := make([]trigger.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-20", Trigger: "backfill"})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	wg.Wait()
	queued := 0
	for _, res := range results {
		if res.Queued {
			queued++
		}
		if res.RunID != results[0].RunID {
			t.Errorf("requests disagree on the run: %s vs %s", res.RunID, results[0].RunID)
		}
	}
	if queued != 1 || requests(t, js) != 1 {
		t.Errorf("%d requests say they queued, %d in the stream; want 1 and 1", queued, requests(t, js))
	}
	runs, err := r.Runs().Runs(ctx, "orders", "2026-11-20")
	if err != nil || len(runs) != 1 {
		t.Errorf("run records: %+v, %v; want one", runs, err)
	}
}

func TestScheduleStatePutIsCompareAndSet(t *testing.T) {
	js, _ := setup(t)
	ctx := context.Background()
	states, err := trigger.NewStates(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := states.Put(ctx, "orders", trigger.State{DS: "2026-11-25"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := states.Put(ctx, "orders", trigger.State{DS: "2026-11-26"}, 0); err != trigger.ErrConflict {
		t.Errorf("second create: %v, want ErrConflict", err)
	}
	if changed, err := states.SetPaused(ctx, "orders", true); err != nil || !changed {
		t.Fatalf("pause: %v %v", changed, err)
	}
	if _, err := states.Put(ctx, "orders", trigger.State{DS: "2026-11-27"}, rev); err != trigger.ErrConflict {
		t.Errorf("write at a stale revision: %v, want ErrConflict", err)
	}
	st, _, err := states.Get(ctx, "orders")
	if err != nil || !st.Paused || st.DS != "2026-11-25" {
		t.Errorf("state %+v, %v; want paused at 2026-11-25", st, err)
	}
	if changed, _ := states.SetPaused(ctx, "orders", true); changed {
		t.Error("pausing a paused pipeline reports a change")
	}
}

func pipeline(name, sched, tz string) config.Pipeline {
	return config.Pipeline{Name: name, Schedule: sched, Timezone: tz}
}

// The broker fires the installed schedule; its ticks say when it fires next, and that agrees
// with the schedule package's own cron walk (time zone included).
func TestInstalledScheduleFiresTicks(t *testing.T) {
	js, _ := setup(t)
	ctx := context.Background()
	// Fired messages are stored in the stream, not published to core subscribers: read them
	// as the scheduler does, through a consumer.
	cons, err := js.OrderedConsumer(ctx, opts.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{event.TickFilter("etl")}})
	if err != nil {
		t.Fatal(err)
	}
	ticks := make(chan jetstream.Msg, 100)
	cc, err := cons.Consume(func(m jetstream.Msg) { ticks <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	ps := []config.Pipeline{pipeline("orders", "*/2 * * * * *", "America/New_York"), pipeline("refunds", "@every 1s", "UTC"), pipeline("manual", "", "UTC")}
	if err := trigger.Install(ctx, js, opts, ps); err != nil {
		t.Fatal(err)
	}
	sched, _ := schedule.Parse("*/2 * * * * *", "America/New_York")
	seen := map[string]int{}
	deadline := time.After(10 * time.Second)
	for seen["etl.orders.tick"] < 2 || seen["etl.refunds.tick"] < 3 {
		select {
		case m := <-ticks:
			subj, h := m.Subject(), m.Headers()
			seen[subj]++
			if h.Get(jetstream.SchedulerHeader) != "etl."+subj[4:len(subj)-5]+".schedule" {
				t.Errorf("tick on %s from scheduler %q", subj, h.Get(jetstream.SchedulerHeader))
			}
			if subj != "etl.orders.tick" {
				continue
			}
			next, err := time.Parse(time.RFC3339Nano, h.Get(jetstream.ScheduleNextHeader))
			if err != nil {
				t.Fatalf("tick without a next time: %v", h)
			}
			if want, _ := sched.Next(next.Add(-2 * time.Second)); !want.Equal(next) {
				t.Errorf("server fires next at %s, the schedule package says %s", next, want)
			}
		case <-deadline:
			t.Fatalf("ticks seen: %v", seen)
		}
	}
	if seen["etl.manual.tick"] != 0 {
		t.Error("a pipeline without a schedule ticked")
	}

	// Installing again with the same schedules stores nothing new; changing one replaces it.
	s, _ := js.Stream(ctx, opts.Stream)
	before, err := s.GetLastMsgForSubject(ctx, "etl.orders.schedule")
	if err != nil {
		t.Fatal(err)
	}
	if err := trigger.Install(ctx, js, opts, ps); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.GetLastMsgForSubject(ctx, "etl.orders.schedule"); after.Sequence != before.Sequence {
		t.Errorf("reinstalling an unchanged schedule stored it again (seq %d → %d)", before.Sequence, after.Sequence)
	}
	ps[0].Schedule, ps[1].Schedule = "@daily", ""
	if err := trigger.Install(ctx, js, opts, ps); err != nil {
		t.Fatal(err)
	}
	after, err := s.GetLastMsgForSubject(ctx, "etl.orders.schedule")
	if err != nil || after.Header.Get(jetstream.ScheduleHeader) != "0 0 0 * * *" {
		t.Errorf("changed schedule stored as %v, %v", after, err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, "etl.refunds.schedule"); err == nil {
		t.Error("a removed schedule is still stored")
	}
	si, _ := s.Info(ctx, jetstream.WithSubjectFilter("etl.orders.schedule"))
	if si.State.Subjects["etl.orders.schedule"] != 1 {
		t.Errorf("orders has %d schedule messages, want 1 (rolled up)", si.State.Subjects["etl.orders.schedule"])
	}
}

// A scheduled run's SLA deadline is armed in the broker, counted from the end of its interval.
func TestScheduledRequestArmsItsSLAFromTheIntervalEnd(t *testing.T) {
	js, r := setup(t)
	ctx := context.Background()
	iv := schedule.Interval{Start: time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC), End: time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)}
	res, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "schedule", Interval: iv, SLA: &config.SLA{Within: 2 * time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, opts.Stream)
	m, err := s.GetLastMsgForSubject(ctx, event.DeadlineSubject("etl", "orders", "2026-11-25", res.RunID))
	if err != nil {
		t.Fatalf("no deadline armed: %v", err)
	}
	if got := m.Header.Get(jetstream.ScheduleHeader); got != "@at 2026-11-25T16:00:00Z" {
		t.Errorf("deadline schedule %q, want @at 2026-11-25T16:00:00Z (interval end + 2h)", got)
	}
}

// A run that took the lease and lost it without an end (its process died where nothing will
// finish it) is lost: a request for its date marks it so and queues a new run, instead of
// refusing the date as "already queued" forever. A run that still holds the lease is pending.
func TestALostRunIsRecordedAndItsDateRequestedAgain(t *testing.T) {
	js, r := setup(t)
	ctx := context.Background()
	first, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "cli"})
	if err != nil || !first.Queued {
		t.Fatalf("first request: %+v, %v", first, err)
	}
	run := event.Run{RunID: first.RunID, Pipeline: "orders", DS: "2026-11-25"}
	// The run passed the sensor (it holds the lease, token recorded), then its process died.
	leases, err := lease.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	h, err := leases.Acquire(ctx, "orders", first.RunID, "2026-11-25", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Runs().Update(ctx, run, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Fence = runstate.Running, "validator", h.Fence
	}); err != nil {
		t.Fatal(err)
	}
	if again, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "cli"}); err != nil || again.Queued {
		t.Fatalf("request while the run holds its lease: %+v, %v; want it pending", again, err)
	}
	if err := leases.Release(ctx, "orders", first.RunID); err != nil { // the lease expired
		t.Fatal(err)
	}
	again, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "cli"})
	if err != nil || !again.Queued || again.RunID == first.RunID {
		t.Fatalf("request after the lease is gone: %+v, %v; want a new run queued", again, err)
	}
	rec, err := r.Runs().Get(ctx, "orders", "2026-11-25", first.RunID)
	if err != nil || rec.State != runstate.Lost || !rec.State.Final() {
		t.Fatalf("the orphaned run is %s (%v), want lost", rec.State, err)
	}
}

func TestRequestArmsTheSLADeadline(t *testing.T) {
	js, r := setup(t)
	ctx := context.Background()
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		t.Fatal(err)
	}

	plain, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-24", Trigger: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, event.DeadlineSubject("etl", "orders", "2026-11-24", plain.RunID)); err != jetstream.ErrMsgNotFound {
		t.Errorf("a pipeline without an SLA got a deadline (%v)", err)
	}

	// The run's scheduled time is the end of its data interval.
	scheduled := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	req, err := r.Request(ctx, trigger.Request{Pipeline: "orders", DS: "2026-11-25", Trigger: "test",
		SLA: &config.SLA{Within: 2 * time.Hour}, Interval: schedule.Interval{Start: scheduled.Add(-24 * time.Hour), End: scheduled}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, event.DeadlineSubject("etl", "orders", "2026-11-25", req.RunID))
	if err != nil {
		t.Fatalf("no deadline armed: %v", err)
	}
	want := "@at " + scheduled.Add(2*time.Hour).UTC().Format(time.RFC3339)
	if got := m.Header.Get(jetstream.ScheduleHeader); got != want {
		t.Errorf("schedule %q, want %q (2h after the scheduled time)", got, want)
	}
	if got := m.Header.Get(jetstream.ScheduleTargetHeader); got != "etl.orders.sla_missed.2026-11-25" {
		t.Errorf("schedule target %q", got)
	}
}
