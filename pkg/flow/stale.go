package flow

import (
	"context"

	"github.com/sluice-etl/sluice/pkg/metrics"
)

// dropIfEnded acks a redelivered message of a run that has already ended and reports whether it
// did. Such a message is the copy a step left unacked when its process died after publishing:
// the run went on without it and ended, and its lease may already belong to the next run.
// Handling it again would restart the run at that step (the sensor would take the lease again)
// or fail it as fenced, with a `failed` event and an alert for a run that completed.
func (r *Router) dropIfEnded(ctx context.Context, d *delivery) bool {
	if d.attempt < 2 || terminal(d.rt.Consumes) {
		return false // a first delivery is not a leftover; reports on a run's end act after it
	}
	rec, err := r.runs.Get(ctx, d.run.Pipeline, d.run.DS, d.run.RunID)
	if err != nil || !rec.State.Final() {
		return false
	}
	Logger(ctx).Info("run already ended; dropping a leftover delivery", "state", rec.State)
	_ = d.msg.DoubleAck(ctx)
	r.done(ctx, d, metrics.OutcomeSkip)
	return true
}
