// Package partitioner creates the ds's partition of a pipeline's target table: on `validated`
// it makes sure the target exists as a table PARTITION BY RANGE on the contract's partition
// column, with an index on the contract's key (the upsert looks rows up by it in every
// partition), and attaches the partition that holds ds: [ds, ds+1 day) for a daily contract,
// the calendar month for a monthly one. Names and bounds come from the parsed date and identifiers are
// quoted, never spliced from raw event text. Writes are fenced by the run's lease token. It also
// enforces the pipeline's retention (retention.go): after the partition is created, and on its
// own with `sluice retention`.
package partitioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Partitioner manages target partitions.
type Partitioner struct {
	pool      *pgxpool.Pool
	s3        *s3.Client
	bucket    string
	contracts map[string]*contract.Contract
	log       *slog.Logger
	now       func() time.Time
}

// New returns a partitioner; contracts maps pipeline name to its data contract. s3c and bucket
// are where partitions are exported before retention drops them (s3c may be nil when no
// pipeline exports).
func New(pool *pgxpool.Pool, s3c *s3.Client, bucket string, contracts map[string]*contract.Contract, log *slog.Logger) (*Partitioner, error) {
	if pool == nil {
		return nil, errors.New("partitioner: a PostgreSQL pool is required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Partitioner{pool: pool, s3: s3c, bucket: bucket, contracts: contracts, log: log, now: time.Now}, nil
}

// PartitionName is the partition table that holds day: <table>_pYYYYMMDD by day, <table>_pYYYYMM
// by month.
func PartitionName(table string, part contract.Partition, day time.Time) string {
	return table + "_p" + part.Suffix(part.Start(day))
}

// partitionStart is the first day of a partition PartitionName made for table; ok is false for
// any other name (a partition created by hand is never touched).
func partitionStart(table string, part contract.Partition, name string) (start time.Time, ok bool) {
	suffix, found := strings.CutPrefix(name, table+"_p")
	if !found {
		return time.Time{}, false
	}
	return part.ParseSuffix(suffix)
}

// CheckTargets fails, naming the contract's file and line, when a pipeline's target table
// already exists with columns its contract contradicts (a column missing or of another type):
// the upsert would fail on every run otherwise.
func CheckTargets(ctx context.Context, q contract.Querier, pipelines []config.Pipeline, contracts map[string]*contract.Contract) error {
	for _, p := range pipelines {
		c, ok := contracts[p.Name]
		if !ok {
			return fmt.Errorf("pipeline %s: no contract loaded", p.Name)
		}
		have, err := contract.TableColumns(ctx, q, pgx.Identifier{p.Target.Schema, p.Target.Table})
		if err != nil {
			return fmt.Errorf("pipeline %s: %w", p.Name, err)
		}
		if len(have) == 0 {
			continue // created on the first run
		}
		if err := c.CheckColumns("target table "+p.Target.Schema+"."+p.Target.Table, have, [2]string{c.Partition.Column, "date"}); err != nil {
			return fmt.Errorf("pipeline %s: %w", p.Name, err)
		}
	}
	return nil
}

// TargetDDL creates the partitioned target from the contract's columns. There is no primary key:
// PostgreSQL requires a unique constraint on a partitioned table to include the partition key,
// so the key's uniqueness across partitions is kept by the dbt upsert (and tested by dbt).
func TargetDDL(c *contract.Contract, t config.Target) string {
	cols := make([]string, 0, len(c.Columns)+1)
	for _, col := range c.Columns {
		def := pgx.Identifier{col.Name}.Sanitize() + " " + string(col.Type)
		if col.Required {
			def += " NOT NULL"
		}
		cols = append(cols, def)
	}
	part := pgx.Identifier{c.Partition.Column}.Sanitize()
	cols = append(cols, part+" date NOT NULL")
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s) PARTITION BY RANGE (%s)",
		pgx.Identifier{t.Schema, t.Table}.Sanitize(), strings.Join(cols, ", "), part)
}

// KeyIndexDDL indexes the target on the contract's key. The upsert deletes the stored version of
// each incoming key from whichever partition holds it and compares versions by key; without this
// index both scan every partition, and a day's load slows down with the table's age.
func KeyIndexDDL(c *contract.Contract, t config.Target) string {
	name := t.Table + "_" + strings.Join(c.Key, "_") + "_idx"
	if len(name) > 63 {
		name = name[:63]
	}
	cols := make([]string, len(c.Key))
	for i, k := range c.Key {
		cols[i] = pgx.Identifier{k}.Sanitize()
	}
	return fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (%s)", pgx.Identifier{name}.Sanitize(),
		pgx.Identifier{t.Schema, t.Table}.Sanitize(), strings.Join(cols, ", "))
}

// PartitionDDL attaches the partition that holds day to the target.
func PartitionDDL(t config.Target, part contract.Partition, day time.Time) string {
	start := part.Start(day)
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
		pgx.Identifier{t.Schema, PartitionName(t.Table, part, start)}.Sanitize(),
		pgx.Identifier{t.Schema, t.Table}.Sanitize(),
		start.Format(time.DateOnly), part.End(start).Format(time.DateOnly))
}

// Handle creates the target (if new) and the ds partition, in one fenced transaction, then
// applies the pipeline's retention.
func (pt *Partitioner) Handle(ctx context.Context, p *config.Pipeline, v *event.Validated) (*event.Partitioned, error) {
	day, err := event.ParseDS(v.DS)
	if err != nil {
		return nil, flow.Permanent(err)
	}
	c, ok := pt.contracts[p.Name]
	if !ok {
		return nil, flow.Permanentf("no data contract loaded for pipeline %s", p.Name)
	}
	if oldest, on := OldestKept(p.Retention, pt.now()); on && Expired(c.Partition, day, oldest) {
		return nil, flow.Permanentf("ds %s is older than the %d-day retention of pipeline %s (oldest kept: %s): its partition would be dropped",
			v.DS, p.Retention.Days, p.Name, oldest.Format(time.DateOnly))
	}
	tx, err := pt.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	for _, stmt := range []string{TargetDDL(c, p.Target), KeyIndexDDL(c, p.Target), PartitionDDL(p.Target, c.Partition, day)} {
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
	// The day's data is safe either way; a retention problem (say, the export bucket refuses
	// writes) is logged and retried by the next run rather than failing this one.
	if _, err := pt.Retention(ctx, p, v.RunID, v.Fence, pt.now()); err != nil {
		pt.log.ErrorContext(ctx, "retention failed; old partitions stay until the next run", "err", err)
	}
	return &event.Partitioned{
		Run:          v.Run,
		Object:       v.Object,
		StagingTable: v.StagingTable,
		Rows:         v.Rows,
		Table:        p.Target.Schema + "." + p.Target.Table,
		Partition:    p.Target.Schema + "." + PartitionName(p.Target.Table, c.Partition, day),
		Quarantine:   v.Quarantine,
	}, nil
}

// classify marks DDL errors that retrying cannot fix as permanent: PostgreSQL's class 42
// (syntax error or access rule violation), which holds an overlapping partition (42P17), a target
// that exists but is not partitioned, an undefined table or a missing privilege.
func classify(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pgerrcode.IsSyntaxErrororAccessRuleViolation(pe.Code) {
		return flow.Permanent(err)
	}
	return err
}
