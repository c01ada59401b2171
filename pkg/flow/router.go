package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Handler performs one step for one run. It returns the next event (nil for a step that ends
// the flow, like the alerter) or an error classified as described in errors.go.
type Handler func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error)

// Route binds a step to the event it consumes.
type Route struct {
	Step     string
	Consumes event.Kind
	Handle   Handler
	// Workers is how many messages this process handles at once (default 4).
	Workers int
}

// Router runs routes: the consume → handle → publish → ack loop, written once.
type Router struct {
	js        jetstream.JetStream
	opts      bus.Options
	pipelines map[string]*config.Pipeline
	leases    *lease.Leases
	runs      *runstate.Store
	log       *slog.Logger
	tracer    trace.Tracer
	// DrainTimeout bounds how long Run waits for in-flight handlers at shutdown.
	DrainTimeout time.Duration
}

// NewRouter builds a router for the given pipelines.
func NewRouter(ctx context.Context, js jetstream.JetStream, opts bus.Options, pipelines []config.Pipeline, tp trace.TracerProvider, log *slog.Logger) (*Router, error) {
	leases, err := lease.New(ctx, js)
	if err != nil {
		return nil, err
	}
	runs, err := runstate.New(ctx, js)
	if err != nil {
		return nil, err
	}
	ps := map[string]*config.Pipeline{}
	for i := range pipelines {
		ps[pipelines[i].Name] = &pipelines[i]
	}
	return &Router{js: js, opts: opts, pipelines: ps, leases: leases, runs: runs, log: log,
		tracer: tp.Tracer("github.com/sluice-etl/sluice/pkg/flow"), DrainTimeout: 30 * time.Second}, nil
}

// Leases gives handlers (the sensor) the lease store the router renews and releases.
func (r *Router) Leases() *lease.Leases { return r.leases }

// Runs gives access to run state.
func (r *Router) Runs() *runstate.Store { return r.runs }

// Run consumes for every route until ctx is cancelled, then stops taking messages and waits for
// in-flight handlers up to DrainTimeout before cancelling them.
func (r *Router) Run(ctx context.Context, routes ...Route) error {
	// Handlers get a context that outlives ctx by the drain timeout, so a shutdown lets them finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	for _, rt := range routes {
		cons, err := r.js.CreateOrUpdateConsumer(ctx, r.opts.Stream, bus.ConsumerConfig(r.opts, rt.Step, rt.Consumes))
		if err != nil {
			return fmt.Errorf("consumer %s: %w", rt.Step, err)
		}
		workers := rt.Workers
		if workers <= 0 {
			workers = 4
		}
		for i := 0; i < workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.pull(ctx, work, cons, rt)
			}()
		}
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.DrainTimeout):
		r.log.Warn("drain timeout: cancelling in-flight handlers", "timeout", r.DrainTimeout)
		cancelWork()
		<-done
	}
	return nil
}

// pull fetches one message at a time: nothing is prefetched, so no message waits in a local
// buffer while its ack timer runs, and an idle worker holds only a pending pull request.
func (r *Router) pull(ctx, work context.Context, cons jetstream.Consumer, rt Route) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			idle := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)
			if ctx.Err() == nil && !idle {
				r.log.Warn("fetch failed", "step", rt.Step, "err", err)
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		r.process(work, rt, msg)
	}
}

func (r *Router) process(ctx context.Context, rt Route, msg jetstream.Msg) {
	started := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error("message without metadata", "step", rt.Step, "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	attempt := int(meta.NumDelivered)
	in, err := event.Decode(rt.Consumes, msg.Data())
	if err != nil {
		// A malformed event can never be handled: drop it loudly instead of redelivering forever.
		r.log.Error("invalid event dropped", "step", rt.Step, "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("invalid event")
		return
	}
	run := in.Header()
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := r.tracer.Start(ctx, rt.Step, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("sluice.pipeline", run.Pipeline), attribute.String("sluice.ds", run.DS),
		attribute.String("sluice.run_id", run.RunID), attribute.Int("sluice.attempt", attempt),
		attribute.String("messaging.destination.name", msg.Subject())))
	defer span.End()
	log := r.log.With("pipeline", run.Pipeline, "ds", run.DS, "run_id", run.RunID, "step", rt.Step,
		"attempt", attempt, "trace_id", telemetry.TraceID(ctx))
	ctx = WithLogger(ctx, log)
	ctx = context.WithValue(ctx, attemptKey{}, attempt)

	p, ok := r.pipelines[run.Pipeline]
	if !ok {
		r.fail(ctx, rt, msg, run, attempt, "permanent", fmt.Errorf("pipeline %q is not in this service's config", run.Pipeline))
		return
	}
	r.state(ctx, *run, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Attempts, rec.TraceID = runstate.Running, rt.Step, attempt, telemetry.TraceID(ctx)
	})

	// Every step after the sensor runs under the lease the sensor took: confirm it before work.
	// Consumers of a run's final events (the alerter) act after the lease is gone.
	holdsLease := run.Fence != 0 && !terminal(rt.Consumes)
	if holdsLease {
		if err := r.leases.Renew(ctx, p.Name, run.RunID, run.Fence, p.Lease.TTL); err != nil {
			if errors.Is(err, lease.ErrLost) {
				r.fail(ctx, rt, msg, run, attempt, "fenced", err)
				return
			}
			r.retry(ctx, rt, msg, run, p, attempt, err)
			return
		}
	}

	stop := r.heartbeat(ctx, msg, p, run, holdsLease)
	out, err := r.call(ctx, rt, p, in)
	stop()

	var wait *WaitError
	switch {
	case err == nil && out == nil:
		_ = msg.DoubleAck(ctx)
	case err == nil:
		oh := out.Header()
		oh.Steps = append(append([]event.StepResult(nil), run.Steps...), event.StepResult{
			Step: rt.Step, StartedAt: started.UTC(), DurationMS: time.Since(started).Milliseconds(), Attempts: attempt})
		if err := r.publish(ctx, out); err != nil {
			log.Warn("publish failed; will redeliver", "err", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		_ = msg.DoubleAck(ctx)
		log.Info("step done", "next", out.Kind(), "duration_ms", time.Since(started).Milliseconds())
		if out.Kind() == event.KindCompleted {
			if err := r.leases.Release(ctx, p.Name, run.RunID); err != nil {
				log.Warn("release lease", "err", err)
			}
		}
		r.state(ctx, *oh, func(rec *runstate.Record) {
			rec.Steps = oh.Steps
			rec.Error = ""
			if out.Kind() == event.KindCompleted {
				rec.State, rec.Detail = runstate.Completed, ""
			} else {
				rec.State, rec.Detail = runstate.Queued, "next: "+string(out.Kind())
			}
		})
	case errors.As(err, &wait):
		_ = msg.NakWithDelay(wait.Delay)
		span.AddEvent("wait", trace.WithAttributes(attribute.String("reason", wait.Reason)))
		log.Debug("waiting", "reason", wait.Reason, "delay", wait.Delay)
		r.state(ctx, *run, func(rec *runstate.Record) { rec.State, rec.Detail = runstate.Waiting, wait.Reason })
	case errors.Is(err, ErrSkip):
		_ = msg.Term()
		log.Info("run skipped", "reason", err.Error())
		r.state(ctx, *run, func(rec *runstate.Record) { rec.State, rec.Detail = runstate.Skipped, err.Error() })
	case IsPermanent(err):
		span.SetStatus(codes.Error, err.Error())
		r.fail(ctx, rt, msg, run, attempt, "permanent", err)
	case errors.Is(err, lease.ErrLost) || errors.Is(err, fence.ErrFenced):
		span.SetStatus(codes.Error, err.Error())
		r.fail(ctx, rt, msg, run, attempt, "fenced", err)
	default:
		span.SetStatus(codes.Error, err.Error())
		r.retry(ctx, rt, msg, run, p, attempt, err)
	}
}

// call runs the handler, turning a panic into a transient error.
func (r *Router) call(ctx context.Context, rt Route, p *config.Pipeline, in event.Event) (out event.Event, err error) {
	defer func() {
		if v := recover(); v != nil {
			Logger(ctx).Error("handler panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("%s panicked: %v", rt.Step, v)
		}
	}()
	return rt.Handle(ctx, p, in)
}

// heartbeat keeps a long handler's message and lease alive.
func (r *Router) heartbeat(ctx context.Context, msg jetstream.Msg, p *config.Pipeline, run *event.Run, holdsLease bool) (stop func()) {
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
				_ = msg.InProgress()
				if holdsLease {
					if err := r.leases.Renew(ctx, p.Name, run.RunID, run.Fence, p.Lease.TTL); err != nil && ctx.Err() == nil {
						Logger(ctx).Warn("lease renew failed", "err", err)
					}
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (r *Router) retry(ctx context.Context, rt Route, msg jetstream.Msg, run *event.Run, p *config.Pipeline, attempt int, err error) {
	if attempt > p.Retries.MaxRetries() {
		r.fail(ctx, rt, msg, run, attempt, "transient", fmt.Errorf("gave up after %d attempts: %w", attempt, err))
		return
	}
	delay := p.Retries.Delay
	Logger(ctx).Warn("step failed; will retry", "err", err, "retry_in", delay)
	_ = msg.NakWithDelay(delay)
	r.state(ctx, *run, func(rec *runstate.Record) {
		rec.Detail, rec.Error = fmt.Sprintf("retry %d of %d in %s", attempt, p.Retries.MaxRetries(), delay), err.Error()
	})
}

// fail ends the run: one `failed` event (deduplicated by run id), the lease released, the
// message terminated. Steps that consume terminal events only log.
func (r *Router) fail(ctx context.Context, rt Route, msg jetstream.Msg, run *event.Run, attempt int, class string, cause error) {
	log := Logger(ctx)
	log.Error(fmt.Sprintf("%s %s %s: %v", run.Pipeline, run.DS, rt.Step, cause), "class", class)
	if terminal(rt.Consumes) {
		_ = msg.Term()
		return
	}
	f := &event.Failed{Run: *run, Step: rt.Step, Attempts: attempt, Class: class, Error: cause.Error()}
	if err := r.publish(ctx, f); err != nil {
		log.Warn("publish failed event; will redeliver", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Term()
	if class != "fenced" {
		if err := r.leases.Release(ctx, run.Pipeline, run.RunID); err != nil {
			log.Warn("release lease", "err", err)
		}
	}
	r.state(ctx, *run, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Attempts, rec.Error, rec.Detail = runstate.Failed, rt.Step, attempt, cause.Error(), class
	})
}

// terminal reports events that end a run: their consumers report, they do not continue the run.
func terminal(k event.Kind) bool {
	return k == event.KindFailed || k == event.KindCompleted || k == event.KindSLAMissed
}

func (r *Router) publish(ctx context.Context, e event.Event) error {
	return Publish(ctx, r.js, r.opts.SubjectPrefix, e)
}

func (r *Router) state(ctx context.Context, run event.Run, fn func(*runstate.Record)) {
	if err := r.runs.Update(ctx, run, fn); err != nil {
		Logger(ctx).Warn("record run state", "err", err)
	}
}

// Publish sends an event on its subject with the trace context of ctx. The message id is
// <run id>.<kind>, so a step that republishes after a crash is deduplicated by the stream.
func Publish(ctx context.Context, js jetstream.JetStream, prefix string, e event.Event) error {
	data, err := event.Encode(e)
	if err != nil {
		return err
	}
	h := e.Header()
	m := &nats.Msg{Subject: event.Subject(prefix, h.Pipeline, e.Kind(), h.DS), Header: nats.Header{}, Data: data}
	telemetry.Inject(ctx, m.Header)
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(h.RunID+"."+string(e.Kind()))); err != nil {
		return fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	return nil
}

type (
	loggerKey  struct{}
	attemptKey struct{}
)

// Attempt returns which delivery of the message this is (1 for the first).
func Attempt(ctx context.Context) int {
	n, _ := ctx.Value(attemptKey{}).(int)
	return n
}

// WithLogger returns ctx carrying log.
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// Logger returns the logger a handler should use: it carries pipeline, ds, run id and trace id.
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
