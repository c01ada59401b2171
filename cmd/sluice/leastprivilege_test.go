package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// serviceRoles is the PostgreSQL role each service connects as (deploy/postgres/roles.sql);
// "" for the services that get no database.
var serviceRoles = map[string]string{
	"sensor": "", "fetcher": "", "alerter": "",
	"validator": "sluice_loader", "partitioner": "sluice_partitioner", "dbtrunner": "sluice_dbt",
}

// roleURL is the test database's URL as role (the test cluster trusts local connections, so a
// role needs no password there).
func roleURL(t *testing.T, admin, role string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, cfg.Database)
}

// startLeastPrivilegeEnv is startEnv's system as compose runs it: NATS with the exact permission
// file deploy/nats/auth.conf, `sluice provision` run once as admin (with deploy/postgres/roles.sql),
// and then each of the six services started on its own connection as its own NATS user and
// PostgreSQL role, none of which may create anything.
func startLeastPrivilegeEnv(t *testing.T, sourceURL string) *env {
	t.Helper()
	ns, pw := authServer(t)
	s3cfg := testkit.S3(t)
	slackSrv, slack := testkit.Slack(t)
	e := &env{pg: testkit.Postgres(t), smtp: testkit.SMTP(t), slack: slack, logs: &syncBuffer{}, events: &eventLog{}}
	c := e2eConfig(t, s3cfg.Bucket, slackSrv, e.smtp, sourceURL, 2*time.Minute)
	c.natsAuth = true
	path := c.write(t)
	e.secret = testSecrets(ns.ClientURL(), e.pg, s3cfg)
	e.secret["NATS_USER"], e.secret["NATS_PASSWORD"], e.secret["SLACK_TOKEN"] = "admin", pw["admin"], "xoxb-e2e-secret-token"
	setenv(t, e.secret)
	t.Setenv("SLUICE_PG_READER_PASSWORD", "reader's \"secret\"")
	// Provisioning, as the compose one-shot does it: admin on NATS, the superuser on PostgreSQL.
	var out bytes.Buffer
	roles := filepath.Join(testkit.RepoRoot(t), "deploy", "postgres", "roles.sql")
	if err := run(context.Background(), []string{"provision", "--config", path, "--roles", roles}, &out, &out); err != nil {
		t.Fatalf("sluice provision: %v\n%s", err, out.String())
	}
	t.Logf("sluice provision: %s", out.String())
	// It set the password it was given, quoted by the server, and told so.
	if !strings.Contains(out.String(), "(1 passwords set)") {
		t.Errorf("sluice provision did not set the reader's password: %s", out.String())
	}
	if pg, err := pgx.Connect(context.Background(), e.pg); err != nil {
		t.Fatal(err)
	} else {
		var set bool
		err := pg.QueryRow(context.Background(), "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'sluice_reader'").Scan(&set)
		pg.Close(context.Background())
		if err != nil || !set {
			t.Errorf("sluice_reader has no password (%v)", err)
		}
	}
	admin := connectAs(t, ns, "admin", pw["admin"])
	e.nc = admin.NC
	if _, err := e.nc.Subscribe("etl.>", e.events.add); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := telemetry.Logger(e.logs, slog.LevelDebug)
	for _, svc := range allServices {
		own := map[string]string{"NATS_USER": svc.Name, "NATS_PASSWORD": pw[svc.Name],
			// A service without a database gets an address nothing listens on: it never connects.
			"PG_URL": "postgres://no_database@127.0.0.1:1/none?sslmode=disable"}
		if role := serviceRoles[svc.Name]; role != "" {
			own["PG_URL"] = roleURL(t, e.pg, role)
		}
		cfg, err := config.Load(path, func(k string) (string, bool) {
			if v, ok := own[k]; ok {
				return v, true
			}
			v, ok := e.secret[k]
			return v, ok
		})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if e.cfg == nil {
			e.cfg = cfg
		}
		st, err := app.Start(ctx, cfg, log, app.Options{}, svc)
		if err != nil {
			cancel()
			t.Fatalf("start %s as its own user: %v\n%s", svc.Name, err, e.logs.String())
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
	return e
}

// TestLeastPrivilegeRun runs a date end to end with every service on its own NATS user
// (deploy/nats/auth.conf) and PostgreSQL role (deploy/postgres/roles.sql), then shows what the
// roles may not do.
func TestLeastPrivilegeRun(t *testing.T) {
	opts := samplesource.Options{Rows: 200, UpdateRatio: 0.2}
	h, err := samplesource.Handler(opts)
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	e := startLeastPrivilegeEnv(t, src.URL)

	d1, d2 := "2026-11-24", "2026-11-25"
	for _, ds := range []string{d1, d2} {
		id := e.request(t, ds)
		if _, ok := e.wait(t, id, 4*time.Minute).(*event.Completed); !ok {
			t.Fatalf("run %s of %s did not complete: %+v", id, ds, e.events.find(id, event.KindFailed))
		}
	}
	diff(t, e.orders(t), expected(t, opts, d1, d2))
	// Provisioning again (a new release, an added pipeline) changes nothing that exists.
	var out bytes.Buffer
	roles := filepath.Join(testkit.RepoRoot(t), "deploy", "postgres", "roles.sql")
	if err := run(context.Background(), []string{"provision", "--config", e.cfg.Path("sluice.yaml"), "--roles", roles}, &out, &out); err != nil {
		t.Fatalf("sluice provision again: %v\n%s", err, out.String())
	}
	diff(t, e.orders(t), expected(t, opts, d1, d2))
	id := e.request(t, d2)
	if _, ok := e.wait(t, id, 4*time.Minute).(*event.Completed); !ok {
		t.Fatalf("rerun after provisioning again did not complete: %+v", e.events.find(id, event.KindFailed))
	}
	if strings.Contains(e.logs.String(), "nats refused") {
		t.Errorf("the server refused a service something during the run:\n%s", e.logs.String())
	}
	checkRoles(t, e.pg)
}

// checkRoles shows, on a provisioned database, what each role may not do: drop the target,
// truncate a staging table, read what is not granted to it.
func checkRoles(t *testing.T, adminURL string) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// Another pipeline's staging table (not among this deployment's pipelines) and a table
	// outside sluice's schema.
	for _, stmt := range []string{
		"CREATE TABLE IF NOT EXISTS public.staging_refunds (refund_id bigint, load_date date)",
		"INSERT INTO public.staging_refunds VALUES (1, '2026-11-25')",
		"CREATE SCHEMA IF NOT EXISTS finance",
		"CREATE TABLE IF NOT EXISTS finance.salaries (name text, amount numeric)",
		"INSERT INTO finance.salaries VALUES ('x', 1)",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	var supers int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'sluice\\_%' AND (rolsuper OR rolcreaterole OR rolcreatedb)").Scan(&supers); err != nil || supers != 0 {
		t.Errorf("%d sluice roles may create roles or databases or are superusers (%v)", supers, err)
	}
	var staged, target int
	if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM staging_orders), (SELECT count(*) FROM orders)").Scan(&staged, &target); err != nil {
		t.Fatal(err)
	}
	refused := map[string][]string{
		"sluice_loader": {
			"DROP TABLE orders", "TRUNCATE staging_orders", "TRUNCATE staging_refunds", "DELETE FROM staging_refunds",
			"SELECT count(*) FROM orders", "SELECT count(*) FROM finance.salaries", "CREATE TABLE public.x (a int)",
		},
		"sluice_partitioner": {
			"DROP TABLE orders", "DROP TABLE orders CASCADE", "TRUNCATE staging_orders", "SELECT count(*) FROM staging_orders",
			"SELECT count(*) FROM finance.salaries", "SELECT count(*) FROM staging_refunds",
		},
		"sluice_dbt": {
			"DROP TABLE orders", "TRUNCATE staging_orders", "TRUNCATE staging_refunds", "DELETE FROM staging_orders",
			"SELECT count(*) FROM finance.salaries", "SELECT count(*) FROM staging_refunds",
		},
		"sluice_reader": {
			"DROP TABLE orders", "TRUNCATE staging_orders", "DELETE FROM orders", "INSERT INTO sluice_fences VALUES ('x', 1, 'r')",
			"SELECT count(*) FROM finance.salaries", "SELECT count(*) FROM staging_refunds", "CREATE TABLE public.x (a int)",
		},
	}
	allowed := map[string][]string{
		"sluice_loader":      {"SELECT count(*) FROM staging_orders", "DELETE FROM staging_orders WHERE load_date = '1999-01-01'", "SELECT count(*) FROM sluice_fences"},
		"sluice_partitioner": {"SELECT count(*) FROM orders", "CREATE TABLE IF NOT EXISTS public.orders_p19990101 PARTITION OF orders FOR VALUES FROM ('1999-01-01') TO ('1999-01-02')", "ALTER TABLE orders DETACH PARTITION public.orders_p19990101", "DROP TABLE public.orders_p19990101"},
		"sluice_dbt":         {"SELECT count(*) FROM staging_orders", "SELECT count(*) FROM orders", "DELETE FROM orders WHERE load_date = '1999-01-01'"},
		"sluice_reader":      {"SELECT count(*) FROM orders", "SELECT count(*) FROM staging_orders", "SELECT count(*) FROM sluice_fences"},
	}
	for role, stmts := range refused {
		conn, err := pgx.Connect(ctx, roleURL(t, adminURL, role))
		if err != nil {
			t.Fatalf("connect as %s: %v", role, err)
		}
		for _, stmt := range allowed[role] {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Errorf("%s may not %s: %v", role, stmt, err)
			}
		}
		for _, stmt := range stmts {
			if _, err := conn.Exec(ctx, stmt); err == nil {
				t.Errorf("%s could %s", role, stmt)
			} else if !strings.Contains(err.Error(), "permission denied") && !strings.Contains(err.Error(), "must be owner") &&
				!strings.Contains(err.Error(), "may drop daily partitions only") {
				t.Errorf("%s: %s: refused for another reason than privilege: %v", role, stmt, err)
			}
		}
		conn.Close(ctx)
	}
	var staged2, target2 int
	if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM staging_orders), (SELECT count(*) FROM orders)").Scan(&staged2, &target2); err != nil {
		t.Fatalf("orders or staging gone: %v", err)
	}
	if staged2 != staged || target2 != target {
		t.Errorf("rows changed: staging %d -> %d, orders %d -> %d", staged, staged2, target, target2)
	}
}
