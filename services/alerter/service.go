package alerter

import (
	"context"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the alerter as an app service.
var Service = app.Service{Name: "alerter", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	kv, err := d.JS.KeyValue(ctx, bus.AlertBucket)
	if err != nil {
		return nil, err
	}
	a, err := New(d.Config.Alerts, d.Config.Pipelines, kv, d.Log.With("service", "alerter"))
	if err != nil {
		return nil, err
	}
	handle := func(ctx context.Context, _ *config.Pipeline, in event.Event) (event.Event, error) {
		return nil, a.Handle(ctx, in.(*event.Failed))
	}
	return []flow.Route{{Step: "alerter", Consumes: event.KindFailed, Handle: handle}}, nil
}}
