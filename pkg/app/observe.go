package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/pkg/dbtdocs"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/source"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// HTTPClient returns a client for a service's calls to sources: each request made for a run is
// a span of the run's trace (its URL redacted) and carries its trace context, and redirects
// follow the source's policy (pkg/source).
func (d *Deps) HTTPClient(timeout time.Duration) *http.Client {
	return source.Client(timeout, nil)
}

// ReadyCheck adds a check to /readyz, for a dependency the service reaches on its own (the dbt
// runner's database connection). Checks get a context bounded to a few seconds.
func (d *Deps) ReadyCheck(name string, check func(context.Context) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checks = append(d.checks, readyCheck{name, check})
}

type readyCheck struct {
	name  string
	check func(context.Context) error
}

// observe sets up what the stack reports: the tracer providers
// (exporting as the OTEL_* variables say), the metrics and the OpenLineage emitter.
func (d *Deps) observe(ctx context.Context, service string, env func(string) (string, bool)) ([]flow.Option, error) {
	tr, err := telemetry.NewTracing(ctx, service, env)
	if err != nil {
		return nil, err
	}
	d.tracing, d.Tracer = tr, tr.Provider
	if d.Metrics, err = metrics.New(d.Registry); err != nil {
		return nil, err
	}
	lc := d.Config.Lineage
	d.lineage = lineage.NewEmitter(lc.Namespace, lc.URL, d.Config.Path(lc.File), d.Log, d.Metrics.LineageEvents)
	return []flow.Option{flow.WithMetrics(d.Metrics), flow.WithRunTracer(tr.Runs),
		flow.WithLineage(d.lineage, lineage.PostgresNamespaces(d.Config.Postgres.URL.Reveal()))}, nil
}

// watch registers the collectors that read the broker: the routes' consumers and the runs.
func (s *Stack) watch(ctx context.Context, routes []flow.Route) error {
	var durables []string
	for _, rt := range routes {
		name := rt.Durable
		if name == "" {
			name = string(rt.Step)
		}
		durables = append(durables, name)
	}
	pipelines := make([]string, len(s.Config.Pipelines))
	for i, p := range s.Config.Pipelines {
		pipelines[i] = p.Name
	}
	runs, err := metrics.WatchRuns(ctx, s.JS, pipelines, s.Log)
	if err != nil {
		return err
	}
	return errors.Join(s.Registry.Register(metrics.NewConsumerCollector(s.JS, s.Config.NATS.Stream, durables)), s.Registry.Register(runs))
}

// readiness is what /readyz checks: connected to NATS, consuming, and every dependency the
// process opened (PostgreSQL, S3) or registered (ReadyCheck) answering.
func (s *Stack) readiness(ctx context.Context) error {
	if st := s.NC.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats: %s", st)
	}
	select {
	case <-s.ready:
	default:
		return errors.New("starting")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s.mu.Lock()
	pool, s3c, checks := s.pool, s.s3, append([]readyCheck(nil), s.checks...)
	s.mu.Unlock()
	if pool != nil {
		if err := pool.Ping(ctx); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
	}
	if s3c != nil {
		if _, err := s3c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.Config.S3.Bucket)}); err != nil {
			return fmt.Errorf("s3 bucket %s: %w", s.Config.S3.Bucket, err)
		}
	}
	for _, c := range checks {
		if err := c.check(ctx); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func (s *Stack) serveReadyz(w http.ResponseWriter, r *http.Request) {
	if err := s.readiness(r.Context()); err != nil {
		http.Error(w, telemetry.RedactString(err.Error(), s.Config.Secrets()), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// docs serves the dbt docs of every run (see package dbtdocs).
func (s *Stack) docs() http.Handler {
	names := make([]string, len(s.Config.Pipelines))
	for i, p := range s.Config.Pipelines {
		names[i] = p.Name
	}
	return &dbtdocs.Handler{
		Bucket:    s.Config.S3.Bucket,
		Pipelines: names,
		Objects:   func(ctx context.Context) (dbtdocs.Objects, error) { return s.S3(ctx) },
		Latest:    latestCompleted(s.Router.Runs()),
	}
}

// latestCompleted finds a pipeline's most recently completed run in the run-state bucket.
func latestCompleted(runs *runstate.Store) dbtdocs.Latest {
	return func(ctx context.Context, pipeline string) (string, string, bool, error) {
		recs, err := runs.List(ctx)
		if err != nil {
			return "", "", false, err
		}
		for _, r := range recs { // newest update first
			if r.Pipeline == pipeline && r.State == runstate.Completed {
				return r.DS, r.RunID, true, nil
			}
		}
		return "", "", false, nil
	}
}

// closeObservability sends the queued lineage events and flushes the traces.
func (d *Deps) closeObservability(ctx context.Context) {
	d.lineage.Close(ctx)
	if d.tracing != nil {
		_ = d.tracing.Shutdown(ctx)
	} else if d.Tracer != nil {
		_ = d.Tracer.Shutdown(ctx)
	}
}
