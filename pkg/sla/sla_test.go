package sla_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/sla"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

var opts = bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}

func provision(t *testing.T, js jetstream.JetStream) jetstream.Consumer {
	t.Helper()
	ctx := context.Background()
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, opts.Stream, bus.ConsumerConfig(opts, "sla-test", event.KindSLAMissed))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func run(id string) event.Run {
	return event.Run{RunID: id, Pipeline: "orders", DS: "2026-11-25", RequestedAt: time.Now().UTC(), Fence: 7}
}

// next waits for the next fired deadline, failing after within.
func next(t *testing.T, c jetstream.Consumer, within time.Duration) (*event.SLAMissed, jetstream.Msg) {
	t.Helper()
	msg, err := c.Next(jetstream.FetchMaxWait(within))
	if err != nil {
		t.Fatalf("no sla_missed within %s: %v", within, err)
	}
	_ = msg.Ack()
	e, err := event.Decode(event.KindSLAMissed, msg.Data())
	if err != nil {
		t.Fatalf("fired deadline is not a valid sla_missed event: %v", err)
	}
	return e.(*event.SLAMissed), msg
}

func TestDeadlineRoundsUp(t *testing.T) {
	at := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)
	if got := sla.Deadline(config.SLA{Within: 2 * time.Hour}, at); !got.Equal(at.Add(2 * time.Hour)) {
		t.Errorf("Deadline = %v", got)
	}
	if got := sla.Deadline(config.SLA{Within: time.Second}, at.Add(300*time.Millisecond)); !got.Equal(at.Add(2 * time.Second)) {
		t.Errorf("Deadline with a fraction = %v, want the next whole second", got)
	}
}

func TestArmedDeadlineFiresOnceAtItsTimeWithTheRunsTrace(t *testing.T) {
	ns := testkit.NATS(t)
	_, js := testkit.Connect(t, ns)
	c := provision(t, js)

	r := run("01JSAA00000000000000000001")
	tid := telemetry.NewTraceID()
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: telemetry.NewSpanID(), TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	deadline := sla.Deadline(config.SLA{Within: 2 * time.Second}, time.Now())
	// Arming twice (two producers of the request, or a retry) keeps one schedule.
	for i := 0; i < 2; i++ {
		if err := sla.Arm(ctx, js, "etl", r, deadline); err != nil {
			t.Fatal(err)
		}
	}
	got, msg := next(t, c, 15*time.Second)
	if now := time.Now(); now.Before(deadline) {
		t.Errorf("fired at %v, before the deadline %v", now, deadline)
	}
	if got.RunID != r.RunID || !got.Deadline.Equal(deadline) || got.Fence != 7 {
		t.Errorf("fired %+v, want run %s with deadline %v", got, r.RunID, deadline)
	}
	if msg.Subject() != event.Subject("etl", "orders", event.KindSLAMissed, r.DS) {
		t.Errorf("fired on %s", msg.Subject())
	}
	if tp := msg.Headers().Get("traceparent"); !strings.Contains(tp, tid.String()) {
		t.Errorf("fired event's traceparent %q does not carry the run's trace %s", tp, tid)
	}
	// One-shot: nothing more (a second fire would come right away).
	if m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second)); err == nil {
		t.Fatalf("deadline fired twice: %s", m.Subject())
	}
}

func TestDeadlineSurvivesABrokerRestartAndDisarmStopsIt(t *testing.T) {
	dir := t.TempDir()
	ns := testkit.NATSAt(t, dir, -1)
	nc, js := testkit.Connect(t, ns)
	provision(t, js)
	ctx := context.Background()

	done, missed := run("01JSAA00000000000000000002"), run("01JSAA00000000000000000003")
	base := time.Now()
	if err := sla.Arm(ctx, js, "etl", done, sla.Deadline(config.SLA{Within: 2 * time.Second}, base)); err != nil {
		t.Fatal(err)
	}
	deadline := sla.Deadline(config.SLA{Within: 3 * time.Second}, base)
	if err := sla.Arm(ctx, js, "etl", missed, deadline); err != nil {
		t.Fatal(err)
	}
	// The first run completes in time: its schedule goes.
	if err := sla.Disarm(ctx, js, opts.Stream, "etl", done); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	ns = testkit.NATSAt(t, dir, -1)
	_, js = testkit.Connect(t, ns)
	c := provision(t, js)
	got, _ := next(t, c, 20*time.Second)
	if got.RunID != missed.RunID {
		t.Fatalf("fired for run %s, want only %s (the other was disarmed)", got.RunID, missed.RunID)
	}
	if time.Now().Before(deadline) {
		t.Errorf("fired before the deadline")
	}
	if m, err := c.Next(jetstream.FetchMaxWait(time.Second)); err == nil {
		t.Fatalf("a disarmed or fired deadline fired again: %s", m.Data())
	}
}

func TestJudge(t *testing.T) {
	deadline := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	step := func(name string, start time.Time, d time.Duration) event.StepResult {
		return event.StepResult{Step: name, StartedAt: start, DurationMS: d.Milliseconds(), Attempts: 1}
	}
	tests := []struct {
		name   string
		rec    *runstate.Record
		missed bool
		step   string
	}{
		{"never picked up", nil, true, ""},
		{"waiting at the sensor", &runstate.Record{State: runstate.Waiting, Step: "sensor", Detail: "source answered 404"}, true, "sensor"},
		{"retrying dbt", &runstate.Record{State: runstate.Running, Step: "dbtrunner"}, true, "dbtrunner"},
		{"completed in time", &runstate.Record{State: runstate.Completed, UpdatedAt: deadline.Add(time.Hour),
			Steps: []event.StepResult{step("dbtrunner", deadline.Add(-time.Minute), 30*time.Second)}}, false, ""},
		{"completed late", &runstate.Record{State: runstate.Completed,
			Steps: []event.StepResult{step("dbtrunner", deadline.Add(-time.Minute), 2*time.Minute)}}, true, "dbtrunner"},
		{"failed before", &runstate.Record{State: runstate.Failed, UpdatedAt: deadline.Add(-time.Minute)}, false, ""},
		{"failed after", &runstate.Record{State: runstate.Failed, UpdatedAt: deadline.Add(time.Minute)}, false, ""},
		{"skipped", &runstate.Record{State: runstate.Skipped, UpdatedAt: deadline.Add(-time.Minute)}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := sla.Judge(tt.rec, deadline)
			if v.Missed != tt.missed || v.Step != tt.step {
				t.Errorf("Judge = %+v, want missed %v at step %q", v, tt.missed, tt.step)
			}
			if !v.Missed && v.Reason == "" {
				t.Error("a deadline judged not missed gives no reason")
			}
		})
	}
}
