package dbtrunner

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

func TestConnEnv(t *testing.T) {
	for _, tc := range []struct {
		url     string
		sslmode string
	}{
		{"postgres://u:secret@db.example:5433/wh?sslmode=disable", "disable"},
		{"postgres://u:secret@db.example:5433/wh?sslmode=allow", "allow"},
		{"postgres://u:secret@db.example:5433/wh?sslmode=prefer", "prefer"},
		{"postgres://u:secret@db.example:5433/wh", "prefer"},
		{"postgres://u:secret@db.example:5433/wh?sslmode=require", "require"},
		{"postgres://u:secret@db.example:5433/wh?sslmode=verify-ca", "verify-ca"},
		{"postgres://u:secret@db.example:5433/wh?sslmode=verify-full", "verify-full"},
		{"host=db.example port=5433 user=u password=secret dbname=wh sslmode=require", "require"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			c, err := pgconn.ParseConfig(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			got := connEnv(c, "analytics")
			want := []string{"SLUICE_PG_HOST=db.example", "SLUICE_PG_PORT=5433", "SLUICE_PG_USER=u",
				passwordVar + "=secret", "SLUICE_PG_DBNAME=wh", "SLUICE_PG_SCHEMA=analytics", "SLUICE_PG_SSLMODE=" + tc.sslmode}
			if !slices.Equal(got, want) {
				t.Fatalf("connEnv = %v, want %v", got, want)
			}
		})
	}
}

// TestProfileHoldsNoSettings: the profile file only refers to the environment, and every variable
// it reads is one connEnv sets.
func TestProfileHoldsNoSettings(t *testing.T) {
	c, err := pgconn.ParseConfig("postgres://u:secret@db.example:5433/wh")
	if err != nil {
		t.Fatal(err)
	}
	env := connEnv(c, "public")
	for _, line := range strings.Split(profileYAML, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok || k == "type" || k == "threads" || k == "target" || strings.HasPrefix(k, "#") {
			continue
		}
		name, found := strings.CutPrefix(v, `"{{ env_var('`)
		if !found {
			t.Fatalf("profile key %s is not an env_var reference: %s", k, v)
		}
		name, _, _ = strings.Cut(name, "'")
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
			t.Fatalf("profile reads %s, which connEnv does not set", name)
		}
	}
}

func TestReadRunResults(t *testing.T) {
	rs, err := readRunResults(filepath.Join("testdata", "run_results_fenced.json"))
	if err != nil {
		t.Fatal(err)
	}
	ms := modelResults(rs)
	if len(ms) != 9 {
		t.Fatalf("%d results, want 9", len(ms))
	}
	if m := ms[0]; m.Node != "model.sluice.stg_orders" || m.Status != "success" || m.RowsAffected != -1 || m.Seconds <= 0 {
		t.Fatalf("stg_orders = %+v", m)
	}
	if m := ms[2]; m.Node != "model.sluice.orders" || m.Status != "error" || m.RowsAffected != -1 {
		t.Fatalf("orders = %+v", m)
	}
	if m := ms[8]; m.Status != "skipped" {
		t.Fatalf("last test = %+v, want skipped", m)
	}
	if start, end, ok := rs[2].span(); !ok || !end.After(start) {
		t.Fatalf("orders timing = %v..%v", start, end)
	}
	err = classify(rs, nil, errors.New("exit status 1"), "")
	if !errors.Is(err, fence.ErrFenced) || flow.IsPermanent(err) {
		t.Fatalf("classify = %v, want fenced", err)
	}
	if !strings.Contains(err.Error(), "model.sluice.orders error: Database Error in model orders (models/marts/orders.sql) fenced: a newer run") ||
		strings.Contains(err.Error(), "compiled code at") {
		t.Fatalf("error does not read well: %v", err)
	}
}

func TestClassify(t *testing.T) {
	const (
		permanent = "permanent"
		transient = "transient"
		ok        = "ok"
	)
	node := func(status, msg string) []nodeResult {
		return []nodeResult{{UniqueID: "model.sluice.stg_orders", Status: "success"}, {UniqueID: "model.sluice.orders", Status: status, Message: msg}}
	}
	exit1, exit2 := errors.New("exit status 1"), errors.New("exit status 2")
	for _, tc := range []struct {
		name    string
		results []nodeResult
		readErr error
		runErr  error
		out     string
		want    string
	}{
		{"success", node("success", "INSERT 0 3"), nil, nil, "", ok},
		{"compile error in a model", node("error", "Compilation Error in model orders\n  target \"db\".\"public\".\"orders\" does not exist"), nil, exit1, "", permanent},
		{"failing test", []nodeResult{{UniqueID: "test.sluice.unique_orders_order_id", Status: "fail", Message: "Got 2 results, configured to fail if != 0"}}, nil, exit1, "", permanent},
		{"sql error", node("error", "Database Error in model orders\n  no partition of relation \"orders\" found for row"), nil, exit1, "", permanent},
		{"connection lost in a model", node("error", "Database Error in model orders\n  server closed the connection unexpectedly"), nil, exit1, "", transient},
		{"deadlock", node("error", "Database Error in model orders\n  deadlock detected"), nil, exit1, "", transient},
		{"connection refused before any node", nil, errors.New("no run results"), exit2,
			"19:39:18  Encountered an error:\nDatabase Error\n  connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n", transient},
		{"broken project", nil, errors.New("no run results"), exit2, "Encountered an error:\nParsing Error\n  Error reading sluice: schema.yml", permanent},
		{"missing profile", nil, errors.New("no run results"), exit2, "Encountered an error:\nRuntime Error\n  Could not find profile named 'sluice'", permanent},
		{"crash", nil, errors.New("no run results"), exit2, "Traceback (most recent call last):\nMemoryError", transient},
		{"no results file", nil, errors.New("no run results"), nil, "", transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classify(tc.results, tc.readErr, tc.runErr, tc.out)
			got := ok
			if err != nil {
				got = transient
				if flow.IsPermanent(err) {
					got = permanent
				}
			}
			if got != tc.want {
				t.Fatalf("classify = %s (%v), want %s", got, err, tc.want)
			}
		})
	}
}

// TestGuardRefusesToCreateTarget runs the model through real dbt without the partitioned target,
// then with an unpartitioned one: both fail for good and dbt creates or changes nothing.
func TestGuardRefusesToCreateTarget(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testkit.Postgres(t)
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, `CREATE TABLE staging_orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL, run_id text NOT NULL);
		INSERT INTO staging_orders VALUES (1, 10, 1, '2026-11-24T10:00:00Z', '2026-11-24', 'r')`); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, url)
	p := config.Pipeline{Name: "orders", StagingTable: "staging_orders", DBT: config.Select{Select: "+orders"},
		Target: config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"}}

	if err := fence.Ensure(ctx, db); err != nil {
		t.Fatal(err)
	}
	build := func() error {
		inv, err := r.newInvocation(p, "2026-11-24", "RUNGUARD", 1)
		if err != nil {
			t.Fatal(err)
		}
		defer inv.close()
		_, err = inv.build(ctx, r.log, p.DBT.Select)
		return err
	}

	err = build()
	if !flow.IsPermanent(err) || !strings.Contains(err.Error(), `"public"."orders" does not exist`) {
		t.Fatalf("without target: err = %v, want a permanent error saying orders does not exist", err)
	}
	var reg *string
	if err := db.QueryRow(ctx, "SELECT to_regclass('public.orders')::text").Scan(&reg); err != nil {
		t.Fatal(err)
	}
	if reg != nil {
		t.Fatalf("dbt created %s", *reg)
	}

	if _, err := db.Exec(ctx, `CREATE TABLE orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	err = build()
	if !flow.IsPermanent(err) || !strings.Contains(err.Error(), "is not a partitioned table") {
		t.Fatalf("unpartitioned target: err = %v, want a permanent error", err)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("dbt wrote %d rows into the unpartitioned table", n)
	}
}

// TestUnreachableDatabaseIsTransient: dbt failing to connect is retried, not failed for good.
func TestUnreachableDatabaseIsTransient(t *testing.T) {
	t.Parallel()
	r := newRunner(t, "postgres://postgres:pw-unreachable@127.0.0.1:1/none?sslmode=disable")
	p := config.Pipeline{Name: "orders", StagingTable: "staging_orders", DBT: config.Select{Select: "+orders"},
		Target: config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"}}

	if _, err := r.openCounts(t.Context()); err == nil || flow.IsPermanent(err) || strings.Contains(err.Error(), "pw-unreachable") {
		t.Fatalf("open counts: err = %v, want a transient error without the password", err)
	}
	inv, err := r.newInvocation(p, "2026-11-24", "RUNDOWN", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.close()
	_, err = inv.build(t.Context(), r.log, p.DBT.Select)
	if err == nil || flow.IsPermanent(err) || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("dbt build: err = %v, want a transient connection error", err)
	}
	if strings.Contains(err.Error(), "pw-unreachable") {
		t.Fatal("the error holds the password")
	}
	if _, err := os.Stat(filepath.Join(inv.dir, "profiles.yml")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(inv.dir, "profiles.yml"))
	if strings.Contains(string(b), "pw-unreachable") {
		t.Fatal("the profile file holds the password")
	}
}

func newRunner(t *testing.T, url string) *Runner {
	t.Helper()
	c, err := objstore.New(t.Context(), config.S3{Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	r, err := New(testkit.DBT(t), filepath.Join(testkit.RepoRoot(t), "dbt_project"), 1, url, c, "unused", log)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPreHookRefusesNoToken: no fence, no write. The model's pre-hook used to skip the fence
// check for a token of 0 (or none) and upsert anyway; now dbt refuses before touching the table.
func TestPreHookRefusesNoToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := testkit.Postgres(t)
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, `CREATE TABLE staging_orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL, run_id text NOT NULL);
		INSERT INTO staging_orders VALUES (1, 10, 1, '2026-11-24T10:00:00Z', '2026-11-24', 'r');
		CREATE TABLE orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL) PARTITION BY RANGE (load_date);
		CREATE TABLE orders_p20261124 PARTITION OF orders FOR VALUES FROM ('2026-11-24') TO ('2026-11-25')`); err != nil {
		t.Fatal(err)
	}
	if err := fence.Ensure(ctx, db); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, url)
	p := config.Pipeline{Name: "orders", StagingTable: "staging_orders", DBT: config.Select{Select: "orders"},
		Target: config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"}}
	inv, err := r.newInvocation(p, "2026-11-24", "RUNNOFENCE", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer inv.close()
	if _, err := inv.build(ctx, r.log, p.DBT.Select); err == nil || !strings.Contains(err.Error(), "no fencing token") {
		t.Fatalf("dbt build with fence 0: err = %v, want the pre-hook's refusal", err)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("an upsert without a fencing token wrote %d rows", n)
	}
}
