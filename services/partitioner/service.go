package partitioner

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the partitioner as an app service.
var Service = app.Service{Name: "partitioner", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	pt, err := FromDeps(ctx, d)
	if err != nil {
		return nil, err
	}
	return []flow.Route{flow.On(event.StepPartitioner, pt.Handle)}, nil
}}

// FromDeps builds a Partitioner from a process's shared dependencies: the pool, the S3 client
// when a pipeline exports partitions before dropping them, and every pipeline's contract.
func FromDeps(ctx context.Context, d *app.Deps) (*Partitioner, error) {
	pool, err := d.Postgres(ctx)
	if err != nil {
		return nil, err
	}
	var s3c *s3.Client
	for _, p := range d.Config.Pipelines {
		if p.Retention.ExportToS3 {
			if s3c, err = d.S3(ctx); err != nil {
				return nil, err
			}
			break
		}
	}
	contracts, err := contract.ForPipelines(d.Config.Pipelines, d.Config.Dir)
	if err != nil {
		return nil, err
	}
	if err := fence.Ensure(ctx, pool); err != nil {
		return nil, err
	}
	if err := CheckTargets(ctx, pool, d.Config.Pipelines, contracts); err != nil {
		return nil, err
	}
	return New(pool, s3c, d.Config.S3.Bucket, contracts, d.Logger("partitioner"))
}
