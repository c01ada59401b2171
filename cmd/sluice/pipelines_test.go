package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// twoPipelines declares orders and events on one source, each with defaults for everything the
// contract decides (staging table, target, partition column and grain, dbt selection).
const twoPipelines = `pipelines:
  - name: orders
    source:
      url: %[1]s/data/{ds}.csv
    sensor:
      poke_interval: 200ms
      timeout: 5m
    lease:
      ttl: 20s
    retries:
      max: 1
      delay: 200ms
    alerts: [slack]
    alerts_fallback: [email]
  - name: events
    source:
      url: %[1]s/events/{ds}.csv
    sensor:
      poke_interval: 200ms
      timeout: 5m
    lease:
      ttl: 20s
    retries:
      max: 1
      delay: 200ms
    alerts: [email]
`

func (e *env) requestFor(t *testing.T, pipeline, ds string) string {
	t.Helper()
	st := e.stacks[0]
	req, err := trigger.RequestRun(context.Background(), st.JS, st.Tracer, app.BusOptions(st.Config), pipeline, ds, "test")
	if err != nil {
		t.Fatal(err)
	}
	return req.RunID
}

func (e *env) completed(t *testing.T, runID string) *event.Completed {
	t.Helper()
	c, ok := e.wait(t, runID, 5*time.Minute).(*event.Completed)
	if !ok {
		t.Fatalf("run %s did not complete: %+v", runID, e.events.find(runID, event.KindFailed))
	}
	return c
}

// eventRow is one stored event, as the test expects it.
type eventRow struct {
	revision   int32
	kind       string
	note       *string
	billable   bool
	payload    any // decoded JSON
	occurredAt time.Time
	batchDate  string
	partition  string
}

type eventKey struct {
	account int64
	id      string
}

// expectedEvents is the events table after the given dates ran, in any order, any number of
// times, computed without sluice: per (account_id, event_id) the greatest revision; the same
// revision from two dates belongs to the earlier date; each row in the partition of its date's
// month.
func expectedEvents(t *testing.T, opts samplesource.Options, dates []string) map[eventKey]eventRow {
	t.Helper()
	out := map[eventKey]eventRow{}
	for _, ds := range slices.Sorted(slices.Values(dates)) {
		evs, err := samplesource.Events(ds, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			k := eventKey{ev.AccountID, ev.EventID}
			if cur, ok := out[k]; ok && ev.Revision <= cur.revision {
				continue // older, or the same revision from a later date
			}
			var payload any
			if err := json.Unmarshal([]byte(ev.Payload), &payload); err != nil {
				t.Fatal(err)
			}
			out[k] = eventRow{revision: ev.Revision, kind: ev.Kind, note: ev.Note, billable: ev.Billable, payload: payload,
				occurredAt: ev.OccurredAt, batchDate: ds, partition: "events_p" + strings.ReplaceAll(ds[:7], "-", "")}
		}
	}
	return out
}

func (e *env) eventsTable(t *testing.T) map[eventKey]eventRow {
	t.Helper()
	return readEventsTable(t, e.pg)
}

// readEventsTable reads the events table of the database at pgURL.
func readEventsTable(t *testing.T, pgURL string) map[eventKey]eventRow {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT tableoid::regclass::text, account_id, event_id, revision, kind, note, billable,
		payload::text, occurred_at, batch_date::text FROM events`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[eventKey]eventRow{}
	for rows.Next() {
		var k eventKey
		var r eventRow
		var payload string
		if err := rows.Scan(&r.partition, &k.account, &k.id, &r.revision, &r.kind, &r.note, &r.billable, &payload, &r.occurredAt, &r.batchDate); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(payload), &r.payload); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[k]; dup {
			t.Fatalf("events key %v appears twice", k)
		}
		out[k] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func diffEvents(t *testing.T, got, want map[eventKey]eventRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("events has %d rows, want %d", len(got), len(want))
	}
	bad := 0
	for k, w := range want {
		g, ok := got[k]
		same := ok && g.revision == w.revision && g.kind == w.kind && reflect.DeepEqual(g.note, w.note) && g.billable == w.billable &&
			reflect.DeepEqual(g.payload, w.payload) && g.occurredAt.Equal(w.occurredAt) && g.batchDate == w.batchDate && g.partition == w.partition
		if !same {
			if bad++; bad <= 5 {
				t.Errorf("event %v: got %+v (present %v), want %+v", k, g, ok, w)
			}
		}
	}
}

// ordersPartitions checks every order sits in the daily partition of its load_date.
func (e *env) ordersPartitions(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.pg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var misplaced int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders WHERE tableoid::regclass::text <> 'orders_p' || to_char(load_date, 'YYYYMMDD')`).Scan(&misplaced); err != nil {
		t.Fatal(err)
	}
	if misplaced != 0 {
		t.Errorf("%d orders are not in their day's partition", misplaced)
	}
}

// TestOrdersAndEventsSideBySide runs the two built-in pipelines through all six services at
// once: orders (one key, updated_at, daily partitions) and events (key account_id+event_id,
// revision, a nullable note, a boolean, a JSON payload, monthly partitions). First events waits
// in its sensor for a file that is not there while orders completes; then both run dates across
// a month boundary out of order, with reruns, and after every step both tables are compared row
// by row with what the test computes from the source's rows.
func TestOrdersAndEventsSideBySide(t *testing.T) {
	opts := samplesource.Options{Rows: 120, UpdateRatio: 0.25}
	h, err := samplesource.Handler(opts)
	if err != nil {
		t.Fatal(err)
	}
	const late = "2026-11-28"
	var lateReady atomic.Bool
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events/"+late+".csv" && !lateReady.Load() {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer src.Close()

	ns := testkit.NATS(t)
	s3cfg := testkit.S3(t)
	slackSrv, slack := testkit.Slack(t)
	e := &env{pg: testkit.Postgres(t), smtp: testkit.SMTP(t), slack: slack, logs: &syncBuffer{}, events: &eventLog{}}
	c := testConfig{bucket: s3cfg.Bucket, dbt: true, slack: slackSrv.GetAPIURL(), smtp: e.smtp, rest: fmt.Sprintf(twoPipelines, src.URL)}
	e.start(t, ns, s3cfg, c.text(t))

	// Isolation: events is stuck waiting for its file (and holds its own lease); orders runs.
	stuck := e.requestFor(t, "events", late)
	first := e.requestFor(t, "orders", late)
	e.completed(t, first)
	if got := e.events.find(stuck, event.KindAvailable); len(got) != 0 {
		t.Fatalf("events' run for %s passed its sensor before the file existed", late)
	}
	if got := e.events.find(stuck, event.KindFailed); len(got) != 0 {
		t.Fatalf("events' waiting run failed: %+v", got)
	}
	lateReady.Store(true)
	e.completed(t, stuck)

	done := []string{late}
	check := func(step string) {
		t.Helper()
		diff(t, e.orders(t), expected(t, opts, slices.Sorted(slices.Values(done))...))
		e.ordersPartitions(t)
		diffEvents(t, e.eventsTable(t), expectedEvents(t, opts, done))
		if t.Failed() {
			t.Fatalf("tables differ after %s", step)
		}
	}
	check("the first date")

	// Out of order across the month boundary, both pipelines at once, with reruns.
	// Each date's file revises the day before's rows: 12-01 (whose revisions move November
	// events into December's partition) runs before 11-30, then again.
	for _, ds := range []string{"2026-12-01", "2026-11-30", "2026-12-01"} {
		rerun := slices.Contains(done, ds)
		ro, re := e.requestFor(t, "orders", ds), e.requestFor(t, "events", ds)
		co, ce := e.completed(t, ro), e.completed(t, re)
		if rerun {
			for _, c := range []*event.Completed{co, ce} {
				if c.Inserted != 0 || c.Updated != 0 {
					t.Errorf("rerun of %s %s changed rows: %+v", c.Pipeline, ds, c)
				}
			}
		}
		if !rerun {
			done = append(done, ds)
		}
		if ce.Partition != "public.events_p"+strings.ReplaceAll(ds[:7], "-", "") {
			t.Errorf("events %s partition = %s, want its month's", ds, ce.Partition)
		}
		check(ds)
	}

	// Both pipelines' staging tables are their own.
	for _, tbl := range []string{"staging_orders", "staging_events"} {
		if !strings.Contains(e.logs.String(), `"table":"public.`+tbl+`"`) {
			t.Errorf("no load into %s logged", tbl)
		}
	}
	if n := len(e.slack.Posts()) + len(e.smtp.Messages()); n != 0 {
		t.Errorf("%d alerts for successful runs", n)
	}
}
