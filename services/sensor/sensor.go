// Package sensor is sluice's first step: on `requested` it takes the pipeline's lease (one active
// run per pipeline) and checks once whether the source has the ds's file. If not, it hands the
// message back to the broker for redelivery after the poke interval — a waiting run is a stored
// message, not a goroutine, timer or connection — and fails the run after the sensor timeout.
package sensor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/lease"
)

// Service is the sensor as an app service.
var Service = app.Service{Name: "sensor", Routes: func(_ context.Context, d *app.Deps) ([]flow.Route, error) {
	s := New(&http.Client{Timeout: 30 * time.Second}, d.Router.Leases())
	return []flow.Route{{Step: "sensor", Consumes: event.KindRequested, Handle: s.Handle, Workers: 8}}, nil
}}

// Sensor checks sources.
type Sensor struct {
	http   *http.Client
	leases *lease.Leases
	now    func() time.Time
}

// New returns a sensor using client for source checks.
func New(client *http.Client, leases *lease.Leases) *Sensor {
	return &Sensor{http: client, leases: leases, now: time.Now}
}

// Handle takes the lease and checks the source once.
func (s *Sensor) Handle(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
	req := in.(*event.Requested)
	holder, err := s.leases.Acquire(ctx, p.Name, req.RunID, req.DS, p.Lease.TTL)
	if held := (*lease.HeldError)(nil); errors.As(err, &held) {
		if p.Lease.OnBusy == "skip" {
			return nil, fmt.Errorf("%w: %v", flow.ErrSkip, err)
		}
		return nil, flow.Wait(p.Sensor.PokeInterval, "queued behind run %s (ds %s)", held.Holder.RunID, held.Holder.DS)
	}
	if err != nil {
		return nil, err
	}
	url := config.Expand(p.Source.URL, p.Name, req.DS, req.RunID)
	status, err := s.poke(ctx, p.Source.Method, url)
	switch {
	case err == nil && status >= 200 && status < 300:
		run := req.Run
		run.Fence = holder.Fence
		return &event.Available{Run: run, URL: url, Pokes: flow.Attempt(ctx)}, nil
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return nil, flow.Permanentf("source %s answered %d: check the source's credentials", url, status)
	}
	if waited := s.now().Sub(holder.AcquiredAt); waited >= p.Sensor.Timeout {
		why := fmt.Sprintf("answered %d", status)
		if err != nil {
			why = err.Error()
		}
		return nil, flow.Permanentf("source %s not available after %s (%d pokes; last: %s)", url, p.Sensor.Timeout, flow.Attempt(ctx), why)
	}
	if err != nil {
		return nil, flow.Wait(p.Sensor.PokeInterval, "source unreachable: %v", err)
	}
	return nil, flow.Wait(p.Sensor.PokeInterval, "source answered %d", status)
}

// poke asks the source once whether the file is there.
func (s *Sensor) poke(ctx context.Context, method, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close() // a GET sensor only needs the status; the fetcher downloads
	return resp.StatusCode, nil
}
