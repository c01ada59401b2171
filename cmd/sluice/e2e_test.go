package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/slack-go/slack/slacktest"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// env is the whole system on real components: one embedded JetStream server, and each of the
// six services started as its own stack with its own connection, so they meet only on JetStream.
type env struct {
	cfg    *config.Config
	path   string // the config file
	nc     *nats.Conn
	stacks []*app.Stack
	pg     string
	slack  *testkit.SlackRecorder
	smtp   *testkit.SMTPServer
	logs   *syncBuffer
	events *eventLog
	secret map[string]string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// eventLog records every event of the test in arrival order.
type eventLog struct {
	mu   sync.Mutex
	list []event.Event
	// crafted is set by tests that publish invalid events on purpose: those are skipped.
	crafted atomic.Bool
}

func (l *eventLog) add(m *nats.Msg) {
	parts := strings.Split(m.Subject, ".")
	if len(parts) != 4 { // schedule and tick messages are not run events
		return
	}
	e, err := event.Decode(event.Kind(parts[2]), m.Data)
	if err != nil && l.crafted.Load() {
		return
	}
	if err != nil {
		panic(fmt.Sprintf("event on %s does not match its schema: %v", m.Subject, err))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, e)
}

func (l *eventLog) all() []event.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]event.Event(nil), l.list...)
}

// find returns the events of run id of kind k.
func (l *eventLog) find(runID string, k event.Kind) []event.Event {
	var out []event.Event
	for _, e := range l.all() {
		if e.Header().RunID == runID && e.Kind() == k {
			out = append(out, e)
		}
	}
	return out
}

// e2eConfig is the system of startEnv: every alert channel, and orders from sourceURL with a
// sensor that gives up after sensorTimeout.
func e2eConfig(t *testing.T, bucket string, slack *slacktest.Server, smtp *testkit.SMTPServer, sourceURL string, sensorTimeout time.Duration) testConfig {
	return testConfig{bucket: bucket, dbt: true, slack: slack.GetAPIURL(), smtp: smtp,
		alerts: "  run_url: http://sluice.test/runs/{pipeline}/{ds}/{run_id}\n",
		rest: fmt.Sprintf(`pipelines:
  - name: orders
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 200ms
      timeout: %s
    lease:
      ttl: 20s
    retries:
      max: 1
      delay: 200ms
    dbt:
      select: stg_orders orders
`, sourceURL, sensorTimeout)}
}

func startEnv(t *testing.T, sourceURL string, sensorTimeout time.Duration) *env {
	t.Helper()
	ns := testkit.NATS(t)
	s3cfg := testkit.S3(t)
	slackSrv, slack := testkit.Slack(t)
	e := &env{pg: testkit.Postgres(t), smtp: testkit.SMTP(t), slack: slack, logs: &syncBuffer{}, events: &eventLog{}}
	e.start(t, ns, s3cfg, e2eConfig(t, s3cfg.Bucket, slackSrv, e.smtp, sourceURL, sensorTimeout).text(t))
	return e
}

// start writes the config text, loads it with the test's secrets and starts the six services.
func (e *env) start(t *testing.T, ns *server.Server, s3cfg config.S3, text string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeFile(t, path, text)
	e.secret = testSecrets(ns.ClientURL(), e.pg, s3cfg)
	e.secret["SLACK_TOKEN"] = "xoxb-e2e-secret-token"
	cfg := loadConfig(t, path, e.secret)
	e.cfg, e.path = cfg, path
	nc, _ := testkit.Connect(t, ns)
	e.nc = nc
	if _, err := nc.Subscribe("etl.>", e.events.add); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := telemetry.Logger(e.logs, slog.LevelDebug)
	for _, svc := range allServices {
		st, err := app.Start(ctx, cfg, log, app.Options{Provision: true}, svc)
		if err != nil {
			cancel()
			t.Fatalf("start %s: %v", svc.Name, err)
		}
		e.stacks = append(e.stacks, st)
	}
	t.Cleanup(func() {
		cancel()
		for _, st := range e.stacks {
			_ = st.Wait()
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", e.logs.String())
		}
	})
}

func (e *env) request(t *testing.T, ds string) string {
	t.Helper()
	st := e.stacks[0]
	req, err := trigger.RequestRun(context.Background(), st.JS, st.Tracer, app.BusOptions(st.Config), "orders", ds, "test")
	if err != nil {
		t.Fatal(err)
	}
	return req.RunID
}

// wait returns the run's final event (completed or failed).
func (e *env) wait(t *testing.T, runID string, within time.Duration) event.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, k := range []event.Kind{event.KindCompleted, event.KindFailed} {
			if got := e.events.find(runID, k); len(got) > 0 {
				return got[0]
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("run %s did not finish within %s", runID, within)
	return nil
}

type row struct {
	customer int32
	amount   string
	updated  time.Time
	loadDate string
}

func (e *env) orders(t *testing.T) map[int64]row {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.pg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('public.orders') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return map[int64]row{}
	}
	rows, err := conn.Query(ctx, "SELECT order_id, customer_id, amount::text, updated_at, load_date::text FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]row{}
	for rows.Next() {
		var id int64
		var r row
		if err := rows.Scan(&id, &r.customer, &r.amount, &r.updated, &r.loadDate); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[id]; dup {
			t.Fatalf("order_id %d appears twice in orders", id)
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// expected computes the final table independently of sluice: the latest version of every order
// over the given dates, in the partition of the date that delivered it.
func expected(t *testing.T, opts samplesource.Options, dates ...string) map[int64]row {
	t.Helper()
	out := map[int64]row{}
	for _, ds := range dates {
		os, err := samplesource.Orders(ds, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range os {
			if cur, ok := out[o.OrderID]; ok && !o.UpdatedAt.After(cur.updated) {
				continue
			}
			out[o.OrderID] = row{customer: o.CustomerID, amount: o.Amount, updated: o.UpdatedAt, loadDate: ds}
		}
	}
	return out
}

func diff(t *testing.T, got, want map[int64]row) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("orders has %d rows, want %d", len(got), len(want))
	}
	bad := 0
	for id, w := range want {
		g, ok := got[id]
		if !ok || g.customer != w.customer || g.amount != w.amount || !g.updated.Equal(w.updated) || g.loadDate != w.loadDate {
			if bad++; bad <= 5 {
				t.Errorf("order %d: got %+v (present %v), want %+v", id, g, ok, w)
			}
		}
	}
}

func TestRunsFlowThroughAllSixServices(t *testing.T) {
	opts := samplesource.Options{Rows: 300, UpdateRatio: 0.2, Delay: time.Second}
	h, err := samplesource.Handler(opts)
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	e := startEnv(t, src.URL, 2*time.Minute)

	// Two dates requested at once: the lease lets one run at a time; the source answers 404 for
	// the first second of each date, so the sensor pokes more than once.
	d1, d2 := "2026-11-24", "2026-11-25"
	run1, run2 := e.request(t, d1), e.request(t, d2)
	for _, id := range []string{run1, run2} {
		if c, ok := e.wait(t, id, 4*time.Minute).(*event.Completed); !ok {
			t.Fatalf("run %s did not complete: %+v", id, e.events.find(id, event.KindFailed))
		} else if len(c.Steps) != 5 {
			t.Errorf("completed event lists steps %+v, want the five steps before it", c.Steps)
		}
	}

	// Never two active runs: the second run's sensor passed only after the first completed.
	order := map[string]int{}
	for i, ev := range e.events.all() {
		order[ev.Header().RunID+"."+string(ev.Kind())] = i
	}
	first, second := run1, run2
	if order[run2+".available"] < order[run1+".available"] {
		first, second = run2, run1
	}
	if order[second+".available"] < order[first+".completed"] {
		t.Errorf("run %s became active before run %s completed: both held the pipeline", second, first)
	}
	for _, id := range []string{run1, run2} {
		av := e.events.find(id, event.KindAvailable)[0].(*event.Available)
		if av.Pokes < 2 {
			t.Errorf("run %s: source was unavailable at first, yet sensor passed after %d poke(s)", id, av.Pokes)
		}
	}

	// The S3 object is the source's bytes, with the checksum the landed event carries.
	landed := e.events.find(run2, event.KindLanded)[0].(*event.Landed)
	var want bytes.Buffer
	if err := samplesource.WriteCSV(&want, d2, opts); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want.Bytes())
	if landed.Object.SHA256 != hex.EncodeToString(sum[:]) || landed.Object.Size != int64(want.Len()) || landed.Object.Key != "raw/orders/2026-11-25.csv" {
		t.Errorf("landed %+v, want sha256 %x size %d", landed.Object, sum, want.Len())
	}
	c, err := objstore.New(context.Background(), e.cfg.S3)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(landed.Object.Bucket), Key: aws.String(landed.Object.Key)})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if gotSum := sha256.Sum256(got); gotSum != sum {
		t.Errorf("S3 object sha256 %x, want %x", gotSum, sum)
	}

	// The table holds every order once, at its latest version, in the right partition.
	exp := expected(t, opts, d1, d2)
	diff(t, e.orders(t), exp)
	c2 := e.events.find(run2, event.KindCompleted)[0].(*event.Completed)
	c1 := e.events.find(run1, event.KindCompleted)[0].(*event.Completed)
	if c1.Inserted+c2.Inserted != int64(len(exp)) {
		t.Errorf("inserted %d + %d, want %d distinct orders", c1.Inserted, c2.Inserted, len(exp))
	}

	// Rerunning a date changes nothing.
	rerun := e.request(t, d2)
	rc, ok := e.wait(t, rerun, 2*time.Minute).(*event.Completed)
	if !ok {
		t.Fatalf("rerun failed: %+v", e.events.find(rerun, event.KindFailed))
	}
	if rc.Inserted != 0 || rc.Updated != 0 || rc.Unchanged != rc.Staged {
		t.Errorf("rerun changed rows: %+v", rc)
	}
	diff(t, e.orders(t), exp)

	// No secret in any log line.
	logs := e.logs.String()
	for name, v := range e.secret {
		if strings.HasPrefix(name, "S3_SECRET") || name == "SLACK_TOKEN" {
			if strings.Contains(logs, v) {
				t.Errorf("logs contain the value of %s", name)
			}
		}
	}
	if n := len(e.slack.Posts()) + len(e.smtp.Messages()); n != 0 {
		t.Errorf("%d alerts for successful runs", n)
	}
}

func TestBadInputFailsTheRunOnceAndLeavesOrdersUnchanged(t *testing.T) {
	dir := t.TempDir()
	good := "order_id,customer_id,amount,updated_at\n1,10,5.00,2026-11-01T10:00:00Z\n2,11,7.50,2026-11-01T11:00:00Z\n"
	files := map[string]string{
		"2026-11-01": good,
		"2026-11-02": "order_id,customer_id,updated_at\n3,12,2026-11-02T10:00:00Z\n",
		"2026-11-03": "order_id,customer_id,amount,updated_at\n1,10,6.00,2026-11-03T10:00:00Z\n4,13,12a,2026-11-03T10:00:00Z\n",
		"2026-11-04": "order_id,customer_id,amount,updated_at\n5,14,1.00,yesterday\n",
		"2026-11-05": "",
	}
	for ds, body := range files {
		if err := os.WriteFile(filepath.Join(dir, ds+".csv"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h, err := samplesource.Handler(samplesource.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	e := startEnv(t, src.URL, 1500*time.Millisecond)

	if _, ok := e.wait(t, e.request(t, "2026-11-01"), 3*time.Minute).(*event.Completed); !ok {
		t.Fatalf("good run failed: %s", e.logs.String())
	}
	before := e.orders(t)
	if len(before) != 2 {
		t.Fatalf("orders after the good run: %d rows, want 2", len(before))
	}

	cases := []struct{ ds, step, cause string }{
		{"2026-11-02", "validator", "amount"},
		{"2026-11-03", "validator", "line 3, column amount"},
		{"2026-11-04", "validator", "column updated_at"},
		{"2026-11-05", "validator", "empty"},
		{"2026-11-06", "sensor", "not available after 1.5s"},
	}
	runs := map[string]string{}
	for _, c := range cases {
		runs[c.ds] = e.request(t, c.ds)
	}
	for _, c := range cases {
		f, ok := e.wait(t, runs[c.ds], 2*time.Minute).(*event.Failed)
		if !ok {
			t.Errorf("%s: run completed, want a failure at %s", c.ds, c.step)
			continue
		}
		if f.Step != c.step || !strings.Contains(f.Error, c.cause) {
			t.Errorf("%s: failed at %s with %q, want %s and %q", c.ds, f.Step, f.Error, c.step, c.cause)
		}
		if n := len(e.events.find(runs[c.ds], event.KindFailed)); n != 1 {
			t.Errorf("%s: %d failed events, want 1", c.ds, n)
		}
	}

	// Exactly one Slack message and one email per failed run, each naming its date.
	testkit.Eventually(t, 30*time.Second, "a Slack message and an email per failed run", func() bool {
		return len(e.slack.Posts()) >= len(cases) && len(e.smtp.Messages()) >= len(cases)
	})
	time.Sleep(time.Second) // give a duplicate the chance to show up
	if n, m := len(e.slack.Posts()), len(e.smtp.Messages()); n != len(cases) || m != len(cases) {
		t.Errorf("%d Slack messages and %d emails, want %d each", n, m, len(cases))
	}
	for _, c := range cases {
		slackHits, mailHits := 0, 0
		for _, p := range e.slack.Posts() {
			if strings.Contains(p.Text, c.ds) {
				slackHits++
			}
		}
		for _, m := range e.smtp.Messages() {
			if strings.Contains(string(m.Data), c.ds) {
				mailHits++
			}
		}
		if slackHits != 1 || mailHits != 1 {
			t.Errorf("%s: %d Slack messages and %d emails name it, want 1 each", c.ds, slackHits, mailHits)
		}
	}
	diff(t, e.orders(t), before)
}
