package dbtrunner

import (
	"context"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the dbt runner as an app service.
var Service = app.Service{Name: "dbtrunner", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	s3c, err := d.S3(ctx)
	if err != nil {
		return nil, err
	}
	cfg := d.Config
	exe := cfg.DBT.Executable
	if strings.ContainsRune(exe, '/') {
		exe = cfg.Path(exe) // a relative path is relative to the config file; a bare name is looked up in PATH
	}
	r, err := New(exe, cfg.Path(cfg.DBT.ProjectDir), cfg.DBT.Threads, cfg.Postgres.URL.Reveal(), s3c, cfg.S3.Bucket,
		d.Logger("dbtrunner"))
	if err != nil {
		return nil, err
	}
	r.WorkMem = cfg.DBT.WorkMem
	contracts, err := contract.ForPipelines(cfg.Pipelines, cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := r.UsePipelines(cfg.Pipelines, contracts); err != nil {
		return nil, err
	}
	if cfg.DBT.Mode != "subprocess" {
		py := cfg.DBT.Worker.Python
		if strings.ContainsRune(py, '/') {
			py = cfg.Path(py)
		}
		if err := r.UseWorker(WorkerOptions{Python: py, MaxRuns: cfg.DBT.Worker.MaxRuns, MaxRSSMB: cfg.DBT.Worker.MaxRSSMB}); err != nil {
			return nil, err
		}
	}
	// Stopping: the worker ends, and the docs of completed runs get a minute to be published.
	d.OnClose(func() { r.Close(time.Minute) })
	// dbt connects on its own; /readyz checks that the database answers (through the pool).
	d.ReadyCheck("postgres", func(ctx context.Context) error { _, err := d.Postgres(ctx); return err })
	handle := func(ctx context.Context, p *config.Pipeline, in *event.Partitioned) (*event.Completed, error) {
		return r.Handle(ctx, *p, in)
	}
	return []flow.Route{flow.On(event.StepDBTRunner, handle)}, nil
}}
