// Package sensor is sluice's first step: on `requested` it takes the pipeline's lease (one active
// run per pipeline) and checks once whether the source has the ds's file. If not, it hands the
// message back to the broker for redelivery after the poke interval (growing by the pipeline's
// backoff up to its cap, shortened by jitter) — a waiting run is a stored message, not a
// goroutine, timer or connection — and ends the run after the sensor timeout: failed, or skipped
// with soft_fail. In push mode a signed POST /hooks/<pipeline> marks a ds available at once
// (webhook.go).
package sensor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/source"
)

// Sensor checks sources.
type Sensor struct {
	http   *http.Client
	leases *lease.Leases
	// runs tells the lease queue which runs ended without taking the lease; nil: none did.
	runs *runstate.Store
	// marks are the webhooks' "available" marks; nil when no pipeline has a webhook.
	marks *marks
	now   func() time.Time
	rand  func() float64
}

// New returns a sensor using client for source checks.
func New(client *http.Client, leases *lease.Leases) *Sensor {
	return &Sensor{http: client, leases: leases, now: time.Now, rand: rand.Float64}
}

// minWait keeps a wait that the timeout clamps from becoming a busy loop.
const minWait = 10 * time.Millisecond

// Handle takes the lease and checks the source (or the webhook's mark) once.
func (s *Sensor) Handle(ctx context.Context, p *config.Pipeline, req *event.Requested) (*event.Available, error) {
	marked, err := s.marked(ctx, p, req)
	if err != nil {
		return nil, err
	}
	if marked == markSent {
		// The webhook completed this run's sensor step and could not remove the parked message:
		// this delivery is that stale copy. Dropping it must not touch the lease.
		flow.Logger(ctx).Info("webhook already published available for this run; dropping the parked request")
		return nil, nil
	}
	holder, err := s.takeTurn(ctx, p, req)
	if err != nil {
		return nil, err
	}
	run := req.Run
	run.Fence = holder.Fence
	url := source.Display(p, req.DS, req.RunID) // as it may be shown: credentials redacted
	if marked == markReady {
		return &event.Available{Run: run, URL: url, Pokes: max(holder.Pokes, 1), LeaseAt: holder.AcquiredAt}, nil
	}
	status, err := s.poke(ctx, p, req.DS, req.RunID)
	switch {
	case err == nil && Ready(p.Sensor, status):
		return &event.Available{Run: run, URL: url, Pokes: max(holder.Pokes, 1), LeaseAt: holder.AcquiredAt}, nil
	case err == nil && (status == http.StatusUnauthorized || status == http.StatusForbidden):
		return nil, flow.Permanentf("source %s answered %d: check the source's credentials", url, status)
	case errors.Is(err, source.ErrRedirect):
		return nil, flow.Permanent(err)
	}
	why := fmt.Sprintf("answered %d", status)
	if err != nil {
		why = "unreachable: " + err.Error()
	}
	waited := s.now().Sub(holder.AcquiredAt)
	if waited >= p.Sensor.Timeout {
		msg := fmt.Sprintf("source %s not available after %s (%d pokes; last: %s)", url, p.Sensor.Timeout, holder.Pokes, why)
		if !p.Sensor.SoftFail {
			return nil, flow.Permanent(errors.New(msg))
		}
		// The router ends a skipped run and releases its lease.
		return nil, fmt.Errorf("%w (soft_fail): %s", flow.ErrSkip, msg)
	}
	return nil, flow.Wait(NextWait(p.Sensor, waited, s.rand()), "source %s %s", url, why)
}

// takeTurn takes the pipeline's lease for the run if it is the run's turn: the run already holds
// it (a redelivery while it waits for its file), or the lease is free and no run requested
// before it still waits (lease/queue.go). Otherwise the run waits its turn, or is skipped with
// on_busy: skip.
func (s *Sensor) takeTurn(ctx context.Context, p *config.Pipeline, req *event.Requested) (lease.Holder, error) {
	h, held, err := s.leases.Get(ctx, p.Name)
	if err != nil {
		return lease.Holder{}, err
	}
	mine := held && h.RunID == req.RunID
	skip := func(why string) error {
		if err := s.leases.Leave(ctx, p.Name, req.RunID); err != nil {
			flow.Logger(ctx).Warn("leave the lease queue", "err", err)
		}
		return fmt.Errorf("%w: %s", flow.ErrSkip, why)
	}
	if held && !mine && p.Lease.OnBusy == config.OnBusySkip {
		return lease.Holder{}, skip(fmt.Sprintf("lease held by run %s (ds %s)", h.RunID, h.DS))
	}
	if !mine {
		if err := s.leases.Join(ctx, p.Name, lease.Entry{Seq: flow.Sequence(ctx), DS: req.DS, RunID: req.RunID}); err != nil {
			return lease.Holder{}, err
		}
		head, ahead, err := s.leases.Turn(ctx, p.Name, req.RunID, s.ended(ctx, p.Name))
		if err != nil {
			return lease.Holder{}, err
		}
		wait := jittered(p.Sensor, p.Sensor.PokeInterval, s.rand())
		if head.RunID != req.RunID {
			if held {
				return lease.Holder{}, flow.Queue(wait, "behind run %s (ds %s), %d run(s) ahead", h.RunID, h.DS, ahead)
			}
			return lease.Holder{}, flow.Queue(wait, "behind run %s (ds %s, requested first), %d run(s) ahead", head.RunID, head.DS, ahead)
		}
		if held {
			return lease.Holder{}, flow.Queue(wait, "behind run %s (ds %s), next in line", h.RunID, h.DS)
		}
	}
	holder, err := s.leases.Acquire(ctx, p.Name, req.RunID, req.DS, p.Lease.TTL)
	if held := (*lease.HeldError)(nil); errors.As(err, &held) {
		if p.Lease.OnBusy == config.OnBusySkip {
			return lease.Holder{}, skip(err.Error())
		}
		// Another run took the lease between the look and the take (a run that held it expired
		// and came back): wait, still at the head.
		return lease.Holder{}, flow.Queue(jittered(p.Sensor, p.Sensor.PokeInterval, s.rand()), "behind run %s (ds %s), next in line", held.Holder.RunID, held.Holder.DS)
	}
	if err != nil {
		return lease.Holder{}, err
	}
	if !mine {
		if err := s.leases.Leave(ctx, p.Name, req.RunID); err != nil {
			flow.Logger(ctx).Warn("leave the lease queue", "err", err)
		}
	}
	return holder, nil
}

// ended reports queue entries whose runs ended without taking the lease.
func (s *Sensor) ended(ctx context.Context, pipeline string) func(lease.Entry) bool {
	if s.runs == nil {
		return nil
	}
	return func(e lease.Entry) bool {
		rec, err := s.runs.Get(ctx, pipeline, e.DS, e.RunID)
		return err == nil && rec.State.Final()
	}
}

// Ready reports whether a source's status code means the file is there: one of the pipeline's
// ready_status codes, or any 2xx when none are listed.
func Ready(s config.Sensor, status int) bool {
	if len(s.ReadyStatus) == 0 {
		return status >= 200 && status < 300
	}
	return slices.Contains(s.ReadyStatus, status)
}

// NextWait is how long to park a run that has held the lease for waited without seeing its
// file; r in [0,1) draws the jitter. With backoff factor f the k-th wait is poke·f^k, and the
// time waited before it is poke·(f^k−1)/(f−1), so that wait is also poke + (f−1)·waited: the
// schedule needs no poke counter, only the lease's acquisition time. The wait is capped at
// max_interval, shortened (never lengthened) by jitter, and ends at the timeout, not after it.
func NextWait(s config.Sensor, waited time.Duration, r float64) time.Duration {
	d := s.PokeInterval
	if s.Backoff > 1 {
		d += time.Duration((s.Backoff - 1) * float64(waited))
	}
	if limit := s.MaxWait(); d > limit || d < 0 {
		d = limit
	}
	d = jittered(s, d, r)
	if left := s.Timeout - waited; d > left {
		d = left
	}
	return max(d, minWait)
}

func jittered(s config.Sensor, d time.Duration, r float64) time.Duration {
	return d - time.Duration(s.JitterShare()*r*float64(d))
}

// poke asks the source once whether the file is there. A hung source must not outlive the
// lease, which only this poke renews while the run waits.
func (s *Sensor) poke(ctx context.Context, p *config.Pipeline, ds, runID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, min(30*time.Second, p.Lease.TTL/2))
	defer cancel()
	req, err := source.NewRequest(ctx, p, p.Source.Method, ds, runID)
	if err != nil {
		return 0, err
	}
	resp, err := source.Do(s.http, req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close() // a GET sensor only needs the status; the fetcher downloads
	return resp.StatusCode, nil
}
