package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/partitioner"
)

const retentionConfig = `pipelines:
  - name: orders
    source:
      url: http://127.0.0.1:1/data/{ds}.csv
    retention:
      days: 3
      export_to_s3: true
`

// TestRetentionCommand runs `sluice retention` against a target with partitions of 10, 5 and 1
// days ago: the first two go (exported first), and a held lease stops it.
func TestRetentionCommand(t *testing.T) {
	ctx := t.Context()
	ns := testkit.NATS(t)
	pg := testkit.Postgres(t)
	s3cfg := testkit.S3(t)
	secrets := testSecrets(ns.ClientURL(), pg, s3cfg)
	setenv(t, secrets)
	path := testConfig{bucket: s3cfg.Bucket, rest: retentionConfig}.write(t)
	cfg := loadConfig(t, path, secrets)

	pool, err := pgxpool.New(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := fence.Ensure(ctx, pool); err != nil {
		t.Fatal(err)
	}
	orders, err := contract.Load("orders", "")
	if err != nil {
		t.Fatal(err)
	}
	pt, err := partitioner.New(pool, nil, "", map[string]*contract.Contract{"orders": orders}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Pipelines[0]
	p.Retention.Days = 0 // create the old partitions without dropping them on the way
	today := time.Now().UTC()
	var days []string
	for _, ago := range []int{10, 5, 1} {
		ds := today.AddDate(0, 0, -ago).Format(time.DateOnly)
		days = append(days, ds)
		v := &event.Validated{Run: event.Run{RunID: ulid.Make().String(), Pipeline: "orders", DS: ds, Fence: 1, RequestedAt: today},
			Object: event.Object{Bucket: "b", Key: "k", SHA256: strings.Repeat("0", 64)}, StagingTable: "public.staging_orders"}
		if _, err := pt.Handle(ctx, &p, v); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO orders VALUES ($1, 1, 1, now(), $2::date)`, ago, ds); err != nil {
			t.Fatal(err)
		}
	}

	// While a run holds the pipeline, retention waits for another time.
	args := []string{"retention", "--config", path, "--pipeline", "orders"}
	st := startBare(t, cfg)
	leases, err := lease.New(ctx, st.JS)
	if err != nil {
		t.Fatal(err)
	}
	active := ulid.Make().String()
	if _, err := leases.Acquire(ctx, "orders", active, days[2], time.Minute); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	err = run(ctx, args, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "orders: retention not applied: run "+active) {
		t.Fatalf("err = %v, want the active run named", err)
	}
	if err := leases.Release(ctx, "orders", active); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if err := run(ctx, args, &out, &errb); err != nil {
		t.Fatalf("retention: %v\n%s", err, errb.String())
	}
	d0, d1 := strings.ReplaceAll(days[0], "-", ""), strings.ReplaceAll(days[1], "-", "")
	want := fmt.Sprintf("dropped public.orders_p%s (1 rows), exported to s3://%s/archive/orders/%s.csv.gz\n"+
		"dropped public.orders_p%s (1 rows), exported to s3://%s/archive/orders/%s.csv.gz\n"+
		"orders: 2 partition(s) dropped; partitions from %s on are kept (3 days)\n",
		d0, s3cfg.Bucket, days[0], d1, s3cfg.Bucket, days[1], today.AddDate(0, 0, -3).Format(time.DateOnly))
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant\n%s", out.String(), want)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.orders'::regclass`).Scan(&left); err != nil || left != 1 {
		t.Fatalf("%d partitions left (%v), want 1", left, err)
	}
}

// startBare connects to the test's broker (provisioning its buckets) without any service.
func startBare(t *testing.T, cfg *config.Config) *app.Stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := app.Start(ctx, cfg, telemetry.Logger(io.Discard, slog.LevelInfo), app.Options{NoRouter: true, Provision: true})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = st.Wait() })
	return st
}
