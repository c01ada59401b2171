package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/alerter"
	"github.com/sluice-etl/sluice/services/dbtrunner"
	"github.com/sluice-etl/sluice/services/fetcher"
	"github.com/sluice-etl/sluice/services/partitioner"
	"github.com/sluice-etl/sluice/services/sensor"
	"github.com/sluice-etl/sluice/services/validator"
)

const scheduledConfig = `pipelines:
  - name: orders
    schedule: "@every 1s"
    catchup: false
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 200ms
      timeout: 2m
    lease:
      ttl: 20s
    retries:
      max: 1
      delay: 200ms
    dbt:
      select: stg_orders orders
`

// runLog records every event in arrival order, with the run records' intervals looked up
// later. One subscriber on one server sees events in the order the server stored them.
type runLog struct {
	mu   sync.Mutex
	list []loggedEvent
}

type loggedEvent struct {
	ev event.Event
	at time.Time
}

func (l *runLog) add(m *nats.Msg) {
	parts := strings.Split(m.Subject, ".")
	if len(parts) != 4 { // etl.<pipeline>.schedule and .tick are not events
		return
	}
	ev, err := event.Decode(event.Kind(parts[2]), m.Data)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, loggedEvent{ev: ev, at: time.Now()})
}

func (l *runLog) all() []loggedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedEvent(nil), l.list...)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// TestScheduleWithTwoSensorReplicas runs the whole system on real components (embedded
// JetStream, PostgreSQL, S3, dbt) with the broker firing `@every 1s` and two sensor replicas
// turning ticks into runs, while a backfill competes for the pipeline. Over more than 60 ticks,
// with both sensors down for more than 10 of them, it checks that no two runs of the pipeline
// were ever active at once and that, with catchup: false, the outage produced exactly one run:
// the one for the latest interval.
func TestScheduleWithTwoSensorReplicas(t *testing.T) {
	h, err := samplesource.Handler(samplesource.Options{Rows: 40})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	ns := testkit.NATS(t)
	s3cfg := testkit.S3(t)
	slackSrv, _ := testkit.Slack(t)
	c := testConfig{bucket: s3cfg.Bucket, dbt: true, slack: slackSrv.GetAPIURL(), smtp: testkit.SMTP(t), rest: fmt.Sprintf(scheduledConfig, src.URL)}
	path := c.write(t)
	// The CLI commands read the references from the environment.
	secrets := testSecrets(ns.ClientURL(), testkit.Postgres(t), s3cfg)
	secrets["SLACK_TOKEN"] = "xoxb-schedule-test"
	setenv(t, secrets)
	cfg := loadConfig(t, path, secrets)
	nc, js := testkit.Connect(t, ns)
	events := &runLog{}
	if _, err := nc.Subscribe("etl.>", events.add); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	log := telemetry.Logger(logs, slog.LevelInfo)
	ctx, cancel := context.WithCancel(context.Background())
	var stacks []*app.Stack // running; a stack stopped by the test is removed
	t.Cleanup(func() {
		cancel()
		for _, st := range stacks {
			_ = st.Wait()
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", logs.String())
		}
	})
	start := func(ctx context.Context, svc app.Service) *app.Stack {
		st, err := app.Start(ctx, cfg, log, app.Options{Provision: true}, svc)
		if err != nil {
			t.Fatalf("start %s: %v", svc.Name, err)
		}
		stacks = append(stacks, st)
		return st
	}
	for _, svc := range []app.Service{fetcher.Service, validator.Service, partitioner.Service, dbtrunner.Service, alerter.Service} {
		start(ctx, svc)
	}
	sensorsCtx, stopSensors := context.WithCancel(ctx)
	sensors := []*app.Stack{start(sensorsCtx, sensor.Service), start(sensorsCtx, sensor.Service)}

	// Ticks fired by the broker, counted from the stream (they are not published to core
	// subscribers); sluice's own start and unpause ticks carry no Nats-Scheduler header.
	var tickMu sync.Mutex
	var ticks []time.Time
	tc, err := js.OrderedConsumer(ctx, cfg.NATS.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{event.TickFilter("etl")}})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tc.Consume(func(m jetstream.Msg) {
		if m.Headers().Get(jetstream.SchedulerHeader) == "" {
			return
		}
		tickMu.Lock()
		ticks = append(ticks, time.Now())
		tickMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	tickCount := func() int { tickMu.Lock(); defer tickMu.Unlock(); return len(ticks) }
	waitTicks := func(n int) {
		testkit.Eventually(t, time.Duration(n)*time.Second+20*time.Second, fmt.Sprintf("%d more ticks", n), func() bool { return tickCount() >= n })
	}

	// A backfill competes with the schedule for the pipeline's one active run.
	var out bytes.Buffer
	if err := run(ctx, []string{"backfill", "--config", path, "--pipeline", "orders", "--from", "2026-10-01", "--to", "2026-10-01", "--detach"}, &out, &out); err != nil {
		t.Fatalf("backfill: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "1 requested") {
		t.Errorf("backfill output:\n%s", out.String())
	}

	waitTicks(30)
	// Outage: both sensors (and so both schedulers) stop; the broker keeps firing.
	stopSensors()
	for _, st := range sensors {
		_ = st.Wait()
	}
	stacks = stacks[:len(stacks)-2]
	down := time.Now()
	before := tickCount()
	waitTicks(before + 10)
	up := time.Now()
	sensorsCtx, stopSensors = context.WithCancel(ctx)
	defer stopSensors()
	start(sensorsCtx, sensor.Service)
	start(sensorsCtx, sensor.Service)
	// At least 30 more ticks, and the first scheduled run after the outage requested (it waits
	// for the run of the last interval before the outage to end, which can take a while: dbt).
	runs := func() []runstate.Record {
		rs, err := stacks[0].Router.Runs().Runs(ctx, "orders", "")
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	testkit.Eventually(t, 3*time.Minute, "a scheduled run is requested after the outage", func() bool {
		for _, r := range runs() {
			if r.Trigger == "schedule" && r.RequestedAt.After(up) {
				return true
			}
		}
		return false
	})
	waitTicks(before + 10 + 30)
	t.Logf("%d ticks, %d of them while both sensors were down", tickCount(), 10)

	out.Reset()
	if err := run(ctx, []string{"pause", "--config", path, "--pipeline", "orders"}, &out, &out); err != nil {
		t.Fatalf("pause: %v\n%s", err, out.String())
	}
	paused := time.Now()
	waitTicks(tickCount() + 3) // paused: these request nothing (checked below)
	all := runs()

	// Never two active runs: a run is active from its `available` (the sensor took the lease)
	// to its `completed` or `failed`; in arrival order no `available` falls inside another
	// run's active span, and fencing tokens only grow.
	var active string
	var lastFence uint64
	activeRuns, completed, refused := 0, 0, 0
	for _, le := range events.all() {
		h := le.ev.Header()
		switch le.ev.Kind() {
		case event.KindAvailable:
			if active != "" {
				t.Errorf("run %s (ds %s) became active while run %s was active", h.RunID, h.DS, active)
			}
			if h.Fence <= lastFence {
				t.Errorf("run %s has fencing token %d after %d", h.RunID, h.Fence, lastFence)
			}
			active, lastFence = h.RunID, h.Fence
			activeRuns++
			// The source always has the file, so every sensor delivery before the one that
			// passed found the lease held by another run (Pokes counts only the source checks).
			av := le.ev.(*event.Available)
			for _, st := range av.Steps {
				if st.Step == "sensor" {
					refused += st.Attempts - av.Pokes
				}
			}
		case event.KindCompleted, event.KindFailed:
			if h.RunID == active {
				active = ""
			}
			if le.ev.Kind() == event.KindCompleted {
				completed++
			} else {
				t.Errorf("run %s (ds %s) failed: %+v", h.RunID, h.DS, le.ev)
			}
		}
	}
	// However slow dbt is on the machine, runs competed: the backfill and the schedule queue
	// on the lease from the start, across both replicas.
	if activeRuns < 2 || refused < 1 {
		t.Errorf("%d runs became active and the lease refused %d deliveries: the invariant was not exercised", activeRuns, refused)
	}

	// Scheduled runs: one per interval, each the latest interval closed when it was requested.
	sched, _ := schedule.Parse("@every 1s", "UTC")
	type scheduled struct {
		rec runstate.Record
		iv  schedule.Interval
	}
	var sruns []scheduled
	seen := map[string]int{}
	for _, r := range all {
		if r.Trigger != "schedule" {
			continue
		}
		startS, endS, _ := strings.Cut(r.Interval, "/")
		s, err1 := time.Parse(time.RFC3339, startS)
		e, err2 := time.Parse(time.RFC3339, endS)
		if err1 != nil || err2 != nil {
			t.Fatalf("scheduled run %s has interval %q", r.RunID, r.Interval)
		}
		seen[r.Interval]++
		sruns = append(sruns, scheduled{rec: r, iv: schedule.Interval{Start: s, End: e}})
		if want := sched.DS(schedule.Interval{Start: s, End: e}); r.DS != want {
			t.Errorf("run %s for interval %s has ds %s, want %s", r.RunID, r.Interval, r.DS, want)
		}
		if r.RequestedAt.After(paused) {
			t.Errorf("run %s requested at %s, after the pipeline was paused", r.RunID, r.RequestedAt)
		}
	}
	for iv, n := range seen {
		if n != 1 {
			t.Errorf("interval %s has %d runs, want 1", iv, n)
		}
	}
	sort.Slice(sruns, func(i, j int) bool { return sruns[i].iv.End.Before(sruns[j].iv.End) })
	var last, first *scheduled // the last scheduled run before the outage, the first after it
	for i := range sruns {
		s := &sruns[i]
		if s.rec.RequestedAt.After(down) && s.rec.RequestedAt.Before(up) {
			t.Errorf("run %s requested while no sensor was running", s.rec.RunID)
		}
		if s.rec.RequestedAt.Before(down) {
			last = s
		} else if first == nil {
			first = s
		}
	}
	if last == nil || first == nil {
		t.Fatalf("scheduled runs: %d (before the outage: %v, after: %v)", len(sruns), last != nil, first != nil)
	}
	missed := int(first.iv.Start.Sub(last.iv.End) / time.Second)
	if missed < 10 {
		t.Errorf("after the outage the first run is for %s, only %d interval(s) after the last before it (%s)", first.iv, missed, last.iv)
	}
	// catchup: false — the run after the outage is for the latest interval at its request.
	if latest, _ := sched.Latest(first.rec.RequestedAt); !latest.End.Equal(first.iv.End) && !latest.End.Equal(first.iv.End.Add(time.Second)) {
		t.Errorf("first run after the outage is for %s, requested at %s when the latest interval was %s", first.iv, first.rec.RequestedAt, latest)
	}
	t.Logf("%d runs became active, one at a time (%d completed), the lease refused %d sensor deliveries; %d scheduled runs; after the outage: %s (%d intervals skipped)",
		activeRuns, completed, refused, len(sruns), first.iv, missed)
}
