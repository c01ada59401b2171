package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/sensor"
)

// What a newcomer sees is true (issue 18): exit codes, help, attaching to a running stack, and the
// order in which queued runs take the lease. These tests run the CLI against an embedded
// JetStream server and the real sensor; no PostgreSQL, S3 or dbt is needed.

func TestHelpExitsZeroWithoutAnError(t *testing.T) {
	cmds := []string{"up", "run", "status", "trigger", "backfill", "pause", "unpause", "retention", "sample-source"}
	cases := [][]string{{"--help"}, {"-h"}, {"help"}}
	for _, c := range cmds {
		cases = append(cases, []string{c, "--help"}, []string{c, "-h"})
	}
	for _, args := range cases {
		var stdout, stderr bytes.Buffer
		code := exitCode(run(context.Background(), args, &stdout, &stderr), &stderr)
		if code != 0 || stderr.Len() != 0 || !strings.Contains(strings.ToLower(stdout.String()), "usage") {
			t.Errorf("sluice %s: exit %d, stderr %q, stdout %q; want exit 0, usage on stdout, nothing on stderr",
				strings.Join(args, " "), code, stderr.String(), stdout.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := exitCode(run(context.Background(), []string{"run", "--no-such-flag"}, &stdout, &stderr), &stderr); code != exitUsage {
		t.Errorf("a bad flag: exit %d, want %d", code, exitUsage)
	}
	if code := exitCode(run(context.Background(), []string{"frobnicate"}, &stdout, &stderr), &stderr); code != exitUsage {
		t.Errorf("an unknown command: exit %d, want %d", code, exitUsage)
	}
}

// upStack is a stand-in for a running `sluice up`: an embedded JetStream server at the config's
// nats.listen, the sensor on it, and the answer `sluice up` gives about itself.
type upStack struct {
	st     *app.Stack
	cfg    *config.Config
	path   string
	source *httptest.Server
	events chan event.Event
	logs   *syncBuffer
}

const upConfig = `pipelines:
  - name: orders
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 50ms
      timeout: %s
      soft_fail: %v
    lease:
      ttl: 10s
`

// startUp starts the stand-in with a source that answers status for every date.
func startUp(t *testing.T, status int, timeout string, softFail bool) *upStack {
	t.Helper()
	ns := testkit.NATS(t)
	u, _ := url.Parse(ns.ClientURL())
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	t.Cleanup(src.Close)
	t.Setenv("PG_URL", "postgres://unused")
	path := testConfig{natsListen: u.Host, rest: fmt.Sprintf(upConfig, src.URL, timeout, softFail)}.write(t)
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	st, err := app.Start(ctx, cfg, telemetry.Logger(logs, slog.LevelDebug), app.Options{NATSURL: ns.ClientURL(), Provision: true}, sensor.Service)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := answerInfo(st, cfg, path); err != nil {
		t.Fatal(err)
	}
	u2 := &upStack{st: st, cfg: cfg, path: path, source: src, events: make(chan event.Event, 100), logs: logs}
	if _, err := st.NC.Subscribe("etl.orders.*.*", func(m *nats.Msg) {
		parts := strings.Split(m.Subject, ".")
		if e, err := event.Decode(event.Kind(parts[2]), m.Data); err == nil {
			u2.events <- e
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = st.Wait()
		if t.Failed() {
			t.Logf("sensor logs:\n%s", logs.String())
		}
	})
	return u2
}

// sluice runs the CLI and returns its output and exit code.
func sluice(ctx context.Context, args ...string) (string, int) {
	var out syncBuffer
	code := exitCode(run(ctx, args, &out, &out), &out)
	return out.String(), code
}

func TestRunEndsAtEveryFinalStateWithItsExitCode(t *testing.T) {
	// Skipped (soft_fail after the sensor timeout): exit 3, which `sluice run` never did.
	up := startUp(t, http.StatusNotFound, "300ms", true)
	out, code := sluice(context.Background(), "run", "--config", up.path, "--pipeline", "orders", "--date", "2026-11-24", "--timeout", "30s")
	if code != exitSkipped || !strings.Contains(out, "skipped") {
		t.Errorf("sluice run of a skipped run: exit %d, want %d; output:\n%s", code, exitSkipped, out)
	}
	if !strings.Contains(out, "using the running `sluice up`") {
		t.Errorf("sluice run does not say it uses the running stack:\n%s", out)
	}
	// sluice trigger too, and its final table gives the date's final state and why.
	out, code = sluice(context.Background(), "trigger", "--config", up.path, "--pipeline", "orders", "--date", "2026-11-25", "--timeout", "30s")
	if code != exitSkipped || !regexp.MustCompile(`(?m)^2026-11-25 +\S+ +skipped +\S+ +.*soft_fail`).MatchString(out) {
		t.Errorf("sluice trigger of a skipped run: exit %d, want %d and a final table saying skipped and why; output:\n%s", code, exitSkipped, out)
	}
	// Failed (no soft_fail): exit 1.
	up = startUp(t, http.StatusNotFound, "300ms", false)
	out, code = sluice(context.Background(), "run", "--config", up.path, "--pipeline", "orders", "--date", "2026-11-24", "--timeout", "30s")
	if code != exitFailed || !strings.Contains(out, "failed") {
		t.Errorf("sluice run of a failed run: exit %d, want %d; output:\n%s", code, exitFailed, out)
	}
}

func TestRunInterruptedSaysTheRunGoesOn(t *testing.T) {
	up := startUp(t, http.StatusNotFound, "1h", false)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel) // Ctrl-C
	out, code := sluice(ctx, "run", "--config", up.path, "--pipeline", "orders", "--date", "2026-11-24")
	if code != exitStopped || !strings.Contains(out, "goes on") || strings.Contains(out, "context canceled") {
		t.Errorf("interrupted sluice run: exit %d, want %d, saying the run goes on and nothing about a cancelled context:\n%s", code, exitStopped, out)
	}
	rec, ok, err := up.st.Router.Runs().Latest(context.Background(), "orders", "2026-11-24")
	if err != nil || !ok || rec.State.Final() || rec.Trigger != "run" {
		t.Errorf("the run after the interrupt: %+v (found %v, %v); want it going on, trigger run", rec, ok, err)
	}
}

func TestRunRefusesARunningStackWithAnotherConfig(t *testing.T) {
	up := startUp(t, http.StatusNotFound, "1h", false)
	// The same pipeline with another sensor timeout: not what the running stack would run.
	text, err := os.ReadFile(up.path)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.yaml")
	writeFile(t, other, strings.Replace(string(text), "timeout: 1h", "timeout: 2h", 1))
	out, code := sluice(context.Background(), "run", "--config", other, "--pipeline", "orders", "--date", "2026-11-24")
	if code != exitUsage || !strings.Contains(out, "differs from the running `sluice up`") || !strings.Contains(out, "--attach") {
		t.Errorf("run with another config: exit %d, want %d and a refusal naming --attach:\n%s", code, exitUsage, out)
	}
	if _, ok, _ := up.st.Router.Runs().Latest(context.Background(), "orders", "2026-11-24"); ok {
		t.Error("the refused run was requested anyway")
	}
	select {
	case e := <-up.events:
		t.Errorf("the refused run published %s", e.Kind())
	case <-time.After(300 * time.Millisecond):
	}
	// --attach: it runs, with the stack's config.
	out, code = sluice(context.Background(), "run", "--config", other, "--attach", "--pipeline", "orders", "--date", "2026-11-24", "--timeout", "1s")
	if code != exitStopped || !strings.Contains(out, "--attach: the run uses that stack's config") {
		t.Errorf("run --attach: exit %d, want %d (followed until --timeout):\n%s", code, exitStopped, out)
	}
}

func TestBackfillTakesTheLeaseOldestFirst(t *testing.T) {
	up := startUp(t, http.StatusOK, "1h", false)
	ctx := context.Background()
	leases, runs := up.st.Router.Leases(), up.st.Router.Runs()
	const holder = "01JQHOLDER0000000000000000"
	if _, err := leases.Acquire(ctx, "orders", holder, "2026-10-31", time.Minute); err != nil {
		t.Fatal(err)
	}
	out, code := sluice(ctx, "backfill", "--config", up.path, "--pipeline", "orders", "--from", "2026-11-01", "--to", "2026-11-05", "--detach")
	if code != 0 {
		t.Fatalf("backfill --detach: exit %d\n%s", code, out)
	}
	// The five runs wait behind the held lease, each redelivered every poke on its own.
	testkit.Eventually(t, 10*time.Second, "the five runs wait behind the held lease", func() bool {
		recs, err := runs.Runs(ctx, "orders", "")
		n := 0
		for _, r := range recs {
			if r.State == runstate.Queued && r.Attempts >= 3 {
				n++
			}
		}
		return err == nil && n == 5
	})
	// Play the rest of each run: when its sensor step ends, complete it and free the lease.
	var mu sync.Mutex
	var order []string
	done := make(chan struct{})
	go func() {
		for e := range up.events {
			av, ok := e.(*event.Available)
			if !ok {
				continue
			}
			if err := runs.Update(ctx, av.Run, func(r *runstate.Record) { r.State = runstate.Completed }); err != nil {
				t.Error(err)
			}
			if err := leases.Release(ctx, "orders", av.RunID); err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, av.DS)
			n := len(order)
			mu.Unlock()
			if n == 5 {
				close(done)
				return
			}
		}
	}()
	if err := leases.Release(ctx, "orders", holder); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the five runs did not all take the lease")
	}
	want := []string{"2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("runs took the lease in the order %v, want oldest first %v", order, want)
	}
	if q, err := leases.Queue(ctx, "orders"); err != nil || len(q) != 0 {
		t.Errorf("queue after every run took its turn: %v (%v), want empty", q, err)
	}
}

var _ io.Writer = (*syncBuffer)(nil)

// sluice run through the six services on real PostgreSQL, S3 and dbt: while it runs, `status`
// never sees the run move backward and sees each state for what it is (waiting for the file,
// running dbt); the summary shows the wait apart from the work and where the rows went.
func TestRunSummaryShowsTheWaitAndWhereRowsWent(t *testing.T) {
	opts := samplesource.Options{Rows: 300, UpdateRatio: 0.2, Delay: time.Second}
	h, err := samplesource.Handler(opts)
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	e := startEnv(t, src.URL, 2*time.Minute)
	for k, v := range e.secret {
		t.Setenv(k, v)
	}
	runs := e.stacks[0].Router.Runs()
	ctx := context.Background()

	type seen struct {
		stage int
		what  string
	}
	var mu sync.Mutex
	var states []seen
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() { // `sluice status` polling the run
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			recs, err := runs.Runs(ctx, "orders", "2026-11-24")
			if err != nil || len(recs) == 0 {
				continue
			}
			r := recs[len(recs)-1]
			mu.Lock()
			states = append(states, seen{r.Stage, string(r.State) + " " + r.Step})
			mu.Unlock()
		}
	}()
	out1, code := sluice(ctx, "run", "--config", e.path, "--pipeline", "orders", "--date", "2026-11-24", "--timeout", "4m")
	close(stop)
	<-watched
	if code != 0 {
		t.Fatalf("sluice run 2026-11-24: exit %d\n%s", code, out1)
	}
	mu.Lock()
	var whats []string
	for i, s := range states {
		if i > 0 && s.stage < states[i-1].stage {
			t.Errorf("status saw the run move backward: %q (stage %d) after %q (stage %d)", s.what, s.stage, states[i-1].what, states[i-1].stage)
		}
		if len(whats) == 0 || whats[len(whats)-1] != s.what {
			whats = append(whats, s.what)
		}
	}
	mu.Unlock()
	for _, want := range []string{"waiting sensor", "running dbtrunner", "completed dbtrunner"} {
		if !slices.Contains(whats, want) {
			t.Errorf("status never showed %q; it showed %v", want, whats)
		}
	}

	// The wait (about a second of pokes) apart from the work, and the whole run's time.
	for _, re := range []string{
		`completed in [0-9.]+m?s \(requested `,
		`wait +[0-9.]+m?s +requested → available \([0-9.]+m?s for its turn at the lease, [0-9.]+m?s for the file: [2-9][0-9]* poke\(s\) of the source\)`,
		`work +[0-9.]+m?s +the steps below`,
		`(?m)^  dbtrunner +[0-9.]+m?s +1$`,
	} {
		if !regexp.MustCompile(re).MatchString(out1) {
			t.Errorf("summary does not match %s:\n%s", re, out1)
		}
	}
	if regexp.MustCompile(`(?m)^  sensor +`).MatchString(out1) {
		t.Errorf("the sensor's wait is listed as a step of work:\n%s", out1)
	}
	// Day 1 inserts all its rows (the sample's "updates" of 2026-11-23 orders were never loaded).
	if !regexp.MustCompile(`(?m)^  public\.orders_p20261124 +360 +0 +0 +0 +0$`).MatchString(out1) {
		t.Errorf("day 1: want 360 inserted into orders_p20261124:\n%s", out1)
	}
	// Day 2 updates 60 of day 1's orders: they move out of day 1's partition into day 2's.
	out2, code := sluice(ctx, "run", "--config", e.path, "--pipeline", "orders", "--date", "2026-11-25", "--timeout", "4m")
	if code != 0 {
		t.Fatalf("sluice run 2026-11-25: exit %d\n%s", code, out2)
	}
	for _, re := range []string{
		`(?m)^  public\.orders_p20261125 +300 +0 +60 +0 +0$`,
		`(?m)^  public\.orders_p20261124 +0 +0 +0 +60 +0$`,
	} {
		if !regexp.MustCompile(re).MatchString(out2) {
			t.Errorf("day 2 summary does not match %s:\n%s", re, out2)
		}
	}
	// A rerun of day 1 changes nothing, and says which partition holds the newer versions.
	out3, code := sluice(ctx, "run", "--config", e.path, "--pipeline", "orders", "--date", "2026-11-24", "--timeout", "4m")
	if code != 0 {
		t.Fatalf("rerun of 2026-11-24: exit %d\n%s", code, out3)
	}
	for _, re := range []string{
		`(?m)^  public\.orders_p20261124 +0 +0 +0 +0 +300$`,
		`(?m)^  public\.orders_p20261125 +0 +0 +0 +0 +60$`,
	} {
		if !regexp.MustCompile(re).MatchString(out3) {
			t.Errorf("rerun summary does not match %s:\n%s", re, out3)
		}
	}
}
