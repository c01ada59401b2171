// Package dbtrunner is the step that upserts a partitioned day into the target table: on
// `partitioned` it runs `dbt build` on the pipeline's selection (the dbt project's sluice_upsert
// model does the upsert and records what it inserted, updated and left unchanged), turns dbt's
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
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
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
	// WorkMem is work_mem for dbt's sessions (config dbt.work_mem); empty: the server's.
	WorkMem string

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
	pg.Tracer = telemetry.PgxTracer{} // reading the upsert's counts is a span of the run's trace
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

// counts is what a day's upsert did to the target, as its statement recorded it.
type counts struct {
	Inserted  int64 // key not in the target yet
	Updated   int64 // in the target with a strictly older version (in any partition)
	Unchanged int64 // in the target with the same or a newer version
	// Partitions says where the rows go: the ds's partition first, then every partition that
	// loses rows to it (an older version moves out) or keeps a newer version (unchanged there).
	Partitions []event.PartitionRows
	recorded   bool // the upsert recorded its counts (it ran)
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
	conn, err := r.openCounts(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

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
	plan, err := readCounts(ctx, conn, p, in.RunID, in.Partition)
	if err != nil {
		return nil, err
	}
	if !plan.recorded {
		// dbt succeeded but the target's upsert did not run: the selection misses the target's
		// model, or the model is not a sluice_upsert (CheckModels warns at start).
		log.Warn("the upsert recorded no counts; does the dbt selection include the target's sluice_upsert model?", "select", p.DBT.Select)
	}
	log.Info("upsert done", "inserted", plan.Inserted, "updated", plan.Updated, "unchanged", plan.Unchanged)
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

// openCounts connects to PostgreSQL for the step's bookkeeping: it makes sure the tables the
// upsert writes besides the target exist (sluice_fences, which the fence pre-hook writes, and
// sluice_upsert_counts, where the upsert statement records what it did), and removes counts an
// earlier attempt of this run left (its completion was lost).
func (r *Runner) openCounts(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, r.pg.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	for _, ensure := range []func(context.Context, fence.DB) error{fence.Ensure, EnsureCounts} {
		if err := ensure(ctx, conn); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	return conn, nil
}

// readCounts reads, and removes, what the upsert statement recorded for this run in
// sluice_upsert_counts (dbt_project/macros/sluice_upsert.sql): per partition holding the stored
// version (schema.name; empty for new keys) the rows inserted, updated and left unchanged, so the
// summary can say which rows move between partitions. The counts come from the statement that did
// the work, in its transaction: no query repeats the upsert's de-duplication and join.
func readCounts(ctx context.Context, conn *pgx.Conn, p config.Pipeline, runID, partition string) (_ counts, err error) {
	ctx, span := tracer(ctx).Start(ctx, "read upsert counts", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system", "postgresql"), attribute.String("db.collection.name", "sluice_upsert_counts")))
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	c := counts{Partitions: []event.PartitionRows{{Partition: partition}}}
	rows, err := conn.Query(ctx, `WITH d AS (
	DELETE FROM sluice_upsert_counts WHERE run_id = $1 AND pipeline = $2
	RETURNING stored_in, inserted, updated, unchanged
)
SELECT coalesce(n.nspname || '.' || c.relname, ''), d.inserted, d.updated, d.unchanged
FROM d LEFT JOIN pg_class AS c ON c.oid = d.stored_in LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
ORDER BY 1`, runID, p.Name)
	if err == nil {
		var part string
		var ins, win, keep int64
		_, err = pgx.ForEachRow(rows, []any{&part, &ins, &win, &keep}, func() error {
			c.add(partition, part, ins, win, keep)
			c.recorded = true
			return nil
		})
	}
	if err != nil {
		return counts{}, fmt.Errorf("read the upsert counts of %s into %s.%s: %w", p.Name, p.Target.Schema, p.Target.Table, err)
	}
	return c, nil
}
