package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

const cliConfig = `pipelines:
  - name: orders
    schedule: "@daily"
    source:
      url: http://127.0.0.1:1/data/{ds}.csv
`

// cli runs sluice commands against an embedded JetStream server. With --detach they only
// publish and read the broker, so no PostgreSQL, S3 or dbt is needed.
func cli(t *testing.T) (func(args ...string) (string, error), *runstate.Store, *trigger.States) {
	t.Helper()
	ns := testkit.NATS(t)
	t.Setenv("NATS_URL", ns.ClientURL())
	t.Setenv("PG_URL", "postgres://unused")
	path := testConfig{rest: cliConfig}.write(t)
	_, js := testkit.Connect(t, ns)
	ctx := context.Background()
	if err := bus.Provision(ctx, js, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
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
	return func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append(args[:1:1], append([]string{"--config", path}, args[1:]...)...), &out, &out)
		return out.String(), err
	}, runs, states
}

func latest(t *testing.T, runs *runstate.Store, ds string) runstate.Record {
	t.Helper()
	rec, ok, err := runs.Latest(context.Background(), "orders", ds)
	if err != nil || !ok {
		t.Fatalf("no run of %s: %v", ds, err)
	}
	return rec
}

func setState(t *testing.T, runs *runstate.Store, rec runstate.Record, s runstate.State) {
	t.Helper()
	err := runs.Update(context.Background(), event.Run{RunID: rec.RunID, Pipeline: "orders", DS: rec.DS}, func(r *runstate.Record) { r.State = s })
	if err != nil {
		t.Fatal(err)
	}
}

func TestBackfillReprocessAndDedupe(t *testing.T) {
	sluice, runs, _ := cli(t)
	out, err := sluice("backfill", "--pipeline", "orders", "--from", "2026-11-01", "--to", "2026-11-04", "--detach")
	if err != nil || !strings.Contains(out, "4 date(s): 4 requested, 0 already queued, 0 left as they were") {
		t.Fatalf("first backfill: %v\n%s", err, out)
	}
	first := map[string]runstate.Record{}
	for _, ds := range []string{"2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"} {
		first[ds] = latest(t, runs, ds)
		if first[ds].State != runstate.Queued || first[ds].Trigger != "backfill" {
			t.Errorf("%s: %+v, want queued by backfill", ds, first[ds])
		}
	}
	// Nothing has run yet: a second backfill queues nothing.
	out, err = sluice("backfill", "--pipeline", "orders", "--from", "2026-11-01", "--to", "2026-11-04", "--reprocess", "all", "--detach")
	if err != nil || !strings.Contains(out, "0 requested, 4 already queued") {
		t.Fatalf("backfill of queued dates: %v\n%s", err, out)
	}
	setState(t, runs, first["2026-11-01"], runstate.Completed)
	setState(t, runs, first["2026-11-02"], runstate.Failed)
	setState(t, runs, first["2026-11-03"], runstate.Skipped)
	for ds := range first {
		first[ds] = latest(t, runs, ds)
	}
	// 11-04 is still queued.
	for _, tc := range []struct {
		reprocess string
		requested []string
	}{
		{"none", []string{"2026-11-03"}},
		{"failed", []string{"2026-11-02", "2026-11-03"}},
		{"all", []string{"2026-11-01", "2026-11-02", "2026-11-03"}},
	} {
		out, err := sluice("backfill", "--pipeline", "orders", "--from", "2026-11-01", "--to", "2026-11-04", "--reprocess", tc.reprocess, "--detach")
		if err != nil {
			t.Fatalf("--reprocess %s: %v\n%s", tc.reprocess, err, out)
		}
		for _, ds := range tc.requested {
			rec := latest(t, runs, ds)
			if rec.RunID == first[ds].RunID || rec.State != runstate.Queued {
				t.Errorf("--reprocess %s: %s not requested again (%+v)\n%s", tc.reprocess, ds, rec, out)
			}
			setState(t, runs, rec, first[ds].State) // as it was, for the next case
			first[ds] = latest(t, runs, ds)
		}
		if rec := latest(t, runs, "2026-11-04"); rec.RunID != first["2026-11-04"].RunID {
			t.Errorf("--reprocess %s queued 2026-11-04 again while its run is queued", tc.reprocess)
		}
	}
}

func TestTriggerDetachedAndBadInput(t *testing.T) {
	sluice, runs, _ := cli(t)
	out, err := sluice("trigger", "--pipeline", "orders", "--date", "2026-11-25", "--detach")
	if err != nil || !strings.Contains(out, "1 requested") {
		t.Fatalf("trigger: %v\n%s", err, out)
	}
	rec := latest(t, runs, "2026-11-25")
	if rec.Trigger != "cli" || !strings.Contains(out, rec.RunID) {
		t.Errorf("trigger recorded %+v; output:\n%s", rec, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"trigger", "--pipeline", "refunds", "--date", "2026-11-25"}, `pipeline "refunds" is not in`},
		{[]string{"trigger", "--pipeline", "orders", "--date", "25/11/2026"}, `execution date "25/11/2026" is not YYYY-MM-DD`},
		{[]string{"backfill", "--pipeline", "orders", "--from", "2026-11-05", "--to", "2026-11-01"}, "--to 2026-11-01 is before --from 2026-11-05"},
		{[]string{"backfill", "--pipeline", "orders", "--from", "2026-11-01", "--to", "2026-11-02", "--reprocess", "some"}, `--reprocess "some": use none, failed or all`},
		{[]string{"backfill", "--pipeline", "orders", "--from", "1990-01-01", "--to", "2026-01-01"}, "backfill it in parts"},
	} {
		if out, err := sluice(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
}

func TestPauseAndUnpause(t *testing.T) {
	sluice, _, states := cli(t)
	out, err := sluice("pause", "--pipeline", "orders")
	if err != nil || !strings.Contains(out, "orders paused") {
		t.Fatalf("pause: %v\n%s", err, out)
	}
	if st, _, _ := states.Get(context.Background(), "orders"); !st.Paused {
		t.Error("pause did not set the flag")
	}
	if out, _ := sluice("pause", "--pipeline", "orders"); !strings.Contains(out, "already paused") {
		t.Errorf("second pause: %s", out)
	}
	out, err = sluice("unpause", "--pipeline", "orders")
	if err != nil || !strings.Contains(out, "requests the latest interval now") {
		t.Fatalf("unpause: %v\n%s", err, out)
	}
	if st, _, _ := states.Get(context.Background(), "orders"); st.Paused {
		t.Error("unpause did not clear the flag")
	}
	out, err = sluice("status")
	if err != nil || !strings.Contains(out, "@daily UTC") || !strings.Contains(out, "active") {
		t.Errorf("status: %v\n%s", err, out)
	}
}

func TestProgressLine(t *testing.T) {
	var out bytes.Buffer
	p := &progress{out: &out, pipeline: "orders", started: time.Now(), dates: []*dateRun{
		{ds: "2026-11-01", runID: "A", loaded: true, rec: runstate.Record{State: runstate.Completed}},
		{ds: "2026-11-02", runID: "B", loaded: true, rec: runstate.Record{State: runstate.Running, Step: "validator", Attempts: 2}},
		{ds: "2026-11-03", runID: "C", loaded: true, rec: runstate.Record{State: runstate.Waiting, Step: "sensor", Detail: "queued behind run B"}},
		{ds: "2026-11-04", runID: "D"},
		{ds: "2026-11-05"},
	}}
	p.draw(false)
	p.draw(false) // unchanged: not printed again when not a terminal
	want := "orders 2026-11-01 [✓▶…○-]\n1/4 ended  ✓1 ✗0 ⊘0 ▶1 …1 ○1\n"
	if out.String() != want {
		t.Errorf("progress:\n%q\nwant\n%q", out.String(), want)
	}
	if got := describe(p.dates[1].rec); got != "running validator (attempt 2)" {
		t.Errorf("describe: %q", got)
	}
}
