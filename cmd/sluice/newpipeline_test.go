package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// stockContract is the user's edit of the skeleton: their file's columns, a two-column key,
// no version column (the file run last wins) and monthly partitions.
const stockContract = `{
  "name": "stock",
  "description": "Stock levels per SKU and warehouse.",
  "key": ["sku", "warehouse"],
  "partition": {"column": "snapshot_date", "grain": "month"},
  "columns": [
    {"name": "sku", "type": "text", "required": true},
    {"name": "warehouse", "type": "text", "required": true},
    {"name": "qty", "type": "integer", "required": true, "min": 0},
    {"name": "in_stock", "type": "boolean", "required": true},
    {"name": "attrs", "type": "jsonb"}
  ]
}
`

// copyDir copies the repository's dbt project (without build output) into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() && (rel == "target" || rel == "logs") {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNewPipelineThenRun: `sluice new-pipeline` scaffolds a pipeline; with the contract edited
// to describe the user's CSV (and nothing else edited) `sluice provision` and `sluice run` load it, and a second
// date's file replaces the rows it changes (no version column: the last file wins).
func TestNewPipelineThenRun(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	copyDir(t, filepath.Join(testkit.RepoRoot(t), "dbt_project"), filepath.Join(dir, "dbt_project"))
	files := filepath.Join(dir, "files")
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	csv := map[string]string{
		"2026-05-30": "warehouse,sku,qty,in_stock,attrs\nberlin,a-1,5,true,\"{\"\"color\"\": \"\"red\"\"}\"\nberlin,b-2,0,false,\nparis,a-1,7,t,[1]\n",
		"2026-06-01": "sku,warehouse,qty,in_stock,attrs\na-1,berlin,4,yes,\"{\"\"color\"\": \"\"red\"\"}\"\nc-3,paris,1,1,\n",
	}
	for ds, text := range csv {
		if err := os.WriteFile(filepath.Join(files, ds+".csv"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h, err := samplesource.Handler(samplesource.Options{Dir: files})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()

	ns := testkit.NATS(t)
	pg := testkit.Postgres(t)
	s3cfg := testkit.S3(t)
	setenv(t, testSecrets(ns.ClientURL(), pg, s3cfg))
	// Connections and an empty pipelines list, as a team starts.
	cfgPath := testConfig{bucket: s3cfg.Bucket, dbt: true, dbtProject: "dbt_project", rest: "pipelines:\n"}.writeIn(t, dir)
	contractPath := filepath.Join(dir, "contracts", "stock.json")

	var out bytes.Buffer
	if err := run(ctx, []string{"new-pipeline", "stock", "--contract", contractPath, "--config", cfgPath,
		"--source-url", src.URL + "/data/{ds}.csv"}, &out, &out); err != nil {
		t.Fatalf("new-pipeline: %v\n%s", err, out.String())
	}
	for _, want := range []string{"wrote    " + contractPath, filepath.Join("models", "stock", "stock.sql"), "appended pipeline stock to", "Now edit:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("new-pipeline output lacks %q:\n%s", want, out.String())
		}
	}
	// Running it again refuses to overwrite the models.
	if err := run(ctx, []string{"new-pipeline", "stock", "--contract", contractPath, "--config", cfgPath}, &out, &out); err == nil {
		t.Error("a second new-pipeline stock succeeded")
	}

	// The one edit: the contract.
	if err := os.WriteFile(contractPath, []byte(stockContract), 0o644); err != nil {
		t.Fatal(err)
	}
	// An external broker and database are provisioned once per new pipeline (`sluice up` and
	// `sluice run` on the embedded server do it themselves).
	out.Reset()
	if err := run(ctx, []string{"provision", "--config", cfgPath}, &out, &out); err != nil {
		t.Fatalf("provision: %v\n%s", err, out.String())
	}
	for _, ds := range []string{"2026-05-30", "2026-06-01"} {
		out.Reset()
		if err := run(ctx, []string{"run", "--config", cfgPath, "--pipeline", "stock", "--date", ds}, &out, &out); err != nil {
			t.Fatalf("run %s: %v\n%s", ds, err, out.String())
		}
	}

	conn, err := pgx.Connect(ctx, pg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT tableoid::regclass::text, sku, warehouse, qty, in_stock, coalesce(attrs::text, 'NULL'), snapshot_date::text
		FROM stock ORDER BY sku, warehouse`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var part, sku, wh, attrs, day string
		var qty int32
		var in bool
		if err := rows.Scan(&part, &sku, &wh, &qty, &in, &attrs, &day); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s/%s %d %v %s %s", part, sku, wh, qty, in, attrs, day))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`stock_p202606 a-1/berlin 4 true {"color": "red"} 2026-06-01`,
		`stock_p202605 a-1/paris 7 true [1] 2026-05-30`,
		`stock_p202605 b-2/berlin 0 false NULL 2026-05-30`,
		`stock_p202606 c-3/paris 1 true NULL 2026-06-01`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stock =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPipelinesLast(t *testing.T) {
	for text, want := range map[string]bool{
		"nats:\n  listen: x\npipelines:\n":                   true,
		"pipelines:\n":                                       true,
		"# c\npipelines:\n  - name: a\n# trailing comment\n": true,
		"pipelines:\n  - name: a\ndbt:\n  threads: 2\n":      false,
		"pipelines: {}\n":                                    false,
		"nats: [\n":                                          false,
		"":                                                   false,
		"nats:\n  listen: x\npipelines: []\n":                true,
		"nats:\n  listen: x\npipelines:\n  - name: a\n    x: 1\n": true,
	} {
		if got := pipelinesLast([]byte(text)); got != want {
			t.Errorf("pipelinesLast(%q) = %v, want %v", text, got, want)
		}
	}
}
