package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/crash"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
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
	// Durable names the route's JetStream consumer (default Step). A step that consumes two
	// kinds of event has two routes, which need two consumers.
	Durable string
	// Claims checks what the event says against what the pipeline's config says (the fetcher:
	// the URL is the configured source's; the validator: the object is the pipeline's landing
	// key). An event whose claims do not hold is refused before anything is recorded or done.
	Claims func(p *config.Pipeline, in event.Event) error
}

func (rt Route) durable() string {
	if rt.Durable != "" {
		return rt.Durable
	}
	return rt.Step
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
	runTracer trace.Tracer
	metrics   *metrics.Metrics
	lineage   *lineage.Emitter
	datasets  lineage.Namespaces
	// bind: the consumers exist (provisioned); bind to them instead of creating them.
	bind  bool
	bound map[string]jetstream.Consumer
	// DrainTimeout bounds how long Run waits for in-flight handlers at shutdown.
	DrainTimeout time.Duration
}

// Option configures a Router.
type Option func(*Router)

// WithMetrics records step, run, poke, lease, rows and bytes series in m.
func WithMetrics(m *metrics.Metrics) Option { return func(r *Router) { r.metrics = m } }

// WithProvisionedConsumers makes the router bind to the routes' durable consumers, which
// `sluice provision` (bus.Provision) created, instead of creating them: a service's NATS user may
// not create consumers. Without it (tests, tools) Run creates or updates them.
func WithProvisionedConsumers() Option { return func(r *Router) { r.bind = true } }

// WithRunTracer makes the runs' root spans with tp (default: the router's provider).
func WithRunTracer(tp trace.TracerProvider) Option {
	return func(r *Router) { r.runTracer = tp.Tracer(tracerScope) }
}

// WithLineage sends OpenLineage events for every run and step to e; ns names the warehouse's
// tables. Datasets also label the step spans without it.
func WithLineage(e *lineage.Emitter, ns lineage.Namespaces) Option {
	return func(r *Router) { r.lineage, r.datasets = e, ns }
}

const tracerScope = "github.com/sluice-etl/sluice/pkg/flow"

// NewRouter builds a router for the given pipelines.
func NewRouter(ctx context.Context, js jetstream.JetStream, opts bus.Options, pipelines []config.Pipeline, tp trace.TracerProvider, log *slog.Logger, options ...Option) (*Router, error) {
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
	r := &Router{js: js, opts: opts, pipelines: ps, leases: leases, runs: runs, log: log,
		tracer: tp.Tracer(tracerScope), runTracer: tp.Tracer(tracerScope), DrainTimeout: 30 * time.Second}
	for _, o := range options {
		o(r)
	}
	return r, nil
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
	// A message the broker gave up on (bus.MaxDeliveries) fails its run like spent retries.
	stopWatch, err := r.WatchMaxDeliveries(ctx, routes...)
	if err != nil {
		return err
	}
	defer stopWatch()
	var wg sync.WaitGroup
	if err := r.Bind(ctx, routes...); err != nil {
		return err
	}
	for _, rt := range routes {
		cons := r.bound[rt.durable()]
		r.initSeries(rt)
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

// Bind finds (with WithProvisionedConsumers) or creates each route's durable consumer. Run
// calls it; a process calls it before to fail its start on a missing or refused consumer.
func (r *Router) Bind(ctx context.Context, routes ...Route) error {
	if r.bound == nil {
		r.bound = map[string]jetstream.Consumer{}
	}
	for _, rt := range routes {
		if r.bound[rt.durable()] != nil {
			continue
		}
		var cons jetstream.Consumer
		var err error
		if r.bind {
			cons, err = bus.BindConsumer(ctx, r.js, r.opts.Stream, rt.durable())
		} else {
			cons, err = r.js.CreateOrUpdateConsumer(ctx, r.opts.Stream, bus.ConsumerConfig(r.opts, rt.durable(), rt.Consumes))
		}
		if err != nil {
			return fmt.Errorf("consumer %s: %w", rt.durable(), err)
		}
		r.bound[rt.durable()] = cons
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
		r.refuse(rt, msg, nil, err)
		return
	}
	run := in.Header()
	p, err := r.admit(rt, msg.Subject(), in)
	if err != nil {
		r.refuse(rt, msg, run, err)
		return
	}
	d := &delivery{rt: rt, msg: msg, in: in, run: run, attempt: attempt, started: started, published: meta.Timestamp}

	// Every event of a run carries the run's root span context: step spans are its children,
	// whichever process handles them, and the next event is published with it again.
	d.runSC = runSpanContext(telemetry.Extract(ctx, msg.Headers()), run.RunID)
	ctx = trace.ContextWithRemoteSpanContext(ctx, d.runSC)
	ctx = telemetry.ContextWithRun(ctx, run.Pipeline, run.DS, run.RunID)

	// Mark the run running, and pick up the span a waiting delivery of this step left open.
	// Consumers of a run's final events and of its SLA deadline report on the run: they must
	// not mark it running at their own step (the alerter reads where an overdue run is stuck).
	var open *runstate.Span
	if !terminal(rt.Consumes) {
		r.state(ctx, *run, func(rec *runstate.Record) {
			rec.State, rec.Step, rec.Attempts, rec.TraceID = runstate.Running, rt.Step, attempt, d.runSC.TraceID().String()
			rec.Stage, rec.Detail, rec.NextAttempt = runstate.StageOf(rt.Consumes, true), "", time.Time{}
			if len(run.Steps) > len(rec.Steps) {
				rec.Steps = run.Steps // the steps done so far travel with the event
			}
			if rec.Trigger == "" {
				rec.Trigger = run.Trigger
			}
			open = rec.Span
		})
	}
	spanCtx, spanStart := ctx, started
	if open != nil && open.Step == rt.Step {
		if sid, err := trace.SpanIDFromHex(open.SpanID); err == nil {
			spanCtx, spanStart, d.open = telemetry.WithSpanIDs(ctx, d.runSC.TraceID(), sid), open.Started, open
		}
	}
	ctx, d.span = r.tracer.Start(spanCtx, rt.Step, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(spanStart),
		trace.WithAttributes(
			attribute.String("sluice.pipeline", run.Pipeline), attribute.String("sluice.ds", run.DS),
			attribute.String("sluice.run_id", run.RunID), attribute.String("sluice.step", rt.Step),
			attribute.Int("sluice.attempt", attempt), attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject())))
	// A delivery that waits leaves its span open (unexported) for the next delivery to finish.
	defer func() {
		if !d.waiting {
			d.span.End()
		}
	}()
	log := r.log.With("pipeline", run.Pipeline, "ds", run.DS, "run_id", run.RunID, "step", rt.Step,
		"attempt", attempt, "trace_id", telemetry.TraceID(ctx), "span_id", telemetry.SpanID(ctx))
	ctx = WithLogger(ctx, log)
	ctx = context.WithValue(ctx, attemptKey{}, attempt)
	ctx = context.WithValue(ctx, sequenceKey{}, meta.Sequence.Stream)
	if attempt == 1 {
		r.lineageStart(d)
	}

	d.p = p
	if r.dropIfEnded(ctx, d) {
		return
	}

	// Every step after the sensor runs under the lease the sensor took: confirm it before work
	// (admit made sure the event carries a token). Consumers of a run's final events (the
	// alerter) act after the lease is gone.
	holdsLease := leased(rt.Consumes)
	if holdsLease {
		if err := r.leases.Renew(ctx, p.Name, run.RunID, run.Fence, p.Lease.TTL); err != nil {
			if errors.Is(err, lease.ErrLost) {
				r.fail(ctx, d, "fenced", err)
				return
			}
			r.retry(ctx, d, err)
			return
		}
	}

	stop := r.heartbeat(ctx, msg, p, run, holdsLease)
	out, err := r.callWithin(ctx, rt, p, in)
	stop()

	var wait *WaitError
	switch {
	case err == nil && out == nil:
		crash.Point(rt.Step, crash.AfterHandle)
		_ = msg.DoubleAck(ctx)
		log.Info("step done", "duration_ms", time.Since(started).Milliseconds())
		r.done(ctx, d, metrics.OutcomeOK)
		r.finished(d)
	case err == nil:
		oh := out.Header()
		step := event.StepResult{Step: rt.Step, StartedAt: started.UTC(), DurationMS: time.Since(started).Milliseconds(), Attempts: attempt}
		if av, ok := out.(*event.Available); ok { // the sensor's wait, for the run's summary
			step.LeaseAt, step.Pokes = av.LeaseAt, av.Pokes
		}
		oh.Steps = append(append([]event.StepResult(nil), run.Steps...), step)
		crash.Point(rt.Step, crash.AfterHandle)
		if out.Kind() == event.KindCompleted {
			// The run's end is recorded, and its lease released, before it is announced.
			r.end(ctx, d, out, func(rec *runstate.Record) {
				rec.State, rec.Detail, rec.Error, rec.Steps = runstate.Completed, "", "", oh.Steps
				rec.Stage = runstate.StageOf(event.KindCompleted, false)
			})
		}
		if err := r.publish(ctx, d, out); err != nil {
			log.Warn("publish failed; will redeliver", "err", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		crash.Point(rt.Step, crash.AfterPublish)
		_ = msg.DoubleAck(ctx)
		log.Info("step done", "next", out.Kind(), "duration_ms", time.Since(started).Milliseconds())
		r.succeeded(ctx, d, out)
		if out.Kind() != event.KindCompleted {
			// Handing on is written at the next event's stage: if the next step has already
			// marked the run running, this write is older news and is dropped.
			r.state(ctx, *oh, func(rec *runstate.Record) {
				rec.Steps = oh.Steps
				rec.Error = ""
				rec.Span = nil
				rec.Stage = runstate.StageOf(out.Kind(), false)
				rec.State, rec.Detail = runstate.Running, runstate.HandedOn+string(out.Kind())
			})
		}
	case errors.As(err, &wait):
		_ = msg.NakWithDelay(wait.Delay)
		log.Debug("waiting", "reason", wait.Reason, "delay", wait.Delay)
		r.waited(ctx, d, wait)
	case errors.Is(err, ErrSkip):
		_ = msg.Term()
		log.Info("run skipped", "reason", err.Error())
		r.done(ctx, d, metrics.OutcomeSkip)
		r.skipped(ctx, d, err.Error())
		r.state(ctx, *run, func(rec *runstate.Record) {
			rec.State, rec.Detail, rec.Span, rec.NextAttempt = runstate.Skipped, err.Error(), nil, time.Time{}
		})
		// A skipped run that held the lease (say, a soft-failed sensor) gives it back, so the next
		// run need not wait it out; Release does nothing for a run that never held it.
		if err := r.leases.Release(ctx, run.Pipeline, run.RunID); err != nil {
			log.Warn("release lease", "err", err)
		}
	case IsPermanent(err):
		r.fail(ctx, d, "permanent", err)
	case errors.Is(err, lease.ErrLost) || errors.Is(err, fence.ErrFenced):
		r.fail(ctx, d, "fenced", err)
	default:
		r.retry(ctx, d, err)
	}
}

// delivery is one message being handled: what the observability hooks need to know about it.
type delivery struct {
	rt        Route
	p         *config.Pipeline
	msg       jetstream.Msg
	in        event.Event
	run       *event.Run
	attempt   int
	started   time.Time
	published time.Time         // when the event was stored: for a final event, when the run ended
	runSC     trace.SpanContext // the run's root span
	span      trace.Span        // this step's span
	open      *runstate.Span    // the span earlier deliveries of this step left open
	waiting   bool
}

// ErrDeadline is a step that passed its deadline (pipelines[].deadlines): it was cancelled and is
// retried like any transient failure.
var ErrDeadline = errors.New("step deadline passed")

// callWithin runs the handler under the step's deadline: a hung statement or request is
// cancelled and the delivery retried, instead of holding the pipeline forever.
func (r *Router) callWithin(ctx context.Context, rt Route, p *config.Pipeline, in event.Event) (event.Event, error) {
	limit := p.StepDeadline(rt.Step)
	hctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, err := r.call(hctx, rt, p, in)
	if err != nil && errors.Is(hctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		var wait *WaitError
		if !errors.As(err, &wait) {
			return nil, fmt.Errorf("%w: %s took longer than %s and was cancelled (pipelines[].deadlines.%s): %v", ErrDeadline, rt.Step, limit, rt.Step, err)
		}
	}
	return out, err
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

func (r *Router) retry(ctx context.Context, d *delivery, err error) {
	if d.p == nil {
		r.fail(ctx, d, "transient", err)
		return
	}
	policy := d.p.RetryPolicy(d.rt.Step)
	if d.attempt > policy.MaxRetries() {
		class := "transient"
		if errors.Is(err, ErrDeadline) {
			class = "timeout"
		}
		r.fail(ctx, d, class, fmt.Errorf("gave up after %d attempts: %w", d.attempt, err))
		return
	}
	delay := policy.DelayFor(d.attempt, rand.Float64())
	// A run parked for a retry keeps its lease for the wait: nothing renews it meanwhile, and a
	// lease shorter than the delay would hand the pipeline to the next run and fence this one.
	if leased(d.rt.Consumes) {
		if err := r.leases.Renew(ctx, d.p.Name, d.run.RunID, d.run.Fence, delay+d.p.Lease.TTL); err != nil {
			Logger(ctx).Warn("extend lease for the retry", "err", err)
		}
	}
	Logger(ctx).Warn("step failed; will retry", "err", err, "retry_in", delay)
	_ = d.msg.NakWithDelay(delay)
	d.span.SetStatus(codes.Error, err.Error())
	r.done(ctx, d, metrics.OutcomeRetry)
	if r.metrics != nil {
		r.metrics.Retries.WithLabelValues(d.run.Pipeline, d.rt.Step).Inc()
	}
	next := time.Now().Add(delay).UTC()
	r.state(ctx, *d.run, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Stage, rec.NextAttempt = runstate.Retrying, d.rt.Step, runstate.StageOf(d.rt.Consumes, true), next
		rec.Detail, rec.Error = fmt.Sprintf("retry %d of %d at %s", d.attempt, policy.MaxRetries(), next.Local().Format(time.TimeOnly)), err.Error()
		rec.Span = nil
	})
}

// fail ends the run: one `failed` event (deduplicated by run id), the lease released, the
// message terminated. Steps that consume terminal events only log.
func (r *Router) fail(ctx context.Context, d *delivery, class string, cause error) {
	log := Logger(ctx)
	run, rt, msg := d.run, d.rt, d.msg
	log.Error(fmt.Sprintf("%s %s %s: %v", run.Pipeline, run.DS, rt.Step, cause), "class", class)
	d.span.SetStatus(codes.Error, cause.Error())
	if terminal(rt.Consumes) {
		_ = msg.Term()
		r.done(ctx, d, metrics.OutcomeFailed)
		r.finished(d)
		return
	}
	f := &event.Failed{Run: *run, Step: rt.Step, Attempts: d.attempt, Class: class, Error: cause.Error()}
	// The run's end is recorded, and its lease released (unless it was lost), before it is
	// announced: whoever hears of the end — `sluice run`, which then exits, or a trigger of
	// the same date — finds the run ended and the pipeline free.
	r.end(ctx, d, f, func(rec *runstate.Record) {
		rec.State, rec.Step, rec.Attempts, rec.Error, rec.Detail = runstate.Failed, rt.Step, d.attempt, cause.Error(), class
	})
	if err := r.publish(ctx, d, f); err != nil {
		log.Warn("publish failed event; will redeliver", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	crash.Point(rt.Step, crash.AfterPublish)
	_ = msg.Term()
	r.done(ctx, d, metrics.OutcomeFailed)
	r.failed(ctx, d, class, cause)
}

// end records a run's end with the final event that announces it, then releases the run's
// lease (a fenced run no longer holds it). A delivery that comes back after a crash between
// this and the publish finds the run ended and publishes the recorded event (dropIfEnded);
// the stream's duplicate window drops it if the first publish got through after all.
func (r *Router) end(ctx context.Context, d *delivery, final event.Event, fn func(*runstate.Record)) {
	data, err := event.Encode(final)
	if err != nil {
		Logger(ctx).Warn("encode final event", "err", err)
	}
	r.state(ctx, *final.Header(), func(rec *runstate.Record) {
		fn(rec)
		rec.Span, rec.NextAttempt, rec.Final = nil, time.Time{}, data
	})
	if f, ok := final.(*event.Failed); ok && f.Class == "fenced" {
		return
	}
	if err := r.leases.Release(ctx, d.run.Pipeline, d.run.RunID); err != nil {
		Logger(ctx).Warn("release lease", "err", err)
	}
}

// terminal reports events that end a run: their consumers report, they do not continue the run.
func terminal(k event.Kind) bool {
	return k == event.KindFailed || k == event.KindCompleted || k == event.KindSLAMissed
}

// leased reports events that are handled under the run's lease: every event between the
// sensor's (which takes the lease) and the run's end.
func leased(k event.Kind) bool { return k != event.KindRequested && !terminal(k) }

// admit checks an event's claims before anything is done for it: the pipeline is one this
// service is configured for, the subject is the one the event's own header names, an event
// handled under the lease carries a fencing token, and the route's own claims hold. It returns
// the event's pipeline.
func (r *Router) admit(rt Route, subject string, in event.Event) (*config.Pipeline, error) {
	run := in.Header()
	p, ok := r.pipelines[run.Pipeline]
	if !ok {
		return nil, fmt.Errorf("pipeline %q is not configured", run.Pipeline)
	}
	if want := event.Subject(r.opts.SubjectPrefix, run.Pipeline, rt.Consumes, run.DS); subject != want {
		return nil, fmt.Errorf("published on %s, but the event is for %s", subject, want)
	}
	if leased(rt.Consumes) && run.Fence == 0 {
		return nil, errors.New("it carries no fencing token: no fence, no write")
	}
	if rt.Claims != nil {
		if err := rt.Claims(p, in); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// refuse terminates an event that is malformed or whose claims do not hold, with one log line
// and before it touches anything: no run state, lineage, span, lease or per-pipeline series, so
// crafted events can neither act nor grow what sluice stores and exports. run is nil for an
// event that could not be decoded.
func (r *Router) refuse(rt Route, msg jetstream.Msg, run *event.Run, cause error) {
	who := rt.Step
	if run != nil {
		who = fmt.Sprintf("%.64s %.10s %s", run.Pipeline, run.DS, rt.Step)
	}
	r.log.Error(fmt.Sprintf("%s: refused %s event on %.200s: %s", who, rt.Consumes, msg.Subject(), oneLine(cause)), "class", "refused")
	_ = msg.TermWithReason("refused")
	if r.metrics != nil {
		r.metrics.EventsRefused.WithLabelValues(rt.Step).Inc()
	}
}

// oneLine keeps an error (a schema validator's is a tree over several lines) on one bounded line.
func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

// publish sends the run's next event with the run's root span as its trace parent.
func (r *Router) publish(ctx context.Context, d *delivery, e event.Event) error {
	return Publish(trace.ContextWithRemoteSpanContext(ctx, d.runSC), r.js, r.opts.SubjectPrefix, e)
}

func (r *Router) state(ctx context.Context, run event.Run, fn func(*runstate.Record)) {
	if run.Fence != 0 {
		// A run that held the lease and no longer does, without an end, is lost (runstate.Lost).
		fn0 := fn
		fn = func(rec *runstate.Record) { fn0(rec); rec.Fence = run.Fence }
	}
	if err := r.runs.Update(ctx, run, fn); err != nil {
		Logger(ctx).Warn("record run state", "err", err)
	}
}

// Publish sends an event on its subject with the trace context of ctx. The message id is
// <run id>.<kind>, so a step that republishes after a crash is deduplicated by the stream.
func Publish(ctx context.Context, js jetstream.JetStream, prefix string, e event.Event) error {
	_, err := publish(ctx, js, prefix, e)
	return err
}

func publish(ctx context.Context, js jetstream.JetStream, prefix string, e event.Event) (*jetstream.PubAck, error) {
	data, err := event.Encode(e)
	if err != nil {
		return nil, err
	}
	h := e.Header()
	m := &nats.Msg{Subject: event.Subject(prefix, h.Pipeline, e.Kind(), h.DS), Header: nats.Header{}, Data: data}
	telemetry.Inject(ctx, m.Header)
	ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(h.RunID+"."+string(e.Kind())))
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	return ack, nil
}

type (
	loggerKey   struct{}
	attemptKey  struct{}
	sequenceKey struct{}
)

// Attempt returns which delivery of the message this is (1 for the first).
func Attempt(ctx context.Context) int {
	n, _ := ctx.Value(attemptKey{}).(int)
	return n
}

// Sequence returns the stream sequence of the message being handled: for a requested event, the
// run's place in the order of requests.
func Sequence(ctx context.Context) uint64 {
	n, _ := ctx.Value(sequenceKey{}).(uint64)
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
