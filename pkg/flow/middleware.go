package flow

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/crash"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/lease"
)

// The middleware that decide what happens to a delivery: retry classification around the core,
// and, around the step itself, the lease guard, the step's deadline and panic recovery.

// Classify settles a delivery whose step returned an error, by the error's class (errors.go): a
// wait naks the message for the wait's delay; a skip terminates it; a permanent error, a lost
// lease or a fence fails the run at once; any other error is retried with the pipeline's policy
// and fails the run once the retries are spent. The error still goes out, for the middleware
// around it to report.
func (r *Router) Classify(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		out, err := next(ctx, p, in)
		d := deliveryOf(ctx)
		if err == nil || d.outcome != outcomeNone {
			return out, err
		}
		var wait *WaitError
		switch {
		case errors.As(err, &wait):
			d.wait = wait
			d.settle(outcomeWait, func() error { return d.msg.NakWithDelay(wait.Delay) })
			Logger(ctx).Debug("waiting", "reason", wait.Reason, "delay", wait.Delay)
		case errors.Is(err, ErrSkip):
			d.cause = err
			d.settle(outcomeSkip, d.msg.Term)
			Logger(ctx).Info("run skipped", "reason", err.Error())
		case IsPermanent(err):
			r.fail(ctx, d, event.ClassPermanent, err)
		case errors.Is(err, lease.ErrLost) || errors.Is(err, fence.ErrFenced):
			r.fail(ctx, d, event.ClassFenced, err)
		default:
			r.retry(ctx, d, p, err)
		}
		return out, err
	}
}

// retry parks the message for the pipeline's retry delay, or fails the run when its retries are
// spent.
func (r *Router) retry(ctx context.Context, d *delivery, p *config.Pipeline, err error) {
	policy := p.RetryPolicy(string(d.rt.Step))
	if d.attempt > policy.MaxRetries() {
		class := event.ClassTransient
		if errors.Is(err, ErrDeadline) {
			class = event.ClassTimeout
		}
		r.fail(ctx, d, class, fmt.Errorf("gave up after %d attempts: %w", d.attempt, err))
		return
	}
	delay := policy.DelayFor(d.attempt, rand.Float64())
	// A run parked for a retry keeps its lease for the wait: nothing renews it meanwhile, and a
	// lease shorter than the delay would hand the pipeline to the next run and fence this one.
	if leased(d.rt.Consumes) {
		if err := r.leases.Renew(ctx, p.Name, d.run.RunID, d.run.Fence, delay+p.Lease.TTL); err != nil {
			Logger(ctx).Warn("extend lease for the retry", "err", err)
		}
	}
	Logger(ctx).Warn("step failed; will retry", "err", err, "retry_in", delay)
	d.cause, d.next = err, time.Now().Add(delay).UTC()
	d.detail = fmt.Sprintf("retry %d of %d at %s", d.attempt, policy.MaxRetries(), d.next.Local().Format(time.TimeOnly))
	d.settle(outcomeRetry, func() error { return d.msg.NakWithDelay(delay) })
}

// fail ends the run at this step (Router.Fail) and terminates the message. A report on a run's
// end (the alerter) that fails for good is only logged: there is no run left to end.
func (r *Router) fail(ctx context.Context, d *delivery, class event.FailureClass, cause error) {
	run := d.run
	Logger(ctx).Error(fmt.Sprintf("%s %s %s: %v", run.Pipeline, run.DS, d.rt.Step, cause), "class", class)
	d.class, d.cause = class, cause
	if terminal(d.rt.Consumes) {
		d.settle(outcomeFailed, d.msg.Term)
		return
	}
	if err := r.Fail(d.runCtx(ctx), *run, d.rt.Step, d.attempt, class, cause); err != nil {
		Logger(ctx).Warn("publish failed event; will redeliver", "err", err)
		d.settle(outcomeRedeliver, func() error { return d.msg.NakWithDelay(time.Second) })
		return
	}
	crash.Point(string(d.rt.Step), crash.AfterPublish)
	d.settle(outcomeFailed, d.msg.Term)
}

// LeaseGuard lets a step handled under the run's lease (every step after the sensor, which
// takes it, until the run's end) work only while the run holds it: the lease is confirmed
// before the step (a lost one fails the run as fenced, through Classify) and renewed while the
// step works. Every step's message is kept from redelivery meanwhile (in-progress acks).
func (r *Router) LeaseGuard(next Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		run, holds := in.Header(), leased(in.Kind())
		if holds {
			if err := r.leases.Renew(ctx, p.Name, run.RunID, run.Fence, p.Lease.TTL); err != nil {
				return nil, err
			}
		}
		stop := r.heartbeat(ctx, deliveryOf(ctx), p, holds)
		defer stop()
		return next(ctx, p, in)
	}
}

// heartbeat keeps a long handler's message and lease alive until stop is called.
func (r *Router) heartbeat(ctx context.Context, d *delivery, p *config.Pipeline, holdsLease bool) (stop func()) {
	every := 10 * time.Second
	if holdsLease && p.Lease.TTL/3 < every {
		every = p.Lease.TTL / 3
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if d.msg != nil {
					_ = d.msg.InProgress()
				}
				if holdsLease {
					if err := r.leases.Renew(ctx, p.Name, d.run.RunID, d.run.Fence, p.Lease.TTL); err != nil && ctx.Err() == nil {
						Logger(ctx).Warn("lease renew failed", "err", err)
					}
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// ErrDeadline is a step that passed its deadline (pipelines[].deadlines): it was cancelled and is
// retried like any transient failure.
var ErrDeadline = errors.New("step deadline passed")

// Deadline runs step under its deadline (pipelines[].deadlines): a hung statement or request is
// cancelled and returns ErrDeadline, retried like any transient failure, instead of holding the
// pipeline forever. A wait is not a step passing its deadline.
func Deadline(step event.Step) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
			limit := p.StepDeadline(string(step))
			hctx, cancel := context.WithTimeout(ctx, limit)
			defer cancel()
			out, err := next(hctx, p, in)
			if err != nil && errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
				var wait *WaitError
				if !errors.As(err, &wait) {
					return nil, fmt.Errorf("%w: %s took longer than %s and was cancelled (pipelines[].deadlines.%s): %v", ErrDeadline, step, limit, step, err)
				}
			}
			return out, err
		}
	}
}

// Recover turns a panic of step's handler into a transient error, logged with its stack.
func Recover(step event.Step) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, p *config.Pipeline, in event.Event) (out event.Event, err error) {
			defer func() {
				if v := recover(); v != nil {
					Logger(ctx).Error("handler panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
					out, err = nil, fmt.Errorf("%s panicked: %v", step, v)
				}
			}()
			return next(ctx, p, in)
		}
	}
}
