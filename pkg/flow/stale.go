package flow

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// DropEnded acks a redelivered message of a run that has already ended instead of handling it.
// Such a message is the copy a step left unacked when its process died after publishing: the
// run went on without it and ended, and its lease may already belong to the next run. Handling
// it again would restart the run at that step (the sensor would take the lease again) or fail it
// as fenced, with a `failed` event and an alert for a run that completed.
func (r *Router) DropEnded(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		if r.dropIfEnded(ctx, deliveryOf(ctx)) {
			return nil, nil
		}
		return next(ctx, p, in)
	}
}

func (r *Router) dropIfEnded(ctx context.Context, d *delivery) bool {
	if d.attempt < 2 || terminal(d.rt.Consumes) {
		return false // a first delivery is not a leftover; reports on a run's end act after it
	}
	rec, err := r.runs.Get(ctx, d.run.Pipeline, d.run.DS, d.run.RunID)
	if err != nil || !rec.State.Final() {
		return false
	}
	if rec.Step == string(d.rt.Step) && len(rec.Final) > 0 {
		// This step ended the run and may have died before announcing it: announce it now.
		// A copy already published is dropped by the stream's duplicate window, and the
		// alerter records each alert once, so announcing twice costs nothing.
		if err := r.republish(d.runCtx(ctx), rec); err != nil {
			Logger(ctx).Warn("announce the run's recorded end; will redeliver", "err", err)
			d.settle(outcomeRedeliver, func() error { return d.msg.NakWithDelay(time.Second) })
			return true
		}
	}
	Logger(ctx).Info("run already ended; dropping a leftover delivery", "state", rec.State)
	d.settle(outcomeLeftover, func() error { return d.msg.DoubleAck(ctx) })
	return true
}

// republish publishes the final event recorded with a run's end.
func (r *Router) republish(ctx context.Context, rec runstate.Record) error {
	for _, k := range []event.Kind{event.KindCompleted, event.KindFailed} {
		if e, err := event.Decode(k, rec.Final); err == nil {
			return Publish(ctx, r.js, r.opts.SubjectPrefix, e)
		}
	}
	return fmt.Errorf("run %s: its recorded end is not a completed or failed event", rec.RunID)
}
