package alerter

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// kindsEnv is newEnv plus the run-state bucket, for alerts that read a run's state.
func kindsEnv(t *testing.T) (*env, *runstate.Store) {
	t.Helper()
	e := newEnv(t)
	ctx := context.Background()
	if err := bus.Provision(ctx, e.js, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	runs, err := runstate.New(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	return e, runs
}

func (e *env) alerterWith(t *testing.T, p config.Pipeline, opts ...Option) *Alerter {
	t.Helper()
	a, err := New(e.cfg, []config.Pipeline{p}, e.kv, e.log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return fixedNow }
	return a
}

func setState(t *testing.T, runs *runstate.Store, r event.Run, fn func(*runstate.Record)) {
	t.Helper()
	if err := runs.Update(context.Background(), r, fn); err != nil {
		t.Fatal(err)
	}
}

// withTrace is a handler context carrying the run's span, as the router gives it.
func withTrace(traceID trace.TraceID) context.Context {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: telemetry.NewSpanID(), TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

func TestSLAMissedAlertsOnceNamingTheStuckStep(t *testing.T) {
	e, runs := kindsEnv(t)
	e.cfg.TraceURL = "https://jaeger.example.com/trace/{trace_id}"
	p := pipeline("orders", config.ChannelSlack, config.ChannelEmail)
	a := e.alerterWith(t, p, WithRuns(runs))

	late := event.Run{RunID: "01J0SAAM1SSED0000000000000", Pipeline: "orders", DS: "2024-06-01", RequestedAt: fixedNow.Add(-time.Hour)}
	setState(t, runs, late, func(r *runstate.Record) {
		r.State, r.Step, r.Detail = runstate.Waiting, "sensor", "source answered 404"
	})
	missed := &event.SLAMissed{Run: late, Deadline: fixedNow.Add(-time.Minute)}
	tid := telemetry.NewTraceID()
	for i := 0; i < 2; i++ { // a redelivery, or the deadline fired twice
		if err := a.Handle(withTrace(tid), missed); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	if err := e.alerterWith(t, p, WithRuns(runs)).Handle(withTrace(tid), missed); err != nil { // another replica
		t.Fatalf("Handle on another replica: %v", err)
	}
	wantCounts(t, e, 1, 1)
	post := e.slack.Posts()[0]
	for _, s := range []string{"SLA missed", "stuck in sensor", "https://jaeger.example.com/trace/" + tid.String()} {
		if !strings.Contains(post.Text, s) {
			t.Errorf("slack text %q lacks %q", post.Text, s)
		}
	}
	got := parseEmail(t, e.smtp.Messages()[0].Data)
	if want := "[sluice] orders missed its SLA for 2024-06-01 (stuck in sensor)"; got.Subject != want {
		t.Errorf("subject %q, want %q", got.Subject, want)
	}
	if id := got.Headers.Get("Message-Id"); id != "<"+late.RunID+".sla_missed@sluice>" {
		t.Errorf("Message-ID %q", id)
	}

	// The failure alert of the same run is another alert.
	if err := a.Handle(context.Background(), &event.Failed{Run: late, Step: "sensor", Attempts: 9, Class: "permanent", Error: "timed out"}); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, e, 2, 2)
}

func TestSLADeadlineOfARunThatCompletedInTimeSendsNothing(t *testing.T) {
	e, runs := kindsEnv(t)
	a := e.alerterWith(t, pipeline("orders", config.ChannelSlack, config.ChannelEmail), WithRuns(runs))
	deadline := fixedNow.Add(-time.Minute)
	done := event.Run{RunID: "01J0SAAD0NE000000000000000", Pipeline: "orders", DS: "2024-06-01", RequestedAt: deadline.Add(-time.Hour)}
	setState(t, runs, done, func(r *runstate.Record) {
		r.State = runstate.Completed
		r.Steps = []event.StepResult{{Step: "dbtrunner", StartedAt: deadline.Add(-10 * time.Minute), DurationMS: 30000, Attempts: 1}}
	})
	failed := event.Run{RunID: "01J0SAAFA1ED00000000000000", Pipeline: "orders", DS: "2024-06-02", RequestedAt: deadline.Add(-time.Hour)}
	setState(t, runs, failed, func(r *runstate.Record) { r.State = runstate.Failed })
	for _, r := range []event.Run{done, failed} {
		if err := a.Handle(context.Background(), &event.SLAMissed{Run: r, Deadline: deadline.Add(time.Hour)}); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	wantCounts(t, e, 0, 0)
	if !strings.Contains(e.logs.String(), "sla deadline met") {
		t.Errorf("no log line says why nothing was sent:\n%s", e.logs.String())
	}
}

type disarmed struct{ runs []string }

func (d *disarmed) Disarm(_ context.Context, r event.Run) error {
	d.runs = append(d.runs, r.RunID)
	return nil
}

func TestCompletedRunNotices(t *testing.T) {
	e, runs := kindsEnv(t)
	ctx := context.Background()
	quiet := pipeline("orders", config.ChannelSlack, config.ChannelEmail)
	quiet.SLA = &config.SLA{Within: time.Hour}
	d := &disarmed{}
	a := e.alerterWith(t, quiet, WithRuns(runs))
	a.deadlines = d

	first := event.Run{RunID: "01J0N0T1CE0000000000000001", Pipeline: "orders", DS: "2024-06-01", RequestedAt: fixedNow.Add(-time.Hour)}
	setState(t, runs, first, func(r *runstate.Record) { r.State = runstate.Completed })
	if err := a.Handle(ctx, &event.Completed{Run: first}); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, e, 0, 0) // no notices asked for
	if len(d.runs) != 1 || d.runs[0] != first.RunID {
		t.Errorf("disarmed %v, want the completed run's deadline", d.runs)
	}

	// Recovery only: a completed run after a completed run is quiet; after a failed one it is news.
	recovery := quiet
	recovery.Notices.Recovery = true
	a = e.alerterWith(t, recovery, WithRuns(runs))
	second := event.Run{RunID: "01J0N0T1CE0000000000000002", Pipeline: "orders", DS: "2024-06-02", RequestedAt: fixedNow.Add(-time.Hour)}
	if err := a.Handle(ctx, &event.Completed{Run: second}); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, e, 0, 0)
	setState(t, runs, second, func(r *runstate.Record) { r.State = runstate.Completed })
	broken := event.Run{RunID: "01J0N0T1CE0000000000000003", Pipeline: "orders", DS: "2024-06-03", RequestedAt: fixedNow.Add(-time.Hour)}
	setState(t, runs, broken, func(r *runstate.Record) { r.State = runstate.Failed })
	fixed := event.Run{RunID: "01J0N0T1CE0000000000000004", Pipeline: "orders", DS: "2024-06-03", RequestedAt: fixedNow.Add(-time.Hour)}
	for i := 0; i < 2; i++ {
		if err := a.Handle(ctx, &event.Completed{Run: fixed}); err != nil {
			t.Fatal(err)
		}
	}
	wantCounts(t, e, 1, 1)
	if got := parseEmail(t, e.smtp.Messages()[0].Data); got.Subject != "[sluice] orders recovered for 2024-06-03" || !strings.Contains(got.Text, broken.RunID) {
		t.Errorf("recovery email %q does not name the failed run:\n%s", got.Subject, got.Text)
	}

	// Success: every completed run, once.
	success := quiet
	success.Notices.Success = true
	a = e.alerterWith(t, success, WithRuns(runs))
	setState(t, runs, fixed, func(r *runstate.Record) { r.State = runstate.Completed })
	third := event.Run{RunID: "01J0N0T1CE0000000000000005", Pipeline: "orders", DS: "2024-06-04", RequestedAt: fixedNow.Add(-time.Hour)}
	for i := 0; i < 2; i++ {
		if err := a.Handle(ctx, &event.Completed{Run: third, Inserted: 5}); err != nil {
			t.Fatal(err)
		}
	}
	wantCounts(t, e, 2, 2)
	if got := parseEmail(t, e.smtp.Messages()[1].Data); got.Subject != "[sluice] orders completed for 2024-06-04" {
		t.Errorf("success subject %q", got.Subject)
	}
}
