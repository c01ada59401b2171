package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/testkit"
)

const auditConfig = `postgres:
  url: env:AUDIT_PG_URL
s3:
  endpoint: http://127.0.0.1:1
  bucket: audit
  access_key: env:AUDIT_S3_KEY
  secret_key: env:AUDIT_S3_KEY
pipelines:
  - name: orders
    source:
      url: http://127.0.0.1:1/orders/{ds}.csv
  - name: events
    source:
      url: http://127.0.0.1:1/events/{ds}.csv
  - name: customers
    source:
      url: http://127.0.0.1:1/customers/{ds}.csv
    contract: orders
    staging_table: staging_customers
    target:
      table: customers
`

// TestAuditReportsViolationsPerPipeline: `sluice audit` reads every row of each pipeline's
// target and reports, per pipeline, keys stored more than once (across partitions, which
// PostgreSQL cannot prevent) and NULLs in required columns, exiting 1; once they are repaired it
// says ok and exits 0. A pipeline that never ran (no table) is not a violation.
func TestAuditReportsViolationsPerPipeline(t *testing.T) {
	pg := testkit.Postgres(t)
	ctx := t.Context()
	db, err := pgx.Connect(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	// orders as the partitioner makes it; events as an older hand-made table without the NOT NULLs.
	if _, err := db.Exec(ctx, `
CREATE TABLE orders (order_id bigint NOT NULL, customer_id integer NOT NULL, amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL) PARTITION BY RANGE (load_date);
CREATE TABLE orders_p20261124 PARTITION OF orders FOR VALUES FROM ('2026-11-24') TO ('2026-11-25');
CREATE TABLE orders_p20261125 PARTITION OF orders FOR VALUES FROM ('2026-11-25') TO ('2026-11-26');
INSERT INTO orders VALUES (1, 1, 1, now(), '2026-11-24'), (2, 1, 1, now(), '2026-11-24'), (7, 1, 1, now(), '2026-11-24'),
  (7, 1, 2, now(), '2026-11-25'), (8, 1, 1, now(), '2026-11-25');
CREATE TABLE events (account_id bigint, event_id text, revision integer, kind text, note text, billable boolean, payload jsonb, occurred_at timestamptz, batch_date date NOT NULL) PARTITION BY RANGE (batch_date);
CREATE TABLE events_p202611 PARTITION OF events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
INSERT INTO events VALUES (1, 'a', 1, 'k', NULL, true, '{}', now(), '2026-11-24'), (1, 'b', 1, NULL, NULL, true, '{}', now(), '2026-11-24');`); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(auditConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUDIT_PG_URL", pg)
	t.Setenv("AUDIT_S3_KEY", "unused")
	audit := func() (int, string) {
		var out, errb bytes.Buffer
		code := exitCode(run(ctx, []string{"audit", "--config", path}, &out, &errb), &errb)
		return code, out.String() + errb.String()
	}

	code, out := audit()
	t.Logf("sluice audit:\n%s", out)
	if code != 1 {
		t.Fatalf("exit %d with a key stored twice and a NULL in a required column, want 1", code)
	}
	for _, want := range []string{
		"orders (public.orders): 1 keys stored more than once, e.g. order_id=7: 2 rows in [orders_p20261124 orders_p20261125]",
		"events (public.events): 1 rows with NULL in required column kind",
		"customers (public.customers): no table yet",
		"audit found violations in 2 of 3 pipelines: orders, events",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sluice audit does not say %q", want)
		}
	}
	if strings.Contains(out, "column note") {
		t.Error("sluice audit counts NULLs in the optional column note")
	}

	if _, err := db.Exec(ctx, `DELETE FROM orders WHERE order_id = 7 AND load_date = '2026-11-24'; UPDATE events SET kind = 'k'`); err != nil {
		t.Fatal(err)
	}
	if code, out = audit(); code != 0 || !strings.Contains(out, "orders (public.orders): ok: 4 rows") || !strings.Contains(out, "events (public.events): ok: 2 rows") {
		t.Fatalf("after the repair: exit %d\n%s", code, out)
	}
}
