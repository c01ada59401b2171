package dbtrunner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/dbtdocs"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// docFiles are what `dbt docs generate` writes that a static docs site needs.
var docFiles = []struct{ name, contentType string }{
	{"index.html", "text/html; charset=utf-8"},
	{"manifest.json", "application/json"},
	{"catalog.json", "application/json"},
}

// DocsPrefix is where a run's dbt docs are published: docs/<pipeline>/<ds>/<run_id>/, which
// sluice's HTTP endpoint serves at /docs/<pipeline>/<ds>/<run_id>/ (package dbtdocs).
func DocsPrefix(pipeline, ds, runID string) string { return dbtdocs.Prefix(pipeline, ds, runID) }

// VersionPrefix is where one version of a pipeline's dbt docs is generated once:
// docs/<pipeline>/versions/<version>/ ("versions" is never a ds, so it never meets a run's prefix).
func VersionPrefix(pipeline, version string) string {
	return "docs/" + pipeline + "/versions/" + version + "/"
}

// docsJob is one completed run whose docs are to be published.
type docsJob struct {
	ctx       context.Context // the run's step (its span), without its cancellation
	manifest  string          // checksum of the manifest the run was built with, if known
	p         config.Pipeline
	ds, runID string
	fence     uint64
}

// docsPublisher keeps dbt docs off the critical path: a run's `completed` does not wait for
// them. In the background, one job at a time, it works out the docs version the run was built
// against (a checksum of what dbt's manifest is parsed from, the project's files and the
// pipelines' contracts, and of the target schema's tables and columns), runs `dbt docs generate`
// only when that version has not been published yet, and copies the version's files to the
// run's own prefix, so every run's docs URL shows the docs it was built against.
type docsPublisher struct {
	r       *Runner
	jobs    chan docsJob
	start   sync.Once
	pending sync.WaitGroup
	stop    context.CancelFunc
	ctx     context.Context
	done    sync.Map // versions published (by pipeline/version)
}

func newDocsPublisher(r *Runner) *docsPublisher {
	ctx, cancel := context.WithCancel(context.Background())
	return &docsPublisher{r: r, jobs: make(chan docsJob, 4096), ctx: ctx, stop: cancel}
}

// enqueue schedules a run's docs; it never blocks the run.
func (d *docsPublisher) enqueue(j docsJob) {
	d.start.Do(func() { go d.loop() })
	d.pending.Add(1)
	select {
	case d.jobs <- j:
	default:
		d.pending.Done()
		d.r.log.Warn("dbt docs queue full: this run's docs are skipped", "pipeline", j.p.Name, "ds", j.ds, "run_id", j.runID,
			"trace_id", telemetry.TraceID(j.ctx), "span_id", telemetry.SpanID(j.ctx))
	}
}

func (d *docsPublisher) loop() {
	for {
		select {
		case j := <-d.jobs:
			d.publish(j)
			d.pending.Done()
		case <-d.ctx.Done():
			for {
				select {
				case <-d.jobs:
					d.pending.Done()
				default:
					return
				}
			}
		}
	}
}

// drain waits up to timeout for the queued docs, then drops what is left.
func (d *docsPublisher) drain(timeout time.Duration) {
	idle := make(chan struct{})
	go func() { d.pending.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-time.After(timeout):
		d.r.log.Warn("dbt docs still pending at shutdown: dropped", "waited", timeout)
	}
	d.stop()
}

func (d *docsPublisher) publish(j docsJob) {
	log := d.r.log.With("pipeline", j.p.Name, "ds", j.ds, "run_id", j.runID,
		"trace_id", telemetry.TraceID(j.ctx), "span_id", telemetry.SpanID(j.ctx))
	// The docs' spans join the run's trace, after its dbt build.
	ctx, cancel := context.WithTimeout(j.ctx, 10*time.Minute)
	defer cancel()
	defer context.AfterFunc(d.ctx, cancel)()
	started := time.Now()
	version, err := d.r.docsVersion(ctx, j.p, j.manifest)
	if err != nil {
		log.Warn("dbt docs not published: no version", "err", err)
		return
	}
	vprefix := VersionPrefix(j.p.Name, version)
	generated := false
	if _, ok := d.done.Load(vprefix); !ok {
		if exists, err := d.exists(ctx, vprefix+"index.html"); err != nil || !exists {
			if err := d.generate(ctx, log, j, vprefix); err != nil {
				log.Warn("dbt docs not published", "version", version, "err", err)
				return
			}
			generated = true
		}
		d.done.Store(vprefix, true)
	}
	prefix := DocsPrefix(j.p.Name, j.ds, j.runID)
	for _, f := range docFiles {
		if err := d.copy(ctx, vprefix+f.name, prefix+f.name); err != nil {
			log.Warn("dbt docs not published", "version", version, "err", err)
			return
		}
	}
	log.Info("dbt docs published", "bucket", d.r.bucket, "key", prefix, "version", version,
		"generated", generated, "duration_ms", time.Since(started).Milliseconds())
}

// generate runs `dbt docs generate` (a dbt subprocess: never in the worker, whose next build
// must not wait for it) and uploads the site under vprefix.
func (d *docsPublisher) generate(ctx context.Context, log *slog.Logger, j docsJob, vprefix string) error {
	inv, err := d.r.newInvocation(j.p, j.ds, j.runID, j.fence)
	if err != nil {
		return err
	}
	defer inv.close()
	inv.background = true
	gctx, span := tracer(ctx).Start(ctx, "dbt docs generate", trace.WithSpanKind(trace.SpanKindClient))
	out, err := inv.run(gctx, "docs", "generate")
	if err != nil {
		if ctx.Err() == nil {
			err = classify(nil, nil, err, out)
			log.Warn("dbt docs generate failed", "err", err, "output", tail(out, 4000))
		}
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return err
	}
	span.End()
	for _, f := range docFiles {
		b, err := os.ReadFile(inv.target(f.name))
		if err != nil {
			return fmt.Errorf("dbt docs generate wrote no %s: %w", f.name, err)
		}
		if err := d.put(ctx, vprefix+f.name, f.contentType, b); err != nil {
			return err
		}
	}
	return nil
}

func (d *docsPublisher) put(ctx context.Context, key, contentType string, b []byte) error {
	ctx, span := tracer(ctx).Start(ctx, "s3 put", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("s3.bucket", d.r.bucket), attribute.String("s3.key", key), attribute.Int("s3.size", len(b))))
	defer span.End()
	_, err := d.r.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket:      aws.String(d.r.bucket),
		Key:         aws.String(key),
		Body:        bytes.NewReader(b),
		ContentType: aws.String(contentType),
	})
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("put object %s: %w", key, err)
	}
	return nil
}

func (d *docsPublisher) copy(ctx context.Context, from, to string) error {
	_, err := d.r.s3.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:     aws.String(d.r.bucket),
		Key:        aws.String(to),
		CopySource: aws.String(url.PathEscape(d.r.bucket) + "/" + (&url.URL{Path: from}).EscapedPath()),
	})
	if err != nil {
		return fmt.Errorf("copy object %s to %s: %w", from, to, err)
	}
	return nil
}

func (d *docsPublisher) exists(ctx context.Context, key string) (bool, error) {
	_, err := d.r.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(d.r.bucket), Key: aws.String(key)})
	var nf *types.NotFound
	var nsk *types.NoSuchKey
	if errors.As(err, &nf) || errors.As(err, &nsk) {
		return false, nil
	}
	return err == nil, err
}

// docsVersion is the version of p's docs as they would be generated now: a checksum of the
// manifest the run was built with (the worker's: every node, source and macro, and the vars; in
// subprocess mode, of what dbt parses it from: the project's files and the pipelines' contracts)
// and of the tables and columns of the target schema (what the catalog reads), without
// partitions, so a new day's partition is not a new version.
func (r *Runner) docsVersion(ctx context.Context, p config.Pipeline, manifest string) (string, error) {
	h := sha256.New()
	if manifest != "" {
		fmt.Fprintf(h, "manifest\x00%s\n", manifest)
	} else {
		if err := hashTree(h, r.projectDir); err != nil {
			return "", err
		}
		vars, err := workerVars(r.specs())
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "vars\x00%s\n", vars)
	}
	conn, err := pgx.ConnectConfig(ctx, r.pg.Copy())
	if err != nil {
		return "", fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition
		ORDER BY c.relname, a.attnum`, p.Target.Schema)
	if err != nil {
		return "", fmt.Errorf("read schema %s: %w", p.Target.Schema, err)
	}
	var rel, kind, col, typ string
	if _, err := pgx.ForEachRow(rows, []any{&rel, &kind, &col, &typ}, func() error {
		fmt.Fprintf(h, "col\x00%s\x00%s\x00%s\x00%s\n", rel, kind, col, typ)
		return nil
	}); err != nil {
		return "", fmt.Errorf("read schema %s: %w", p.Target.Schema, err)
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// hashTree hashes the names and contents of the files under dir, without dbt's own output.
func hashTree(h io.Writer, dir string) error {
	var files []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && path != dir && (slices.Contains([]string{"target", "logs", "dbt_packages"}, e.Name()) || e.Name()[0] == '.') {
			return filepath.SkipDir
		}
		if e.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dbt project: %w", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("dbt project: %w", err)
		}
		rel, _ := filepath.Rel(dir, f)
		fmt.Fprintf(h, "file\x00%s\x00%d\n", rel, len(b))
		_, _ = h.Write(b)
	}
	return nil
}
