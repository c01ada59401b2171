package alerter

import (
	"context"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Service is the alerter as an app service: one route (and durable consumer) per event kind it
// reports on, so a backlog of one kind never holds up another.
var Service = app.Service{Name: "alerter", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	kv, err := bus.KeyValue(ctx, d.JS, bus.AlertBucket)
	if err != nil {
		return nil, err
	}
	opts := app.BusOptions(d.Config)
	a, err := New(d.Config.Alerts, d.Config.Pipelines, kv, d.Logger("alerter"),
		WithRuns(d.Router.Runs()), WithBroker(d.JS, opts.Stream, opts.SubjectPrefix), WithAlertCounter(d.Metrics.Alerts))
	if err != nil {
		return nil, err
	}
	for _, p := range d.Config.Pipelines { // series at zero, so the first failure shows in increase()
		for _, ch := range p.Alerts {
			for _, outcome := range []string{"sent", "failed", "duplicate"} {
				d.Metrics.Alerts.WithLabelValues(p.Name, string(ch), outcome)
			}
		}
	}
	handle := func(ctx context.Context, _ *config.Pipeline, in event.Event) (event.Event, error) {
		return nil, a.Handle(ctx, in)
	}
	return []flow.Route{
		{Step: "alerter", Consumes: event.KindFailed, Handle: handle},
		{Step: "alerter", Durable: "alerter-sla", Consumes: event.KindSLAMissed, Handle: handle},
		{Step: "alerter", Durable: "alerter-completed", Consumes: event.KindCompleted, Handle: handle},
	}, nil
}}
