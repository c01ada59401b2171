// Package dbtrunner is the step that upserts a partitioned day into the target table: on
// `partitioned` it counts what the day will insert, update and leave unchanged, runs `dbt build`
// on the pipeline's selection (the dbt project's incremental model does the upsert), turns dbt's
// run results into per-node results and trace spans, and returns the `completed` event; the dbt
// docs the run was built against are published to S3 under docs/<pipeline>/<ds>/<run_id>/ in the
// background (docs.go). dbt runs in a warm worker process the runner supervises (worker.go), or
// as a subprocess per command with its own profile and target directory; either way its
// connection settings reach it through environment variables, never a file or argument.
package dbtrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Runner runs dbt for partitioned days.
type Runner struct {
	dbt        string
	projectDir string
	threads    int
	pg         *pgx.ConnConfig
	s3         *s3.Client
	bucket     string
	log        *slog.Logger
	// CancelGrace is how long dbt gets to cancel its queries and exit after ctx is cancelled
	// (it is sent an interrupt) before it is killed.
	CancelGrace time.Duration

	worker *worker        // nil: dbt runs as a subprocess per command (UseWorker)
	docs   *docsPublisher // dbt docs, in the background

	mu sync.Mutex
	// contracts and staging are the known pipelines' data contracts and staging tables, by
	// pipeline name: UsePipelines sets them, a pipeline handled without it loads its contract.
	contracts map[string]*contract.Contract
	staging   map[string]string
	schemas   []string // target schemas of the configured pipelines, in config order
}

// New returns a Runner. dbt is the executable (a path, or a name looked up in PATH), projectDir
// the dbt project, threads dbt's thread count, pgURL the resolved PostgreSQL URL, and s3c and
// bucket where docs are published.
func New(dbt, projectDir string, threads int, pgURL string, s3c *s3.Client, bucket string, log *slog.Logger) (*Runner, error) {
	exe, err := exec.LookPath(dbt)
	if err != nil {
		return nil, fmt.Errorf("dbt executable %q: %w", dbt, err)
	}
	// dbt runs in a temp dir, where a relative path would no longer resolve.
	if exe, err = filepath.Abs(exe); err != nil {
		return nil, fmt.Errorf("dbt executable %q: %w", dbt, err)
	}
	if _, err := os.Stat(filepath.Join(projectDir, "dbt_project.yml")); err != nil {
		return nil, fmt.Errorf("dbt project: %w", err)
	}
	abs, err := filepath.Abs(projectDir)
	if err != nil {
		return nil, fmt.Errorf("dbt project: %w", err)
	}
	if threads < 1 {
		return nil, fmt.Errorf("dbt threads must be at least 1, got %d", threads)
	}
	pg, err := pgx.ParseConfig(pgURL)
	if err != nil {
		// Parse errors can echo parts of the URL; say only that it is invalid.
		return nil, errors.New("postgres url: invalid connection settings")
	}
	pg.Tracer = telemetry.PgxTracer{} // the counting query is a span of the run's trace
	if s3c == nil || bucket == "" {
		return nil, errors.New("dbt docs need an S3 client and bucket")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{dbt: exe, projectDir: abs, threads: threads, pg: pg, s3: s3c, bucket: bucket,
		log: log, CancelGrace: 15 * time.Second, contracts: map[string]*contract.Contract{}, staging: map[string]string{}}
	r.docs = newDocsPublisher(r)
	return r, nil
}

// UseWorker makes the runner build in a warm dbt worker (worker.go) instead of a dbt process
// per run, and starts it now in the background, parsing the project for the first pipeline's
// target schema, so the first run finds it warm. Call it after UsePipelines.
func (r *Runner) UseWorker(opts WorkerOptions) error {
	if r.worker != nil {
		return errors.New("dbt worker already in use")
	}
	w, err := newWorker(r, opts)
	if err != nil {
		return err
	}
	r.worker = w
	vars, err := workerVars(r.specs())
	if err != nil {
		return err
	}
	schema := "public"
	r.mu.Lock()
	if len(r.schemas) > 0 {
		schema = r.schemas[0]
	}
	r.mu.Unlock()
	w.warm(vars, schema)
	return nil
}

// Close stops the worker and waits up to docsGrace for the docs of completed runs.
func (r *Runner) Close(docsGrace time.Duration) {
	if r.worker != nil {
		r.worker.close()
	}
	r.docs.drain(docsGrace)
}

// redact removes the database password from text dbt printed.
func (r *Runner) redact(s string) string {
	if r.pg.Password == "" {
		return s
	}
	return strings.ReplaceAll(s, r.pg.Password, "xxxxx")
}

// UsePipelines tells the runner every configured pipeline and its contract (contracts is keyed
// by pipeline name, see contract.ForPipelines): each dbt invocation gets all of them in var
// sluice_pipelines, so the whole project compiles. It first checks that every pipeline's
// target model uses the sluice macros (CheckModels) and logs those that have none.
func (r *Runner) UsePipelines(pipelines []config.Pipeline, contracts map[string]*contract.Contract) error {
	missing, err := CheckModels(r.projectDir, pipelines)
	if err != nil {
		return err
	}
	for _, m := range missing {
		r.log.Warn("pipeline has no upsert model; its runs will fail at dbt", "problem", m)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range pipelines {
		c, ok := contracts[p.Name]
		if !ok {
			return fmt.Errorf("pipeline %s: no contract loaded", p.Name)
		}
		r.contracts[p.Name], r.staging[p.Name] = c, p.StagingTable
		r.schemas = append(r.schemas, p.Target.Schema)
	}
	return nil
}

// contractFor returns p's contract: the one UsePipelines gave, or else its built-in contract
// (p.Contract, or the pipeline's name), loaded once.
func (r *Runner) contractFor(p config.Pipeline) (*contract.Contract, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.contracts[p.Name]; ok {
		return c, nil
	}
	ref := p.Contract
	if ref == "" {
		ref = p.Name
	}
	c, err := contract.Load(ref, r.projectDir)
	if err != nil {
		return nil, flow.Permanent(fmt.Errorf("pipeline %s: %w", p.Name, err))
	}
	r.contracts[p.Name], r.staging[p.Name] = c, p.StagingTable
	return c, nil
}

// specs is var sluice_pipelines: every known pipeline's contract as the dbt macros read it.
func (r *Runner) specs() map[string]contract.Spec {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]contract.Spec, len(r.contracts))
	for name, c := range r.contracts {
		out[name] = c.Spec(r.staging[name])
	}
	return out
}

// runIDRe is what a run id may look like (a ULID fits); it ends up in an S3 key and in dbt vars.
var runIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// counts is what a day's upsert does to the target, computed before dbt runs.
type counts struct {
	Inserted  int64 // key not in the target yet
	Updated   int64 // in the target with a strictly older version (in any partition)
	Unchanged int64 // in the target with the same or a newer version
	// Partitions says where the rows go: the ds's partition first, then every partition that
	// loses rows to it (an older version moves out) or keeps a newer version (unchanged there).
	Partitions []event.PartitionRows
}

// add counts the staged rows whose stored version is in partition part ("" for none) toward
// target, the ds's partition: ins new, win newer than the stored version, keep not newer.
func (c *counts) add(target, part string, ins, win, keep int64) {
	c.Inserted, c.Updated, c.Unchanged = c.Inserted+ins, c.Updated+win, c.Unchanged+keep
	at := func(name string) *event.PartitionRows {
		for i := range c.Partitions {
			if c.Partitions[i].Partition == name {
				return &c.Partitions[i]
			}
		}
		c.Partitions = append(c.Partitions, event.PartitionRows{Partition: name})
		return &c.Partitions[len(c.Partitions)-1]
	}
	switch part {
	case "":
		at(target).Inserted += ins
	case target:
		t := at(target)
		t.Updated, t.Unchanged = t.Updated+win, t.Unchanged+keep
	default:
		o := at(part) // may grow the slice: look up target after it
		o.MovedOut, o.Unchanged = o.MovedOut+win, o.Unchanged+keep
		at(target).MovedIn += win
	}
}

// Handle runs dbt for one partitioned ds and returns the completed event.
func (r *Runner) Handle(ctx context.Context, p config.Pipeline, in *event.Partitioned) (*event.Completed, error) {
	if in.Pipeline != p.Name {
		return nil, flow.Permanentf("event for pipeline %q handled as pipeline %q", in.Pipeline, p.Name)
	}
	day, err := event.ParseDS(in.DS)
	if err != nil {
		return nil, flow.Permanent(err)
	}
	ds := day.Format(time.DateOnly)
	if !runIDRe.MatchString(in.RunID) {
		return nil, flow.Permanentf("run id %q is not a plain token", in.RunID)
	}
	log := r.log.With("pipeline", p.Name, "ds", ds, "run_id", in.RunID, "trace_id", telemetry.TraceID(ctx), "span_id", telemetry.SpanID(ctx))

	if in.Fence == 0 {
		return nil, flow.Permanentf("run %s carries no fencing token: no fence, no write", in.RunID)
	}
	plan, err := r.count(ctx, p, ds, in.Partition)
	if err != nil {
		return nil, err
	}
	log.Info("upsert planned", "inserted", plan.Inserted, "updated", plan.Updated, "unchanged", plan.Unchanged)

	inv, err := r.newInvocation(p, ds, in.RunID, in.Fence)
	if err != nil {
		return nil, err
	}
	defer inv.close()

	started := time.Now()
	results, err := inv.build(ctx, log, p.DBT.Select)
	if err != nil {
		return nil, fmt.Errorf("dbt build: %w", err)
	}
	models := modelResults(results)
	for _, m := range models {
		if isTargetModel(m.Node, p.Target.Table) && m.RowsAffected != plan.Inserted+plan.Updated {
			// Not an error (the data is right either way), but it means something else wrote the
			// target between the count and the upsert, which the lease should have prevented.
			log.Warn("dbt upserted a different number of rows than counted", "node", m.Node,
				"rows_affected", m.RowsAffected, "counted", plan.Inserted+plan.Updated)
		}
	}
	log.Info("dbt build done", "nodes", len(models), "duration_ms", time.Since(started).Milliseconds())

	// The docs are published in the background (docs.go): completed does not wait for them.
	docsKey := DocsPrefix(p.Name, ds, in.RunID)
	r.docs.enqueue(docsJob{ctx: context.WithoutCancel(ctx), manifest: inv.manifest, p: p, ds: ds, runID: in.RunID, fence: in.Fence})

	return &event.Completed{
		Run:        in.Run,
		Object:     in.Object,
		Table:      in.Table,
		Partition:  in.Partition,
		Staged:     in.Rows,
		Inserted:   plan.Inserted,
		Updated:    plan.Updated,
		Unchanged:  plan.Unchanged,
		Partitions: plan.Partitions,
		Models:     models,
		DocsKey:    docsKey,
		Quarantine: in.Quarantine,
	}, nil
}

// count computes, in one query, what upserting ds's staging slice into the target will do: the
// slice deduplicated by the contract's key (the greatest version wins, as in the dbt model)
// left-joined to the target. It also makes sure the fencing table the model's pre-hook writes
// exists.
func (r *Runner) count(ctx context.Context, p config.Pipeline, ds, partition string) (_ counts, err error) {
	ctx, span := tracer(ctx).Start(ctx, "count upsert", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.String("db.collection.name", p.Target.Schema+"."+p.Target.Table)))
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	conn, err := pgx.ConnectConfig(ctx, r.pg.Copy())
	if err != nil {
		return counts{}, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := fence.Ensure(ctx, conn); err != nil {
		return counts{}, err
	}
	con, err := r.contractFor(p)
	if err != nil {
		return counts{}, err
	}
	c := counts{Partitions: []event.PartitionRows{{Partition: partition}}}
	rows, err := conn.Query(ctx, countSQL(p, con), ds)
	if err == nil {
		var part string
		var ins, win, keep int64
		_, err = pgx.ForEachRow(rows, []any{&part, &ins, &win, &keep}, func() error {
			c.add(partition, part, ins, win, keep)
			return nil
		})
	}
	if err != nil {
		err = fmt.Errorf("count upsert of %s.%s into %s.%s: %w", p.Target.Schema, p.StagingTable, p.Target.Schema, p.Target.Table, err)
		var pe *pgconn.PgError
		// Class 42 (undefined table or column, no privilege) will not fix itself on retry.
		if errors.As(err, &pe) && pgerrcode.IsSyntaxErrororAccessRuleViolation(pe.Code) {
			return counts{}, flow.Permanent(err)
		}
		return counts{}, err
	}
	return c, nil
}

// isTargetModel reports whether a dbt node is the model named like the target table.
func isTargetModel(node, table string) bool {
	return strings.HasPrefix(node, "model.") && strings.HasSuffix(node, "."+table)
}

// countSQL mirrors the upsert's rule (dbt_project/macros/sluice_upsert.sql): with a version
// column, a staged row replaces the stored one when its version is greater, or equal and its date
// earlier; without one, when any value (or the date) differs. Unchanged rows are the rest. It
// counts per partition holding the stored version (schema.name; empty for new keys), so the
// summary can say which rows move between partitions.
func countSQL(p config.Pipeline, c *contract.Contract) string {
	id := func(col string) string { return pgx.Identifier{col}.Sanitize() }
	keys := make([]string, len(c.Key))
	join := make([]string, len(c.Key))
	for i, k := range c.Key {
		keys[i] = id(k)
		join[i] = "t." + id(k) + " = s." + id(k)
	}
	part := id(c.Partition.Column)
	selected, order, replaces := keys, keys, ""
	if v := c.VersionColumn; v != "" {
		selected = append(slices.Clone(keys), id(v))
		order = append(slices.Clone(keys), id(v)+" DESC")
		replaces = fmt.Sprintf("t.%[1]s < s.%[1]s OR (t.%[1]s = s.%[1]s AND $1::date < t.%[2]s)", id(v), part)
	} else {
		// The row the model keeps: ties broken on the other columns, greatest first.
		var sv, tv []string
		for _, col := range c.Columns {
			sv, tv = append(sv, "s."+id(col.Name)), append(tv, "t."+id(col.Name))
			if !slices.Contains(c.Key, col.Name) {
				order = append(order, id(col.Name)+" DESC")
			}
		}
		selected = make([]string, 0, len(c.Columns))
		for _, col := range c.Columns {
			selected = append(selected, id(col.Name))
		}
		replaces = fmt.Sprintf("(%s, $1::date) IS DISTINCT FROM (%s, t.%s)", strings.Join(sv, ", "), strings.Join(tv, ", "), part)
	}
	return fmt.Sprintf(`WITH s AS (
	SELECT DISTINCT ON (%[1]s) %[2]s
	FROM %[3]s
	WHERE %[4]s = $1::date
	ORDER BY %[5]s
), j AS (
	SELECT t.tableoid AS part,
	       count(*) FILTER (WHERE t.%[6]s IS NULL) AS ins,
	       count(*) FILTER (WHERE t.%[6]s IS NOT NULL AND (%[7]s)) AS win,
	       count(*) FILTER (WHERE t.%[6]s IS NOT NULL AND NOT (%[7]s)) AS keep
	FROM s LEFT JOIN %[8]s AS t ON %[9]s
	GROUP BY t.tableoid
)
SELECT coalesce(n.nspname || '.' || c.relname, ''), j.ins, j.win, j.keep
FROM j LEFT JOIN pg_class AS c ON c.oid = j.part LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
ORDER BY 1`,
		strings.Join(keys, ", "), strings.Join(selected, ", "),
		pgx.Identifier{p.Target.Schema, p.StagingTable}.Sanitize(), // where the validator loads it
		part, strings.Join(order, ", "), keys[0], replaces,
		pgx.Identifier{p.Target.Schema, p.Target.Table}.Sanitize(), strings.Join(join, " AND "))
}
