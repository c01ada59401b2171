package flow

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// delivery is one message being handled. The core fills in what it read; the middleware, which
// find it in ctx, add what they learn (the step's span, the span earlier deliveries left open)
// and record what became of the message, for the middleware around them to report.
type delivery struct {
	rt        Route
	p         *config.Pipeline
	msg       jetstream.Msg
	in        event.Event
	run       *event.Run
	attempt   int
	sequence  uint64            // the message's stream sequence
	started   time.Time         // when this delivery started
	published time.Time         // when the event was stored: for a final event, when the run ended
	runSC     trace.SpanContext // the run's root span
	span      trace.Span        // this step's span (Tracing)
	open      *runstate.Span    // the span earlier deliveries of this step left open (RunState)

	// What became of the message, set once by whoever settled it.
	outcome outcome
	out     event.Event        // outcomeOK: the next event published, nil for none
	wait    *WaitError         // outcomeWait
	class   event.FailureClass // outcomeFailed
	cause   error              // outcomeSkip, outcomeRetry, outcomeFailed
	next    time.Time          // outcomeRetry: when the next attempt comes
	detail  string             // outcomeRetry: "retry n of m at hh:mm:ss"
}

// outcome is what became of a delivery.
type outcome int

const (
	// outcomeNone: nothing settled the message yet.
	outcomeNone outcome = iota
	// outcomeOK: the step is done, its next event (if any) published, the message acked.
	outcomeOK
	// outcomeWait: a deferrable wait; the message comes back after the wait.
	outcomeWait
	// outcomeRetry: a transient failure, retried later.
	outcomeRetry
	// outcomeFailed: the run failed at this step (or, for a report on a run's end, the report).
	outcomeFailed
	// outcomeSkip: the run was dropped without failing.
	outcomeSkip
	// outcomeLeftover: a redelivery of a run that had already ended, dropped.
	outcomeLeftover
	// outcomeRedeliver: publishing failed; the message comes back in a second, nothing reported.
	outcomeRedeliver
)

// label is the outcome's value of the step outcome metric ("" for none).
func (o outcome) label() string {
	switch o {
	case outcomeOK:
		return metrics.OutcomeOK
	case outcomeWait:
		return metrics.OutcomeWait
	case outcomeRetry:
		return metrics.OutcomeRetry
	case outcomeFailed:
		return metrics.OutcomeFailed
	case outcomeSkip, outcomeLeftover:
		return metrics.OutcomeSkip
	}
	return ""
}

// settle records the outcome and answers the broker with reply (ack, nak or term), once: the
// first to settle a delivery decides it.
func (d *delivery) settle(o outcome, reply func() error) {
	if d.outcome != outcomeNone {
		return
	}
	d.outcome = o
	_ = reply()
}

// header is the delivery's run header, nil for no delivery.
func (d *delivery) header() *event.Run {
	if d == nil {
		return nil
	}
	return d.run
}

// runEnded reports whether this delivery ended its run (its outcome is the run's end).
func (d *delivery) runEnded() bool {
	switch {
	case terminal(d.rt.Consumes):
		return false
	case d.outcome == outcomeOK:
		return d.out != nil && d.out.Kind() == event.KindCompleted
	}
	return d.outcome == outcomeFailed || d.outcome == outcomeSkip
}

// runCtx is ctx with the run's root span as its span: events of the run are published with it.
func (d *delivery) runCtx(ctx context.Context) context.Context {
	return trace.ContextWithRemoteSpanContext(ctx, d.runSC)
}

// runStart is when the run began: its request, or this delivery when the request's time is
// missing or in the future (a clock ahead of ours).
func (d *delivery) runStart() time.Time {
	start := d.run.RequestedAt
	if start.IsZero() || start.After(time.Now()) {
		start = d.started
	}
	return start
}

// spanStart is when this step's span began: with the first delivery that waited.
func (d *delivery) spanStart() time.Time {
	if d.open != nil {
		return d.open.Started
	}
	return d.started
}

// stepResult is this step's entry in the run's list of steps done, for the next event out.
func (d *delivery) stepResult(out event.Event) event.StepResult {
	return StepResult(d.rt.Step, d.started, d.attempt, out)
}

type (
	deliveryKey struct{}
	loggerKey   struct{}
)

// deliveryOf returns the delivery ctx serves; an empty one outside the router (a handler called
// by a test).
func deliveryOf(ctx context.Context) *delivery {
	if d, ok := ctx.Value(deliveryKey{}).(*delivery); ok {
		return d
	}
	return &delivery{run: &event.Run{}}
}

// Attempt returns which delivery of the message this is (1 for the first).
func Attempt(ctx context.Context) int { return deliveryOf(ctx).attempt }

// Sequence returns the stream sequence of the message being handled: for a requested event, the
// run's place in the order of requests.
func Sequence(ctx context.Context) uint64 { return deliveryOf(ctx).sequence }

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
