// Package partitioner creates the day's partition of a pipeline's target table: on `validated`
// it makes sure the target exists as a table PARTITION BY RANGE on the partition column and
// attaches a partition [ds, ds+1 day). Names and bounds come from the parsed date and identifiers
// are quoted, never spliced from raw event text. Writes are fenced by the run's lease token.
package partitioner

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the partitioner as an app service.
var Service = app.Service{Name: "partitioner", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	pool, err := d.Postgres(ctx)
	if err != nil {
		return nil, err
	}
	contracts, err := contract.ForPipelines(d.Config.Pipelines, d.Config.Dir)
	if err != nil {
		return nil, err
	}
	pt := New(pool, contracts)
	if err := fence.Ensure(ctx, pool); err != nil {
		return nil, err
	}
	return []flow.Route{{Step: "partitioner", Consumes: event.KindValidated, Handle: pt.Handle}}, nil
}}

// Partitioner manages target partitions.
type Partitioner struct {
	pool      *pgxpool.Pool
	contracts map[string]*contract.Contract
}

// New returns a partitioner; contracts maps pipeline name to its data contract.
func New(pool *pgxpool.Pool, contracts map[string]*contract.Contract) *Partitioner {
	return &Partitioner{pool: pool, contracts: contracts}
}

// PartitionName is the partition table for day: <table>_pYYYYMMDD.
func PartitionName(table string, day time.Time) string {
	return table + "_p" + day.Format("20060102")
}

// TargetDDL creates the partitioned target from the contract's columns. There is no primary key:
// PostgreSQL requires a unique constraint on a partitioned table to include the partition key,
// so order_id uniqueness across partitions is kept by the dbt upsert (and tested by dbt).
func TargetDDL(c *contract.Contract, t config.Target) string {
	cols := make([]string, 0, len(c.Columns)+1)
	for _, col := range c.Columns {
		def := pgx.Identifier{col.Name}.Sanitize() + " " + string(col.Type)
		if col.Required {
			def += " NOT NULL"
		}
		cols = append(cols, def)
	}
	cols = append(cols, pgx.Identifier{t.PartitionColumn}.Sanitize()+" date NOT NULL")
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s) PARTITION BY RANGE (%s)",
		pgx.Identifier{t.Schema, t.Table}.Sanitize(), strings.Join(cols, ", "), pgx.Identifier{t.PartitionColumn}.Sanitize())
}

// PartitionDDL attaches the partition for day to the target.
func PartitionDDL(t config.Target, day time.Time) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
		pgx.Identifier{t.Schema, PartitionName(t.Table, day)}.Sanitize(),
		pgx.Identifier{t.Schema, t.Table}.Sanitize(),
		day.Format(time.DateOnly), day.AddDate(0, 0, 1).Format(time.DateOnly))
}

// Handle creates the target (if new) and the ds partition, in one fenced transaction.
func (pt *Partitioner) Handle(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
	v := in.(*event.Validated)
	day, err := event.ParseDS(v.DS)
	if err != nil {
		return nil, flow.Permanent(err)
	}
	c, ok := pt.contracts[p.Name]
	if !ok {
		return nil, flow.Permanentf("no data contract loaded for pipeline %s", p.Name)
	}
	tx, err := pt.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	for _, stmt := range []string{TargetDDL(c, p.Target), PartitionDDL(p.Target, day)} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return nil, classify(fmt.Errorf("%s: %w", stmt, err))
		}
	}
	if err := fence.Check(ctx, tx, p.Name, v.RunID, v.Fence); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return &event.Partitioned{
		Run:          v.Run,
		Object:       v.Object,
		StagingTable: v.StagingTable,
		Rows:         v.Rows,
		Table:        p.Target.Schema + "." + p.Target.Table,
		Partition:    p.Target.Schema + "." + PartitionName(p.Target.Table, day),
	}, nil
}

// classify marks DDL errors that retrying cannot fix (an overlapping partition, a target that
// exists but is not partitioned) as permanent.
func classify(err error) error {
	msg := err.Error()
	for _, s := range []string{"would overlap", "is not partitioned", "SQLSTATE 42"} {
		if strings.Contains(msg, s) {
			return flow.Permanent(err)
		}
	}
	return err
}
