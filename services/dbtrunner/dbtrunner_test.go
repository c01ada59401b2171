package dbtrunner_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/dbtrunner"
)

const (
	ds1 = "2026-11-24"
	ds2 = "2026-11-25"
	// password is put in the test URL (the test cluster trusts every local connection, so it is
	// accepted and ignored) to check it never shows up in logs, errors, events or docs.
	password = "pw-Must-Not-Leak-7c1e"
)

// schemaSQL is what the validator and partitioner create before dbt runs.
const schemaSQL = `
CREATE TABLE staging_orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL, run_id text NOT NULL);
CREATE TABLE orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL) PARTITION BY RANGE (load_date);
CREATE TABLE orders_p20261124 PARTITION OF orders FOR VALUES FROM ('2026-11-24') TO ('2026-11-25');
CREATE TABLE orders_p20261125 PARTITION OF orders FOR VALUES FROM ('2026-11-25') TO ('2026-11-26');`

var pipeline = config.Pipeline{
	Name:         "orders",
	StagingTable: "staging_orders",
	Target:       config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"},
	DBT:          config.Select{Select: "+orders"},
}

type fixture struct {
	url    string
	runner *dbtrunner.Runner
	db     *pgx.Conn
	s3     *s3.Client
	bucket string
	logs   *syncBuffer
}

// setup gives a test a fresh database (with schemaSQL applied unless schema is empty), a fresh
// bucket and a Runner on them.
func setup(t *testing.T, schema string) *fixture {
	t.Helper()
	return setupWorker(t, schema, dbtrunner.WorkerOptions{})
}

// setupWorker is setup with the runner's dbt worker configured by opts.
func setupWorker(t *testing.T, schema string, opts dbtrunner.WorkerOptions) *fixture {
	t.Helper()
	ctx := t.Context()
	url := strings.Replace(testkit.Postgres(t), "postgres@", "postgres:"+password+"@", 1)
	s3cfg := testkit.S3(t)
	c, err := objstore.New(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	if schema != "" {
		if _, err := db.Exec(ctx, schema); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := dbtrunner.New(testkit.DBT(t), filepath.Join(testkit.RepoRoot(t), "dbt_project"), 2, url, c, s3cfg.Bucket, log)
	if err != nil {
		t.Fatal(err)
	}
	// The default mode: a warm dbt worker (worker.go). The subprocess fallback: dbt_test.go.
	if err := r.UseWorker(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(dbtrunner.DocsGrace) })
	t.Cleanup(func() {
		if strings.Contains(logs.String(), password) {
			t.Error("the database password appears in the runner's logs")
		}
	})
	return &fixture{url: url, runner: r, db: db, s3: c, bucket: s3cfg.Bucket, logs: logs}
}

type order struct {
	id        int64
	customer  int32
	amount    string
	updatedAt string
}

// stage replaces ds's staging slice, as the validator does.
func (f *fixture) stage(t *testing.T, ds string, rows ...order) int64 {
	t.Helper()
	ctx := t.Context()
	if _, err := f.db.Exec(ctx, "DELETE FROM staging_orders WHERE load_date = $1", ds); err != nil {
		t.Fatal(err)
	}
	for _, o := range rows {
		if _, err := f.db.Exec(ctx, "INSERT INTO staging_orders VALUES ($1, $2, $3::numeric, $4::timestamptz, $5::date, 'r')",
			o.id, o.customer, o.amount, o.updatedAt, ds); err != nil {
			t.Fatal(err)
		}
	}
	return int64(len(rows))
}

var runSeq atomic.Int64

// partitioned is the event the partitioner would send for ds, with a fresh run id (a ULID).
func partitioned(ds string, rows int64) *event.Partitioned {
	return &event.Partitioned{
		Run: event.Run{RunID: fmt.Sprintf("01JQ%022d", runSeq.Add(1)), Pipeline: "orders", DS: ds, Fence: 1,
			RequestedAt: time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)},
		Object: event.Object{Bucket: "landing", Key: "raw/orders/" + ds + ".csv", Size: 100,
			SHA256: strings.Repeat("ab", 32), SourceURL: "http://source.invalid/orders/" + ds + ".csv"},
		StagingTable: "staging_orders",
		Rows:         rows,
		Table:        "public.orders",
		Partition:    "public.orders_p" + strings.ReplaceAll(ds, "-", ""),
	}
}

// row is one stored order: which partition holds it and its values.
type row struct {
	partition string
	id        int64
	amount    string
	updatedAt time.Time
	loadDate  string
}

func (f *fixture) orders(t *testing.T) map[int64]row {
	t.Helper()
	rows, err := f.db.Query(t.Context(), `SELECT tableoid::regclass::text, order_id, amount::text, updated_at, load_date::text FROM orders ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]row{}
	n := 0
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.partition, &r.id, &r.amount, &r.updatedAt, &r.loadDate); err != nil {
			t.Fatal(err)
		}
		out[r.id] = r
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(out) {
		t.Fatalf("order_id is not unique across the table: %d rows, %d distinct ids", n, len(out))
	}
	return out
}

func (f *fixture) handle(t *testing.T, ctx context.Context, in *event.Partitioned) *event.Completed {
	t.Helper()
	out, err := f.runner.Handle(ctx, pipeline, in)
	if err != nil {
		t.Fatalf("Handle %s: %v", in.DS, err)
	}
	b, err := event.Encode(out)
	if err != nil {
		t.Fatalf("completed event does not match its schema: %v", err)
	}
	if strings.Contains(string(b), password) {
		t.Fatal("the database password appears in the completed event")
	}
	return out
}

func wantCounts(t *testing.T, c *event.Completed, inserted, updated, unchanged int64) {
	t.Helper()
	if c.Inserted != inserted || c.Updated != updated || c.Unchanged != unchanged {
		t.Fatalf("%s: inserted/updated/unchanged = %d/%d/%d, want %d/%d/%d",
			c.DS, c.Inserted, c.Updated, c.Unchanged, inserted, updated, unchanged)
	}
	m := model(t, c, "model.sluice.orders")
	if m.Status != "success" || m.RowsAffected != inserted+updated {
		t.Fatalf("%s: model.sluice.orders = %+v, want success with %d rows", c.DS, m, inserted+updated)
	}
}

const p24, p25 = "public.orders_p20261124", "public.orders_p20261125"

// wantPartitions checks where a run's rows went: the ds's partition first, then the others.
func wantPartitions(t *testing.T, c *event.Completed, want ...event.PartitionRows) {
	t.Helper()
	if !slices.Equal(c.Partitions, want) {
		t.Fatalf("%s: partitions %+v, want %+v", c.DS, c.Partitions, want)
	}
}

func model(t *testing.T, c *event.Completed, node string) event.ModelResult {
	t.Helper()
	for _, m := range c.Models {
		if m.Node == node {
			return m
		}
	}
	t.Fatalf("no result for %s in %+v", node, c.Models)
	return event.ModelResult{}
}

func wantRow(t *testing.T, got map[int64]row, id int64, partition, amount string) {
	t.Helper()
	r, ok := got[id]
	if !ok {
		t.Fatalf("order %d missing", id)
	}
	if r.partition != partition || r.amount != amount {
		t.Fatalf("order %d = %s amount %s, want %s amount %s", id, r.partition, r.amount, partition, amount)
	}
}

// TestUpsertRules runs the rules of DESIGN.md's data model through real dbt: a first day, a later
// day that updates and adds orders, a rerun, a backfill with an older version, and a run that
// lost its lease.
func TestUpsertRules(t *testing.T) {
	t.Parallel()
	f := setup(t, schemaSQL)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, root := tp.Tracer("test").Start(t.Context(), "dbt-runner")
	defer root.End()

	// Day 1: five orders; order 5 appears twice in the file, the later version must win.
	staged := f.stage(t, ds1,
		order{1, 10, "10.00", ds1 + "T10:00:00Z"},
		order{2, 20, "20.00", ds1 + "T10:00:00Z"},
		order{3, 30, "30.00", ds1 + "T10:00:00Z"},
		order{4, 40, "40.00", ds1 + "T10:00:00Z"},
		order{5, 50, "50.00", ds1 + "T10:00:00Z"},
		order{5, 50, "55.00", ds1 + "T11:00:00Z"},
	)
	c1 := f.handle(t, ctx, partitioned(ds1, staged))
	wantCounts(t, c1, 5, 0, 0)
	wantPartitions(t, c1, event.PartitionRows{Partition: p24, Inserted: 5})
	if c1.Staged != 6 || c1.Table != "public.orders" || c1.Partition != "public.orders_p20261124" {
		t.Fatalf("completed = %+v", c1)
	}
	got := f.orders(t)
	if len(got) != 5 {
		t.Fatalf("day 1 stored %d orders, want 5", len(got))
	}
	for id := int64(1); id <= 4; id++ {
		wantRow(t, got, id, "orders_p20261124", fmt.Sprintf("%d.00", id*10))
	}
	wantRow(t, got, 5, "orders_p20261124", "55.00")
	f.wantDocs(t, c1)

	// The trace has a span per dbt node, with its upstream nodes.
	root.End()
	var orderSpan sdktrace.ReadOnlySpan
	names := map[string]bool{}
	for _, s := range rec.Ended() {
		names[s.Name()] = true
		if s.Name() == "model.sluice.orders" && orderSpan == nil {
			orderSpan = s
		}
	}
	for _, n := range []string{"dbt build", "dbt docs generate", "s3 put", "model.sluice.stg_orders", "test.sluice.unique_orders_order_id.fed79b3a6e"} {
		if !names[n] {
			t.Errorf("no span %q; spans: %v", n, names)
		}
	}
	if orderSpan == nil {
		t.Fatal("no span for model.sluice.orders")
	}
	for _, a := range orderSpan.Attributes() {
		if a.Key == "dbt.depends_on" && !slices.Contains(a.Value.AsStringSlice(), "model.sluice.stg_orders") {
			t.Errorf("model.sluice.orders depends_on = %v", a.Value.AsStringSlice())
		}
	}
	ctx = t.Context()

	// Day 2: orders 1 and 2 updated, order 3 with an older version than stored, 6 and 7 new.
	day2 := []order{
		{1, 10, "11.00", ds2 + "T09:00:00Z"},
		{2, 20, "22.00", ds2 + "T09:00:00Z"},
		{3, 30, "3.00", ds1 + "T09:00:00Z"},
		{6, 60, "60.00", ds2 + "T09:00:00Z"},
		{7, 70, "70.00", ds2 + "T09:00:00Z"},
	}
	staged = f.stage(t, ds2, day2...)
	c2 := f.handle(t, ctx, partitioned(ds2, staged))
	wantCounts(t, c2, 2, 2, 1)
	wantPartitions(t, c2, event.PartitionRows{Partition: p25, Inserted: 2, MovedIn: 2},
		event.PartitionRows{Partition: p24, MovedOut: 2, Unchanged: 1})
	got = f.orders(t)
	if len(got) != 7 {
		t.Fatalf("after day 2: %d orders, want 7", len(got))
	}
	wantRow(t, got, 1, "orders_p20261125", "11.00") // moved to the later day's partition
	wantRow(t, got, 2, "orders_p20261125", "22.00")
	wantRow(t, got, 3, "orders_p20261124", "30.00") // the older version did not replace it
	wantRow(t, got, 6, "orders_p20261125", "60.00")
	if got[1].loadDate != ds2 {
		t.Fatalf("order 1 load_date = %s, want %s", got[1].loadDate, ds2)
	}

	// Rerunning day 2 changes nothing.
	c3 := f.handle(t, ctx, partitioned(ds2, staged))
	wantCounts(t, c3, 0, 0, 5)
	wantPartitions(t, c3, event.PartitionRows{Partition: p25, Unchanged: 4}, event.PartitionRows{Partition: p24, Unchanged: 1})
	if after := f.orders(t); !mapsEqual(after, got) {
		t.Fatalf("rerun changed the table:\nbefore %v\nafter  %v", got, after)
	}

	// Backfill day 1 with an older version of order 1 (its newer version stays in day 2), a
	// newer version of order 4 (which wins, whatever the order dates are run in), and the version
	// of order 6 that day 2 stored, same updated_at: the earlier date wins the tie, so it moves,
	// and the counts say so.
	staged = f.stage(t, ds1,
		order{1, 10, "999.00", ds1 + "T08:00:00Z"},
		order{2, 20, "20.00", ds1 + "T10:00:00Z"},
		order{3, 30, "30.00", ds1 + "T10:00:00Z"},
		order{4, 40, "44.00", ds1 + "T12:00:00Z"},
		order{5, 50, "55.00", ds1 + "T11:00:00Z"},
		order{6, 60, "60.00", ds2 + "T09:00:00Z"},
	)
	c4 := f.handle(t, ctx, partitioned(ds1, staged))
	wantCounts(t, c4, 0, 2, 4)
	wantPartitions(t, c4, event.PartitionRows{Partition: p24, Updated: 1, MovedIn: 1, Unchanged: 2},
		event.PartitionRows{Partition: p25, MovedOut: 1, Unchanged: 2})
	got = f.orders(t)
	if len(got) != 7 {
		t.Fatalf("after backfill: %d orders, want 7", len(got))
	}
	wantRow(t, got, 1, "orders_p20261125", "11.00")
	wantRow(t, got, 4, "orders_p20261124", "44.00")
	wantRow(t, got, 6, "orders_p20261124", "60.00")
	// Day 2 again: its order 6 now loses the tie to day 1; nothing changes, and nothing is counted.
	c5 := f.handle(t, ctx, partitioned(ds2, f.stage(t, ds2, day2...)))
	wantCounts(t, c5, 0, 0, 5)
	if after := f.orders(t); !mapsEqual(after, got) {
		t.Fatalf("rerun of day 2 after the backfill changed the table:\nbefore %v\nafter  %v", got, after)
	}
	if c4.DocsKey == c1.DocsKey {
		t.Fatalf("two runs of %s share docs key %s", ds1, c4.DocsKey)
	}
	f.wantDocs(t, c4)

	// A run whose lease was taken over (a greater fencing token is recorded) cannot upsert.
	if _, err := f.db.Exec(ctx, "UPDATE sluice_fences SET token = 100 WHERE pipeline = 'orders'"); err != nil {
		t.Fatal(err)
	}
	f.stage(t, ds2, order{8, 80, "80.00", ds2 + "T09:00:00Z"})
	_, err := f.runner.Handle(ctx, pipeline, partitioned(ds2, 1))
	if !errors.Is(err, fence.ErrFenced) || flow.IsPermanent(err) {
		t.Fatalf("stale run: err = %v, want fence.ErrFenced", err)
	}
	if after := f.orders(t); !mapsEqual(after, got) {
		t.Fatal("a fenced run changed the table")
	}

	// No fence, no write: a run without a token is refused (TestPreHookRefusesNoToken: dbt's
	// pre-hook too).
	zero := partitioned(ds2, 1)
	zero.Fence = 0
	if _, err := f.runner.Handle(ctx, pipeline, zero); err == nil || !flow.IsPermanent(err) || !strings.Contains(err.Error(), "no fencing token") {
		t.Fatalf("run without a token: err = %v, want a permanent refusal", err)
	}
	if after := f.orders(t); !mapsEqual(after, got) {
		t.Fatal("an upsert without a fencing token changed the table")
	}
}

// wantDocs checks the run's dbt docs are in the bucket under its docs key (once the runner has
// published them: in the background, after completed).
func (f *fixture) wantDocs(t *testing.T, c *event.Completed) {
	t.Helper()
	f.runner.WaitDocs()
	if want := "docs/orders/" + c.DS + "/" + c.RunID + "/"; c.DocsKey != want {
		t.Fatalf("docs key = %q, want %q", c.DocsKey, want)
	}
	for _, name := range []string{"index.html", "manifest.json", "catalog.json"} {
		out, err := f.s3.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(c.DocsKey + name)})
		if err != nil {
			t.Fatalf("docs object %s: %v", c.DocsKey+name, err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 || bytes.Contains(b, []byte(password)) {
			t.Fatalf("docs object %s is empty or holds the password", name)
		}
		if name == "catalog.json" && !bytes.Contains(b, []byte(`"model.sluice.orders"`)) {
			t.Fatalf("catalog.json does not describe model.sluice.orders")
		}
	}
}

// TestMissingTarget: without the partitioned table (the partitioner creates it), the run fails
// for good, naming the table, and dbt does not create an unpartitioned one.
func TestMissingTarget(t *testing.T) {
	t.Parallel()
	f := setup(t, schemaSQL+"\nDROP TABLE orders;")
	staged := f.stage(t, ds1, order{1, 10, "10.00", ds1 + "T10:00:00Z"})
	_, err := f.runner.Handle(t.Context(), pipeline, partitioned(ds1, staged))
	if err == nil || !flow.IsPermanent(err) || !strings.Contains(err.Error(), "orders") {
		t.Fatalf("err = %v, want a permanent error naming orders", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatal("the error holds the password")
	}
	var reg *string
	if err := f.db.QueryRow(t.Context(), "SELECT to_regclass('public.orders')::text").Scan(&reg); err != nil {
		t.Fatal(err)
	}
	if reg != nil {
		t.Fatalf("a table %s was created", *reg)
	}
}

// TestCancelStopsDBT: cancelling the context stops dbt (here a stand-in that would sleep for
// minutes) and the error is a retryable one.
func TestCancelStopsDBT(t *testing.T) {
	t.Parallel()
	f := setup(t, schemaSQL)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	fake := writeScript(t, dir, "dbt", "#!/bin/sh\necho $$ > "+pidFile+"\nexec sleep 300\n")
	r, err := dbtrunner.New(fake, filepath.Join(testkit.RepoRoot(t), "dbt_project"), 1, f.url, f.s3, f.bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err = r.Handle(ctx, pipeline, partitioned(ds1, 0))
	if !errors.Is(err, context.DeadlineExceeded) || flow.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Handle returned %v after the deadline", d)
	}
	if !processGone(t, pidFile) {
		t.Fatal("dbt is still running after cancellation")
	}
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

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mapsEqual(a, b map[int64]row) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || v.partition != w.partition || v.amount != w.amount || !v.updatedAt.Equal(w.updatedAt) || v.loadDate != w.loadDate {
			return false
		}
	}
	return true
}

// TestHandleRejectsBadEvents: what ends up in SQL, S3 keys and dbt vars is checked before any I/O.
func TestHandleRejectsBadEvents(t *testing.T) {
	project := t.TempDir()
	writeScript(t, project, "dbt_project.yml", "name: x\n")
	c, err := objstore.New(t.Context(), config.S3{Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := dbtrunner.New("/bin/true", project, 1, "postgres://u:pw@127.0.0.1:1/db", c, "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*event.Partitioned){
		"bad date":       func(in *event.Partitioned) { in.DS = "2026-02-30" },
		"sql in date":    func(in *event.Partitioned) { in.DS = "2026-11-24'; DROP TABLE orders; --" },
		"path in run id": func(in *event.Partitioned) { in.RunID = "../../other" },
		"other pipeline": func(in *event.Partitioned) { in.Pipeline = "customers" },
	} {
		t.Run(name, func(t *testing.T) {
			in := partitioned(ds1, 1)
			mutate(in)
			if _, err := r.Handle(t.Context(), pipeline, in); !flow.IsPermanent(err) {
				t.Fatalf("err = %v, want permanent", err)
			}
		})
	}
	if _, err := dbtrunner.New("/bin/true", project, 1, "postgres://u:pw@127.0.0.1:1/db?sslmode=bogus", c, "b", nil); err == nil || strings.Contains(err.Error(), "pw") {
		t.Fatalf("New with a bad URL: err = %v, want an error without the password", err)
	}
}
