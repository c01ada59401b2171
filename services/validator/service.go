package validator

import (
	"context"
	"fmt"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the validator as an app service.
var Service = app.Service{Name: "validator", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	pool, err := d.Postgres(ctx)
	if err != nil {
		return nil, err
	}
	s3c, err := d.S3(ctx)
	if err != nil {
		return nil, err
	}
	contracts, err := contract.ForPipelines(d.Config.Pipelines, d.Config.Dir)
	if err != nil {
		return nil, err
	}
	v, err := New(pool, s3c, d.Logger("validator"))
	if err != nil {
		return nil, err
	}
	if err := v.Prepare(ctx, d.Config.Pipelines, contracts); err != nil {
		return nil, err
	}
	handle := func(ctx context.Context, p *config.Pipeline, in *event.Landed) (*event.Validated, error) {
		c, ok := contracts[p.Name]
		if !ok {
			return nil, flow.Permanent(fmt.Errorf("no data contract loaded for pipeline %s", p.Name))
		}
		return v.Handle(ctx, *p, c, in)
	}
	claims := func(p *config.Pipeline, in *event.Landed) error { return Claims(d.Config.S3.Bucket, p, in) }
	return []flow.Route{flow.On(event.StepValidator, handle, claims)}, nil
}}

// Claims refuses a landed event whose object is not the pipeline's landing key for the event's
// date in the configured bucket: the validator loads, and deletes rejects next to, nothing else.
func Claims(bucket string, p *config.Pipeline, in *event.Landed) error {
	want := config.Expand(p.Landing.Key, p.Name, in.DS, in.RunID)
	if in.Object.Bucket != bucket || in.Object.Key != want {
		return fmt.Errorf("object s3://%.63s/%.200s is not the landing key of pipeline %s for %s (s3://%s/%s)",
			in.Object.Bucket, in.Object.Key, p.Name, in.DS, bucket, want)
	}
	return nil
}
