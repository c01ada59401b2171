package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/services/dbtrunner"
)

// auditCmd is `sluice audit`: the full-table checks a run's tests make only on the keys it
// touched, on every row of each pipeline's target, in one read-only transaction. It needs only
// PostgreSQL (a reader's credentials are enough) and is meant to be scheduled (a cron job, a
// Kubernetes CronJob: dbt_project/README.md). Exit 0: no violation; 1: violations (or an error).
type auditCmd struct {
	Config   string `default:"sluice.yaml" placeholder:"FILE" help:"config file"`
	Pipeline string `placeholder:"NAME" help:"audit only this pipeline (default: every pipeline in the config)"`
}

func (c *auditCmd) run(ctx context.Context, stdout, _ io.Writer) error {
	cfg, err := config.Load(c.Config, os.LookupEnv)
	if err != nil {
		return err
	}
	pipelines := cfg.Pipelines
	if c.Pipeline != "" {
		p, ok := cfg.Pipeline(c.Pipeline)
		if !ok {
			return fmt.Errorf("pipeline %q is not in %s", c.Pipeline, c.Config)
		}
		pipelines = []config.Pipeline{*p}
	}
	contracts, err := contract.ForPipelines(pipelines, cfg.Dir)
	if err != nil {
		return err
	}
	pool, err := app.PostgresPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// One snapshot for every table; large groupings sort in memory like the upsert's.
	if _, err := tx.Exec(ctx, "SET TRANSACTION READ ONLY"); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT set_config('work_mem', $1, true)", cfg.DBT.WorkMem); err != nil {
		return fmt.Errorf("audit: work_mem: %w", err)
	}
	var failed []string
	for _, p := range pipelines {
		a, err := dbtrunner.AuditTable(ctx, tx, p, contracts[p.Name])
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, a)
		if !a.OK() {
			failed = append(failed, p.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("audit found violations in %d of %d pipelines: %s", len(failed), len(pipelines), strings.Join(failed, ", "))
	}
	return nil
}
