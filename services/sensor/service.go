package sensor

import (
	"context"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// Service is the sensor as an app service.
var Service = app.Service{Name: "sensor", Routes: func(ctx context.Context, d *app.Deps) ([]flow.Route, error) {
	s := New(d.HTTPClient(30*time.Second), d.Router.Leases())
	s.runs = d.Router.Runs()
	req := trigger.New(d.JS, d.Router.Runs(), d.Tracer, app.BusOptions(d.Config))
	if err := s.ServeWebhooks(ctx, d, req); err != nil {
		return nil, err
	}
	// The sensor's process also runs the schedule (pkg/trigger): ticks → requested.
	if err := trigger.StartScheduler(ctx, d.Router, req, d.Config.Pipelines, d.Logger("sensor").With("step", "scheduler")); err != nil {
		return nil, err
	}
	rt := flow.On(event.StepSensor, s.Handle)
	rt.Workers = 8
	return []flow.Route{rt}, nil
}}
