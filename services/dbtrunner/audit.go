package dbtrunner

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
)

// Audit is what a full-table audit found in one pipeline's target: the checks a run's tests make
// on the keys it touched (dbt_project/macros/sluice_tests.sql), made on every row.
type Audit struct {
	Pipeline string
	Table    string // schema.table
	Missing  bool   // the target does not exist yet (no run has created it)
	Rows     int64
	// DuplicateKeys is how many keys are stored more than once; Examples shows a few of them
	// (key values, how many rows, which partitions).
	DuplicateKeys int64
	Examples      []string
	// Nulls counts the NULLs in each column that must have a value (the key and the contract's
	// required columns); only columns with some are listed.
	Nulls map[string]int64
}

// OK reports whether the audit found no violation.
func (a Audit) OK() bool { return a.DuplicateKeys == 0 && len(a.Nulls) == 0 }

// String is one line per finding, naming the pipeline and table.
func (a Audit) String() string {
	head := fmt.Sprintf("%s (%s)", a.Pipeline, a.Table)
	switch {
	case a.Missing:
		return head + ": no table yet (the partitioner creates it on the first run): nothing to audit"
	case a.OK():
		return fmt.Sprintf("%s: ok: %d rows, every key stored once, no NULL where a value is required", head, a.Rows)
	}
	var lines []string
	if a.DuplicateKeys > 0 {
		lines = append(lines, fmt.Sprintf("%s: %d keys stored more than once, e.g. %s", head, a.DuplicateKeys, strings.Join(a.Examples, "; ")))
	}
	cols := make([]string, 0, len(a.Nulls))
	for c := range a.Nulls {
		cols = append(cols, c)
	}
	slices.Sort(cols)
	for _, c := range cols {
		lines = append(lines, fmt.Sprintf("%s: %d rows with NULL in required column %s", head, a.Nulls[c], c))
	}
	return strings.Join(lines, "\n")
}

// QueryRower runs a query for one row: a *pgx.Conn, pgx.Tx or *pgxpool.Pool.
type QueryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// AuditTable checks a pipeline's whole target: every key stored once (PostgreSQL cannot enforce
// it on a table partitioned by another column) and no NULL in the key or a required column.
// It reads every row (two scans), so it is a scheduled job (`sluice audit`), not part of a run.
func AuditTable(ctx context.Context, db QueryRower, p config.Pipeline, c *contract.Contract) (Audit, error) {
	a := Audit{Pipeline: p.Name, Table: p.Target.Schema + "." + p.Target.Table, Nulls: map[string]int64{}}
	table := pgx.Identifier{p.Target.Schema, p.Target.Table}.Sanitize()
	var exists bool
	if err := db.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
		return a, fmt.Errorf("audit %s: look up %s: %w", p.Name, a.Table, err)
	}
	if !exists {
		a.Missing = true
		return a, nil
	}
	id := func(col string) string { return pgx.Identifier{col}.Sanitize() }
	keys := make([]string, len(c.Key))
	notNull := make([]string, len(c.Key))
	for i, k := range c.Key {
		keys[i], notNull[i] = id(k), id(k)+" IS NOT NULL"
	}
	dups := fmt.Sprintf(`WITH d AS (
	SELECT %[1]s, count(*) AS n, array_agg(DISTINCT tableoid::regclass::text) AS parts
	FROM %[2]s WHERE %[3]s GROUP BY %[1]s HAVING count(*) > 1
)
SELECT (SELECT count(*) FROM d),
       coalesce((SELECT json_agg(x) FROM (SELECT * FROM d ORDER BY n DESC, %[1]s LIMIT 3) AS x), '[]')`,
		strings.Join(keys, ", "), table, strings.Join(notNull, " AND "))
	var examples []byte
	if err := db.QueryRow(ctx, dups).Scan(&a.DuplicateKeys, &examples); err != nil {
		return a, fmt.Errorf("audit %s: duplicate keys in %s: %w", p.Name, a.Table, err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(examples, &rows); err != nil {
		return a, fmt.Errorf("audit %s: %w", p.Name, err)
	}
	for _, r := range rows {
		kv := make([]string, len(c.Key))
		for i, k := range c.Key {
			kv[i] = fmt.Sprintf("%s=%v", k, r[k])
		}
		a.Examples = append(a.Examples, fmt.Sprintf("%s: %v rows in %v", strings.Join(kv, ", "), r["n"], r["parts"]))
	}

	var required []string
	for _, col := range c.Columns {
		if col.Required || slices.Contains(c.Key, col.Name) {
			required = append(required, col.Name)
		}
	}
	counts := make([]string, 0, len(required)+1)
	counts = append(counts, "count(*)")
	for _, col := range required {
		counts = append(counts, "count(*) FILTER (WHERE "+id(col)+" IS NULL)")
	}
	vals := make([]int64, len(counts))
	dest := make([]any, len(vals))
	for i := range vals {
		dest[i] = &vals[i]
	}
	if err := db.QueryRow(ctx, "SELECT "+strings.Join(counts, ", ")+" FROM "+table).Scan(dest...); err != nil {
		return a, fmt.Errorf("audit %s: NULLs in %s: %w", p.Name, a.Table, err)
	}
	a.Rows = vals[0]
	for i, col := range required {
		if n := vals[i+1]; n > 0 {
			a.Nulls[col] = n
		}
	}
	return a, nil
}
