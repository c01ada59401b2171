package fetcher

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/source"
)

// Service is the fetcher as an app service.
var Service = app.Service{Name: "fetcher", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	c, err := d.S3(ctx)
	if err != nil {
		return nil, err
	}
	f, err := New(d.HTTPClient(30*time.Minute), c, d.Config.S3.Bucket, d.Logger("fetcher"))
	if err != nil {
		return nil, err
	}
	return []flow.Route{flow.On(event.StepFetcher, f.Handle, Claims)}, nil
}}

// Claims refuses an available event whose URL is not the pipeline's configured source for the
// event's date: the fetcher fetches what the config says, never what an event says.
func Claims(p *config.Pipeline, av *event.Available) error {
	if want := source.Display(p, av.DS, av.RunID); av.URL != want {
		return fmt.Errorf("url %.200q is not the source of pipeline %s for %s (%s)", av.URL, p.Name, av.DS, want)
	}
	return nil
}
