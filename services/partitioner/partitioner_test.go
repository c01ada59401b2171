package partitioner

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

type env struct {
	pt     *Partitioner
	pool   *pgxpool.Pool
	s3     *s3.Client
	bucket string
	p      *config.Pipeline
}

func setup(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, testkit.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := fence.Ensure(ctx, pool); err != nil {
		t.Fatal(err)
	}
	s3cfg := testkit.S3(t)
	c, err := objstore.New(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	orders, err := contract.Load("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	p := &config.Pipeline{Name: "orders", Target: config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"},
		Retention: config.Retention{ExportKey: "archive/{pipeline}/{ds}.csv.gz"}}
	pt, err := New(pool, c, s3cfg.Bucket, map[string]*contract.Contract{"orders": orders}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{pt: pt, pool: pool, s3: c, bucket: s3cfg.Bucket, p: p}
}

func validated(ds string, token uint64) *event.Validated {
	return &event.Validated{
		Run:          event.Run{RunID: ulid.Make().String(), Pipeline: "orders", DS: ds, Fence: token, RequestedAt: time.Now().UTC()},
		Object:       event.Object{Bucket: "b", Key: "raw/orders/" + ds + ".csv", Size: 1, SHA256: strings.Repeat("0", 64)},
		StagingTable: "public.staging_orders",
		Rows:         1,
	}
}

// partitions lists the target's partitions with their bounds.
func (e *env) partitions(t *testing.T) []string {
	t.Helper()
	rows, err := e.pool.Query(t.Context(), `SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.orders'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestHandleCreatesTargetIndexAndPartition(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	for i, ds := range []string{"2024-01-02", "2024-01-01", "2024-01-02"} {
		out, err := e.pt.Handle(ctx, e.p, validated(ds, uint64(i+1)))
		if err != nil {
			t.Fatalf("%s: %v", ds, err)
		}
		pe := out
		if pe.Table != "public.orders" || pe.Partition != "public.orders_p"+strings.ReplaceAll(ds, "-", "") {
			t.Fatalf("partitioned = %+v", pe)
		}
		if _, err := event.Encode(pe); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Join(e.partitions(t), "\n")
	want := "orders_p20240101 FOR VALUES FROM ('2024-01-01') TO ('2024-01-02')\n" +
		"orders_p20240102 FOR VALUES FROM ('2024-01-02') TO ('2024-01-03')"
	if got != want {
		t.Fatalf("partitions:\n%s\nwant\n%s", got, want)
	}
	var kind, index string
	if err := e.pool.QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE oid = 'public.orders'::regclass`).Scan(&kind); err != nil || kind != "p" {
		t.Fatalf("orders relkind %q (%v), want a partitioned table", kind, err)
	}
	if err := e.pool.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'orders'`).Scan(&index); err != nil {
		t.Fatal(err)
	}
	if index != "CREATE INDEX orders_order_id_idx ON ONLY public.orders USING btree (order_id)" {
		t.Fatalf("index = %s", index)
	}

	// A run that lost its lease creates nothing.
	_, err := e.pt.Handle(ctx, e.p, validated("2024-01-05", 1))
	if !errors.Is(err, fence.ErrFenced) {
		t.Fatalf("err = %v, want fenced", err)
	}
	if n := len(e.partitions(t)); n != 2 {
		t.Fatalf("%d partitions after a fenced run, want 2", n)
	}
}

// DDL that retrying cannot fix fails the run at once (PostgreSQL class 42): a partition that would
// overlap one made by hand, and a target table that exists but is not partitioned.
func TestDDLErrorsArePermanent(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	if _, err := e.pt.Handle(ctx, e.p, validated("2024-01-01", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `CREATE TABLE orders_by_hand PARTITION OF orders FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')`); err != nil {
		t.Fatal(err)
	}
	_, err := e.pt.Handle(ctx, e.p, validated("2024-02-10", 2))
	if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "would overlap") {
		t.Fatalf("overlapping partition: err = %v, want a permanent error saying it would overlap", err)
	}

	e2 := setup(t)
	if _, err := e2.pool.Exec(ctx, `CREATE TABLE public.orders (order_id bigint, load_date date)`); err != nil {
		t.Fatal(err)
	}
	_, err = e2.pt.Handle(ctx, e2.p, validated("2024-01-01", 1))
	if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "is not partitioned") {
		t.Fatalf("unpartitioned target: err = %v, want a permanent error saying it is not partitioned", err)
	}
}

// fill creates the partitions of days and puts n rows in each.
func (e *env) fill(t *testing.T, n int, days ...string) {
	t.Helper()
	for i, ds := range days {
		if _, err := e.pt.Handle(t.Context(), e.p, validated(ds, 1)); err != nil {
			t.Fatal(err)
		}
		for j := range n {
			if _, err := e.pool.Exec(t.Context(), `INSERT INTO orders VALUES ($1, 1, 9.99, $2::date + time '10:00', $2::date)`, i*100+j+1, ds); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestRetention(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	e.fill(t, 3, "2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04")
	// A partition someone made by hand is not sluice's to drop.
	if _, err := e.pool.Exec(ctx, `CREATE TABLE orders_archive_2023 PARTITION OF orders FOR VALUES FROM ('2023-01-01') TO ('2024-01-01')`); err != nil {
		t.Fatal(err)
	}
	e.p.Retention.Days = 2
	e.p.Retention.ExportToS3 = true
	now := time.Date(2024, 1, 5, 23, 30, 0, 0, time.UTC) // keeps 2024-01-03 on
	runID := ulid.Make().String()
	dropped, err := e.pt.Retention(ctx, e.p, runID, 2, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range dropped {
		names = append(names, fmt.Sprintf("%s %s %d %s", d.Partition, d.Day.Format(time.DateOnly), d.Rows, d.Export))
	}
	want := []string{
		fmt.Sprintf("public.orders_p20240101 2024-01-01 3 s3://%s/archive/orders/2024-01-01.csv.gz", e.bucket),
		fmt.Sprintf("public.orders_p20240102 2024-01-02 3 s3://%s/archive/orders/2024-01-02.csv.gz", e.bucket),
	}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Fatalf("dropped:\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	parts := strings.Join(e.partitions(t), "\n")
	if strings.Contains(parts, "p20240101") || strings.Contains(parts, "p20240102") || !strings.Contains(parts, "orders_archive_2023") ||
		!strings.Contains(parts, "p20240103") || !strings.Contains(parts, "p20240104") {
		t.Fatalf("partitions left:\n%s", parts)
	}
	var exists bool
	if err := e.pool.QueryRow(ctx, "SELECT to_regclass('public.orders_p20240101') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Fatalf("the dropped partition's table still exists (%v)", err)
	}

	// The export is the partition's rows as gzip CSV with a header.
	out, err := e.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("archive/orders/2024-01-02.csv.gz")})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	zr, err := gzip.NewReader(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	csv, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	wantCSV := "order_id,customer_id,amount,updated_at,load_date\n" +
		"101,1,9.99,2024-01-02 10:00:00+00,2024-01-02\n102,1,9.99,2024-01-02 10:00:00+00,2024-01-02\n103,1,9.99,2024-01-02 10:00:00+00,2024-01-02\n"
	if string(csv) != wantCSV {
		t.Fatalf("export:\n%s\nwant\n%s", csv, wantCSV)
	}

	// Nothing more to drop: a no-op.
	if dropped, err := e.pt.Retention(ctx, e.p, runID, 2, now); err != nil || len(dropped) != 0 {
		t.Fatalf("second pass dropped %v, err %v", dropped, err)
	}
	// A run that lost its lease drops nothing.
	_, err = e.pt.Retention(ctx, e.p, ulid.Make().String(), 1, now.AddDate(0, 0, 1))
	if !errors.Is(err, fence.ErrFenced) || len(e.partitions(t)) != 3 {
		t.Fatalf("fenced retention: err %v, partitions %v", err, e.partitions(t))
	}
}

func TestRetentionInHandle(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	e.fill(t, 1, "2024-01-01", "2024-01-02")
	e.p.Retention.Days = 1
	e.pt.now = func() time.Time { return time.Date(2024, 1, 3, 1, 0, 0, 0, time.UTC) }
	if _, err := e.pt.Handle(ctx, e.p, validated("2024-01-03", 3)); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(e.partitions(t), "\n")
	if strings.Contains(got, "p20240101") || !strings.Contains(got, "p20240102") || !strings.Contains(got, "p20240103") {
		t.Fatalf("partitions after a run with 1-day retention:\n%s", got)
	}
	// A date retention would drop at once is refused before anything is created.
	_, err := e.pt.Handle(ctx, e.p, validated("2023-12-31", 4))
	if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "ds 2023-12-31 is older than the 1-day retention of pipeline orders (oldest kept: 2024-01-02)") {
		t.Fatalf("err = %v, want a permanent retention error", err)
	}
}

func TestOldestKept(t *testing.T) {
	now := time.Date(2024, 3, 1, 23, 59, 0, 0, time.FixedZone("", -5*3600)) // 2024-03-02 04:59 UTC
	if _, on := OldestKept(config.Retention{}, now); on {
		t.Fatal("days 0 keeps everything")
	}
	day, on := OldestKept(config.Retention{Days: 2}, now)
	if !on || day.Format(time.DateOnly) != "2024-02-29" {
		t.Fatalf("oldest kept = %s", day)
	}
}

func TestConfigRetention(t *testing.T) {
	base := "postgres:\n  url: env:PG\ns3:\n  bucket: b\npipelines:\n  - name: orders\n    source:\n      url: http://x/{ds}.csv\n    retention:\n"
	for _, tc := range []struct{ yaml, want string }{
		{"      days: -1\n", "sluice.yaml:10: pipelines[0].retention.days: -1 must not be negative"},
		{"      export_to_s3: true\n", "sluice.yaml:10: pipelines[0].retention.export_to_s3: needs retention.days"},
		{"      days: 3\n      export_key: archive/x.csv.gz\n", `sluice.yaml:11: pipelines[0].retention.export_key: "archive/x.csv.gz" must contain {ds}`},
	} {
		_, err := config.Parse("sluice.yaml", []byte(base+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want %q", err, tc.want)
		}
	}
	cfg, err := config.Parse("sluice.yaml", []byte(base+"      days: 30\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Pipelines[0].Retention; r.Days != 30 || r.ExportToS3 || r.ExportKey != "archive/{pipeline}/{ds}.csv.gz" {
		t.Fatalf("retention = %+v", r)
	}
}

var nameRe = regexp.MustCompile(`^orders_p[0-9]{8}$`)

var daily = contract.Partition{Column: "load_date", Grain: contract.Day}

// FuzzPartitionName: whatever text arrives as a ds, only a real date gets through event.ParseDS,
// and what is built from it is a plain partition name and DDL with exactly the date's bounds.
func FuzzPartitionName(f *testing.F) {
	for _, s := range []string{"2024-01-01", "2024-02-29", "2023-02-29", "2024-12-31", "0000-01-01", "9999-12-31",
		"2024-1-01", "2024-01-01'); DROP TABLE orders; --", "2024-01-01T00:00:00Z", " 2024-01-01", "20240101", "", "2024-13-01", "2024-00-10"} {
		f.Add(s)
	}
	target := config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"}
	f.Fuzz(func(t *testing.T, ds string) {
		day, err := event.ParseDS(ds)
		if err != nil {
			return
		}
		if day.Format(time.DateOnly) != ds || day.Location() != time.UTC || day.Hour() != 0 {
			t.Fatalf("ParseDS(%q) = %v, which does not format back to it", ds, day)
		}
		name := PartitionName("orders", daily, day)
		if !nameRe.MatchString(name) {
			t.Fatalf("partition name %q for %q", name, ds)
		}
		back, ok := partitionStart("orders", daily, name)
		if !ok || !back.Equal(day) {
			t.Fatalf("partitionStart(%q) = %v %v, want %v", name, back, ok, day)
		}
		next := day.AddDate(0, 0, 1).Format(time.DateOnly)
		want := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS "public"."%s" PARTITION OF "public"."orders" FOR VALUES FROM ('%s') TO ('%s')`, name, ds, next)
		if got := PartitionDDL(target, daily, day); got != want {
			t.Fatalf("PartitionDDL = %s\nwant %s", got, want)
		}
	})
}

// FuzzPartitionDay: only names PartitionName makes map back to a day.
func FuzzPartitionDay(f *testing.F) {
	for _, s := range []string{"orders_p20240101", "orders_p20240230", "orders_p2024010", "orders_p202401011", "orders_archive", "orders_p+0240101"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		day, ok := partitionStart("orders", daily, name)
		if ok != (PartitionName("orders", daily, day) == name) {
			t.Fatalf("partitionDay(%q) = %v, %v", name, day, ok)
		}
	})
}

func TestPartitionDay(t *testing.T) {
	for name, ok := range map[string]bool{"orders_p20240101": true, "orders_p20240230": false, "orders_p2024010": false,
		"orders_archive_2023": false, "other_p20240101": false, "orders_p20240101x": false} {
		if _, got := partitionStart("orders", daily, name); got != ok {
			t.Errorf("partitionDay(%q) ok = %v, want %v", name, got, ok)
		}
	}
	var b bytes.Buffer
	b.WriteString(KeyIndexDDL(&contract.Contract{Key: contract.Key{"order_id"}}, config.Target{Schema: "s", Table: strings.Repeat("t", 60)}))
	if !strings.Contains(b.String(), `"`+strings.Repeat("t", 60)+`_or" ON "s"."`) {
		t.Fatalf("long index name not cut to 63 bytes: %s", b.String())
	}
}

// TestMonthlyGrain: a monthly contract (events) gets one partition per calendar month, named
// <table>_pYYYYMM with the key index on both key columns; retention drops a month only once its
// last day is past the retention; a target whose columns the contract contradicts is refused at
// start, naming the contract's file and line.
func TestMonthlyGrain(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	events, err := contract.Load("events", "")
	if err != nil {
		t.Fatal(err)
	}
	pt, err := New(e.pool, nil, "", map[string]*contract.Contract{"events": events}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &config.Pipeline{Name: "events", Target: config.Target{Schema: "public", Table: "events"},
		Retention: config.Retention{ExportKey: "archive/{pipeline}/{ds}.csv.gz"}}
	for i, ds := range []string{"2024-01-31", "2024-02-01", "2024-02-29", "2024-01-05"} {
		v := validated(ds, uint64(i+1))
		v.Pipeline = "events"
		out, err := pt.Handle(ctx, p, v)
		if err != nil {
			t.Fatalf("%s: %v", ds, err)
		}
		if want := "public.events_p" + strings.ReplaceAll(ds[:7], "-", ""); out.Partition != want {
			t.Fatalf("%s: partition %s, want %s", ds, out.Partition, want)
		}
	}
	rows, err := e.pool.Query(ctx, `SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.events'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := "events_p202401 FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')\nevents_p202402 FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')"
	if strings.Join(got, "\n") != want {
		t.Fatalf("partitions:\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
	var index string
	if err := e.pool.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'events'`).Scan(&index); err != nil {
		t.Fatal(err)
	}
	if index != "CREATE INDEX events_account_id_event_id_idx ON ONLY public.events USING btree (account_id, event_id)" {
		t.Fatalf("index: %s", index)
	}

	// 30 days on 2024-02-20 keep 2024-01-21 on: January is still partly kept.
	p.Retention.Days = 30
	if dropped, err := pt.Retention(ctx, p, ulid.Make().String(), 10, time.Date(2024, 2, 20, 12, 0, 0, 0, time.UTC)); err != nil || len(dropped) != 0 {
		t.Fatalf("dropped %v (%v), want nothing while a day of January is kept", dropped, err)
	}
	dropped, err := pt.Retention(ctx, p, ulid.Make().String(), 10, time.Date(2024, 3, 2, 12, 0, 0, 0, time.UTC))
	if err != nil || len(dropped) != 1 || dropped[0].Partition != "public.events_p202401" || dropped[0].Day.Format(time.DateOnly) != "2024-01-01" {
		t.Fatalf("dropped %+v (%v), want January", dropped, err)
	}
	// A ds in a month retention has dropped is refused.
	pt.now = func() time.Time { return time.Date(2024, 3, 2, 12, 0, 0, 0, time.UTC) }
	v := validated("2024-01-31", 11)
	v.Pipeline = "events"
	if _, err := pt.Handle(ctx, p, v); !flow.IsPermanent(err) || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("err = %v, want a permanent retention error", err)
	}

	// The contract and the existing table agree; a table that types a column otherwise does not.
	if err := CheckTargets(ctx, e.pool, []config.Pipeline{*p}, map[string]*contract.Contract{"events": events}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `ALTER TABLE events ALTER COLUMN billable TYPE text`); err != nil {
		t.Fatal(err)
	}
	err = CheckTargets(ctx, e.pool, []config.Pipeline{*p}, map[string]*contract.Contract{"events": events})
	if err == nil || !strings.Contains(err.Error(), "pipeline events: schemas/contracts/events.json:19:") ||
		!strings.Contains(err.Error(), "column billable is text, the contract needs boolean") {
		t.Fatalf("err = %v, want the contradiction at the contract's line", err)
	}
}
