package flow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/crash"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Handler performs one step for one run. It returns the next event (nil for a step that ends
// the flow, like the alerter) or an error classified as described in errors.go. The router's
// middleware are Handlers around Handlers, and read the delivery they serve from ctx.
type Handler func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error)

// Middleware wraps a Handler with one concern (tracing, run state, the lease, retries...), as
// watermill's HandlerMiddleware does: it may act before calling next, after it, or instead of it.
type Middleware func(next Handler) Handler

// Chain wraps h in mws, the first outermost: Chain(h, a, b) is a(b(h)).
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// Route binds a step to the event it consumes.
type Route struct {
	Step     event.Step
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
	return string(rt.Step)
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
	loops []loop
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

// middlewares returns the middleware a route runs under, outermost first: around the core, run
// state (state.go), tracing, metrics and lineage (observe.go), leftovers of ended runs
// (stale.go) and retry classification; around the step, the lease guard, the step's deadline
// and panic recovery (middleware.go).
func (r *Router) middlewares(rt Route) (delivery, step []Middleware) {
	delivery = []Middleware{r.RunState, r.Tracing, r.Metrics, r.Lineage, r.DropEnded, r.Classify}
	step = []Middleware{r.LeaseGuard, Deadline(rt.Step), Recover(rt.Step)}
	return delivery, step
}

// Run consumes for every route (and every loop added with Loop) until ctx is cancelled, then
// stops taking messages and waits for in-flight work up to DrainTimeout before cancelling it.
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
	if err := r.Bind(ctx, routes...); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, rt := range routes {
		cons, handle := r.bound[rt.durable()], r.handler(rt)
		r.initSeries(rt)
		workers := rt.Workers
		if workers <= 0 {
			workers = 4
		}
		for range workers {
			wg.Go(func() {
				Pull(ctx, cons, r.log.With("step", rt.Step), func(msg jetstream.Msg) { r.process(work, rt, handle, msg) })
			})
		}
	}
	for _, l := range r.loops {
		wg.Go(func() { Pull(ctx, l.cons, l.log, func(msg jetstream.Msg) { l.handle(work, msg) }) })
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

// loop is a pull loop that is not a route (see Loop).
type loop struct {
	cons   jetstream.Consumer
	log    *slog.Logger
	handle func(ctx context.Context, msg jetstream.Msg)
}

// Loop adds a pull loop on cons to those Run starts, under Run's bounded drain: handle gets a
// context that outlives Run's by the drain timeout, and settles each message itself. The
// scheduler's ticks and run ends are consumed this way. Call it before Run.
func (r *Router) Loop(cons jetstream.Consumer, log *slog.Logger, handle func(ctx context.Context, msg jetstream.Msg)) {
	r.loops = append(r.loops, loop{cons: cons, log: log, handle: handle})
}

// Pull takes one message at a time from cons until ctx is done and hands it to handle: nothing
// is prefetched, so no message waits in a local buffer while its ack timer runs, and an idle
// worker holds only a pending pull request.
func Pull(ctx context.Context, cons jetstream.Consumer, log *slog.Logger, handle func(jetstream.Msg)) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			idle := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)
			if ctx.Err() == nil && !idle {
				log.Warn("fetch failed", "err", err)
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		handle(msg)
	}
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

// handler is the route's handler under the router's middleware: the step's own middleware
// around rt.Handle, the core (publish the next event, ack) around that, and the delivery's
// middleware around the core.
func (r *Router) handler(rt Route) Handler {
	outer, inner := r.middlewares(rt)
	return Chain(r.core(rt, Chain(rt.Handle, inner...)), outer...)
}

// process is the core's first half: decode the message, check its claims and hand it, with
// the delivery in ctx, to the route's handler.
func (r *Router) process(ctx context.Context, rt Route, handle Handler, msg jetstream.Msg) {
	d, err := r.receive(rt, msg)
	if d == nil || err != nil {
		if err != nil {
			r.refuse(rt, msg, d.header(), err)
		}
		return
	}
	_, _ = handle(r.withDelivery(ctx, d), d.p, d.in)
}

// withDelivery returns ctx serving d: the run's root span as its span, the run's ids for the
// logs, d for the middleware and the step's logger.
func (r *Router) withDelivery(ctx context.Context, d *delivery) context.Context {
	// Every event of a run carries the run's root span context: step spans are its children,
	// whichever process handles them, and the next event is published with it again.
	d.runSC = runSpanContext(telemetry.Extract(ctx, d.msg.Headers()), d.run.RunID)
	ctx = trace.ContextWithRemoteSpanContext(ctx, d.runSC)
	ctx = telemetry.ContextWithRun(ctx, d.run.Pipeline, d.run.DS, d.run.RunID)
	return WithLogger(context.WithValue(ctx, deliveryKey{}, d), r.log.With("pipeline", d.run.Pipeline, "ds", d.run.DS,
		"run_id", d.run.RunID, "step", d.rt.Step, "attempt", d.attempt))
}

// core is the core's second half, inside the delivery's middleware: call the step, publish the
// next event, ack. An error goes back to the middleware (Classify settles the message).
func (r *Router) core(rt Route, step Handler) Handler {
	return func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
		d := deliveryOf(ctx)
		out, err := step(ctx, p, in)
		if err != nil {
			return nil, err
		}
		crash.Point(string(rt.Step), crash.AfterHandle)
		if out != nil {
			if err := r.advance(d.runCtx(ctx), d.run, d.stepResult(out), out); err != nil {
				Logger(ctx).Warn("publish failed; will redeliver", "err", err)
				d.settle(outcomeRedeliver, func() error { return d.msg.NakWithDelay(time.Second) })
				return nil, err
			}
			crash.Point(string(rt.Step), crash.AfterPublish)
		}
		d.out = out
		d.settle(outcomeOK, func() error { return d.msg.DoubleAck(ctx) })
		done := []any{"duration_ms", time.Since(d.started).Milliseconds()}
		if out != nil {
			done = append([]any{"next", out.Kind()}, done...)
		}
		Logger(ctx).Info("step done", done...)
		return out, nil
	}
}

// receive reads a message's delivery and decodes its event. It returns the delivery so far
// (nil if nothing could be decoded) and an error when the message is to be refused; neither
// for a message it terminated itself (one without metadata).
func (r *Router) receive(rt Route, msg jetstream.Msg) (*delivery, error) {
	started := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error("message without metadata", "step", rt.Step, "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return nil, nil
	}
	in, err := event.Decode(rt.Consumes, msg.Data())
	if err != nil {
		// A malformed event can never be handled: drop it loudly instead of redelivering forever.
		return nil, err
	}
	d := &delivery{rt: rt, msg: msg, in: in, run: in.Header(), attempt: int(meta.NumDelivered),
		sequence: meta.Sequence.Stream, started: started, published: meta.Timestamp}
	d.p, err = r.admit(rt, msg.Subject(), in)
	return d, err
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
	who := string(rt.Step)
	if run != nil {
		who = fmt.Sprintf("%.64s %.10s %s", run.Pipeline, run.DS, rt.Step)
	}
	r.log.Error(fmt.Sprintf("%s: refused %s event on %.200s: %s", who, rt.Consumes, msg.Subject(), oneLine(cause)), "class", "refused")
	_ = msg.TermWithReason("refused")
	if r.metrics != nil {
		r.metrics.EventsRefused.WithLabelValues(string(rt.Step)).Inc()
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
	var ack *jetstream.PubAck
	err = bus.Retry(ctx, func(ctx context.Context) (err error) {
		ack, err = js.PublishMsg(ctx, m, jetstream.WithMsgID(h.RunID+"."+string(e.Kind())))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("publish %s: %w", m.Subject, err)
	}
	return ack, nil
}
