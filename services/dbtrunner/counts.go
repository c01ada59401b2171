package dbtrunner

import (
	"context"
	"fmt"

	"github.com/sluice-etl/sluice/pkg/fence"
)

// CountsTable is where the upsert statement (dbt_project/macros/sluice_upsert.sql) records, in its
// own transaction, what it did: per run, pipeline and partition that held the stored version (its
// oid; NULL for new keys), the rows inserted, updated and left unchanged. The dbt-runner reads
// and deletes a run's rows right after dbt, so the table holds only runs in flight.
const CountsTable = "sluice_upsert_counts"

// EnsureCounts creates sluice_upsert_counts unless it exists (`sluice provision` makes it and
// grants it to sluice_dbt, which may not create tables there).
func EnsureCounts(ctx context.Context, db fence.DB) error {
	tag, err := db.Exec(ctx, `SELECT 1 WHERE to_regclass('sluice_upsert_counts') IS NULL`)
	if err != nil {
		return fmt.Errorf("look up %s: %w", CountsTable, err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	if _, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS sluice_upsert_counts (
		run_id    text NOT NULL,
		pipeline  text NOT NULL,
		stored_in oid,
		inserted  bigint NOT NULL,
		updated   bigint NOT NULL,
		unchanged bigint NOT NULL,
		recorded  timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create %s: %w", CountsTable, err)
	}
	return nil
}
