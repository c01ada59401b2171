// Package alerter is sluice's alerting step. For each `failed` event it tells every channel the
// pipeline lists (Slack through slack-go, email over SMTP through go-mail) which run failed, at
// which step, for which execution date and why, with links to the run and its trace (and, when
// configured, publishes the same text to an AWS SNS topic). For each
// fired SLA deadline (`sla_missed`) it checks the run's state and, if the run had not completed
// by then, says which step it is stuck in. For `completed` it removes the run's deadline and,
// where the pipeline asks for them, sends success or recovery notices. A JetStream KV bucket
// records each (run id, kind, channel) alert once it is delivered, so a redelivered event, a
// second replica or a restart never alerts twice, and a retry after one channel failed resends
// only on that channel.
package alerter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/crash"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/sla"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Alerter sends alerts. It is safe for concurrent use.
type Alerter struct {
	counter   *prometheus.CounterVec
	kv        jetstream.KeyValue
	log       *slog.Logger
	runURL    string
	traceURL  string
	pipelines map[string]*config.Pipeline
	routes    map[string][]string // pipeline name -> channels
	fallbacks map[string][]string // pipeline name -> channels used when a route fails for good
	notifiers map[string]notifier // channel -> its client
	runs      *runstate.Store
	deadlines deadlines
	now       func() time.Time
}

// deadlines removes a completed run's SLA schedule.
type deadlines interface {
	Disarm(ctx context.Context, run event.Run) error
}

// notifier delivers one alert on one channel.
type notifier interface {
	send(ctx context.Context, a alert) error
}

// Option configures an Alerter.
type Option func(*Alerter)

// WithAlertCounter counts deliveries in c, labelled pipeline, channel and outcome (sent, failed,
// duplicate: already sent for this run).
func WithAlertCounter(c *prometheus.CounterVec) Option { return func(a *Alerter) { a.counter = c } }

func (a *Alerter) count(pipeline, channel, outcome string) {
	if a.counter != nil {
		a.counter.WithLabelValues(pipeline, channel, outcome).Inc()
	}
}

// WithRuns reads run state from runs: needed to judge SLA deadlines and to spot recoveries.
// Without it every fired deadline is reported and no recovery is recognised.
func WithRuns(runs *runstate.Store) Option { return func(a *Alerter) { a.runs = runs } }

// WithBroker lets the alerter remove a completed run's SLA deadline from the stream, so nothing
// fires for it.
func WithBroker(js jetstream.JetStream, stream, prefix string) Option {
	return func(a *Alerter) { a.deadlines = brokerDeadlines{js, stream, prefix} }
}

type brokerDeadlines struct {
	js             jetstream.JetStream
	stream, prefix string
}

func (b brokerDeadlines) Disarm(ctx context.Context, run event.Run) error {
	return sla.Disarm(ctx, b.js, b.stream, b.prefix, run)
}

// New builds the alerter. kv is a JetStream KV bucket used to deduplicate alerts across replicas
// and restarts. Only channels some pipeline lists get a client; a listed channel whose config is
// missing or invalid is an error. A pipeline with no alerts listed is never alerted on.
func New(cfg config.Alerts, pipelines []config.Pipeline, kv jetstream.KeyValue, log *slog.Logger, opts ...Option) (*Alerter, error) {
	if kv == nil {
		return nil, errors.New("alerter: no kv bucket for deduplication")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Alerter{
		kv:        kv,
		log:       log,
		runURL:    cfg.RunURL,
		traceURL:  cfg.TraceURL,
		pipelines: make(map[string]*config.Pipeline, len(pipelines)),
		routes:    make(map[string][]string, len(pipelines)),
		fallbacks: make(map[string][]string, len(pipelines)),
		notifiers: make(map[string]notifier),
		now:       time.Now,
	}
	for _, o := range opts {
		o(a)
	}
	for i := range pipelines {
		p := &pipelines[i]
		var channels, fallback []string
		for _, c := range append(slices.Clone(p.Alerts), p.AlertsFallback...) {
			ch := string(c)
			if slices.Contains(channels, ch) || slices.Contains(fallback, ch) {
				continue
			}
			if _, ok := a.notifiers[ch]; !ok {
				n, err := newNotifier(c, cfg)
				if err != nil {
					return nil, fmt.Errorf("pipeline %s: alerts: %w", p.Name, err)
				}
				a.notifiers[ch] = n
			}
			if slices.Contains(p.Alerts, c) {
				channels = append(channels, ch)
			} else {
				fallback = append(fallback, ch)
			}
		}
		a.pipelines[p.Name] = p
		a.routes[p.Name] = channels
		a.fallbacks[p.Name] = fallback
	}
	return a, nil
}

func newNotifier(channel config.AlertChannel, cfg config.Alerts) (notifier, error) {
	switch channel {
	case config.ChannelSlack:
		if cfg.Slack == nil {
			return nil, errors.New("channel slack is listed but alerts.slack is not configured")
		}
		return newSlackNotifier(*cfg.Slack)
	case config.ChannelEmail:
		if cfg.Email == nil {
			return nil, errors.New("channel email is listed but alerts.email is not configured")
		}
		return newEmailNotifier(*cfg.Email)
	case config.ChannelSNS:
		if cfg.SNS == nil {
			return nil, errors.New("channel sns is listed but alerts.sns is not configured")
		}
		return newSNSNotifier(*cfg.SNS)
	}
	return nil, fmt.Errorf("unknown channel %q (slack, email, sns)", channel)
}

// runIDRe keeps a run id to one KV key token: dots would change the key's shape.
var runIDRe = regexp.MustCompile(`^[A-Za-z0-9_=-]+$`)

// Handle reports one event: a failed run, a fired SLA deadline or a completed run. It tries
// every channel even when one fails; the error is permanent only if every failure is.
func (a *Alerter) Handle(ctx context.Context, e event.Event) error {
	run := e.Header()
	p, ok := a.pipelines[run.Pipeline]
	if !ok {
		return flow.Permanentf("alert: unknown pipeline %q", run.Pipeline)
	}
	if !runIDRe.MatchString(run.RunID) {
		return flow.Permanentf("alert: run id %q is not a valid key token", run.RunID)
	}
	log := a.log.With("pipeline", run.Pipeline, "ds", run.DS, "run_id", run.RunID, "kind", string(e.Kind()))
	l := links{run: a.runURL, trace: a.traceURL, traceID: telemetry.TraceID(ctx)}
	var al alert
	switch ev := e.(type) {
	case *event.Failed:
		al = failureAlert(ev, l, a.now())
	case *event.SLAMissed:
		var rec *runstate.Record
		if a.runs != nil {
			var err error
			if rec, err = sla.Lookup(ctx, a.runs, ev.Run); err != nil {
				return err
			}
		}
		v := sla.Judge(rec, ev.Deadline)
		if !v.Missed {
			log.InfoContext(ctx, "sla deadline met", "deadline", ev.Deadline, "reason", v.Reason)
			return nil
		}
		al = slaAlert(ev, v, l, a.now())
	case *event.Completed:
		if p.SLA != nil && a.deadlines != nil {
			if err := a.deadlines.Disarm(ctx, ev.Run); err != nil {
				// The deadline, if it fires, finds the run completed and alerts nothing.
				log.WarnContext(ctx, "sla deadline not removed", "err", err)
			}
		}
		if !p.Notices.Success && !p.Notices.Recovery {
			return nil
		}
		previous, err := a.recovers(ctx, ev.Run)
		if err != nil {
			return err
		}
		if previous == "" && !p.Notices.Success {
			return nil
		}
		al = noticeAlert(ev, previous, l, a.now())
	default:
		return flow.Permanentf("alert: no alert for %s events", e.Kind())
	}

	al.slackChannel = p.SlackChannel
	var errs, broken []error
	for _, ch := range a.routes[run.Pipeline] {
		if err := a.deliver(ctx, log, ch, al); err != nil {
			log.WarnContext(ctx, "alert not sent", "channel", ch, "err", err, "permanent", flow.IsPermanent(err))
			err = fmt.Errorf("%s alert on %s: %w", al.Kind, ch, err)
			if flow.IsPermanent(err) && len(a.fallbacks[run.Pipeline]) > 0 {
				broken = append(broken, err)
				continue
			}
			errs = append(errs, err)
		}
	}
	if len(broken) > 0 {
		// A primary channel can never deliver (say Slack's channel_not_found): the fallback
		// channels carry the alert. The broken channel is logged, not retried; the run's alert
		// fails only if a fallback fails too.
		for _, ch := range a.fallbacks[run.Pipeline] {
			if err := a.deliver(ctx, log, ch, al); err != nil {
				log.WarnContext(ctx, "fallback alert not sent", "channel", ch, "err", err, "permanent", flow.IsPermanent(err))
				errs = append(append(errs, broken...), fmt.Errorf("%s alert on fallback %s: %w", al.Kind, ch, err))
				broken = nil
				continue
			}
			log.WarnContext(ctx, "alert sent on a fallback channel", "channel", ch, "because", errors.Join(broken...).Error())
		}
	}
	return combine(errs)
}

// recovers returns the id of the pipeline's run that ended before run and failed, if the run
// before run failed ("" otherwise, or when recovery notices are off).
func (a *Alerter) recovers(ctx context.Context, run event.Run) (string, error) {
	if a.runs == nil || !a.pipelines[run.Pipeline].Notices.Recovery {
		return "", nil
	}
	recs, err := a.runs.Runs(ctx, run.Pipeline, "")
	if err != nil {
		return "", fmt.Errorf("runs of %s: %w", run.Pipeline, err)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.RunID >= run.RunID || (r.State != runstate.Completed && r.State != runstate.Failed) {
			continue // later, still going, or skipped: not the run this one follows
		}
		if r.State == runstate.Failed {
			return r.RunID, nil
		}
		return "", nil
	}
	return "", nil
}

// deliver sends al on channel unless the KV bucket records it as sent for this run.
func (a *Alerter) deliver(ctx context.Context, log *slog.Logger, channel string, al alert) error {
	key := al.RunID + "." + al.Kind.dedupeKind() + "." + channel
	err := bus.Retry(ctx, func(ctx context.Context) error { _, err := a.kv.Get(ctx, key); return err })
	switch {
	case err == nil:
		log.DebugContext(ctx, "alert already sent", "channel", channel)
		a.count(al.Pipeline, channel, "duplicate")
		return nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("check %s: %w", key, err)
	}
	if err := a.notifiers[channel].send(ctx, al); err != nil {
		a.count(al.Pipeline, channel, "failed")
		return err
	}
	a.count(al.Pipeline, channel, "sent")
	log.InfoContext(ctx, "alert sent", "channel", channel, "step", al.Step, "alert", string(al.Kind))
	crash.Point("alerter", crash.AfterSend)
	sentAt := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	err = bus.Retry(ctx, func(ctx context.Context) error { _, err := a.kv.Create(ctx, key, sentAt); return err })
	if err != nil {
		// The alert is out; failing now would only make a retry send it again. Another replica
		// holding the key means both sent, which the record cannot undo either.
		log.WarnContext(ctx, "alert sent but not recorded; a redelivery may repeat it", "channel", channel, "err", err)
	}
	return nil
}

// combine joins the channels' errors. A permanent failure on one channel must not stop the retry
// that can still deliver on another, and errors.Is would find it inside a plain join: so the
// result is permanent only when every failure is. A wait (Slack's Retry-After) stays visible
// to errors.As, so the router parks the message for that long instead of spending a retry.
func combine(errs []error) error {
	var retryable []error
	for _, err := range errs {
		if !flow.IsPermanent(err) {
			retryable = append(retryable, err)
		}
	}
	if len(retryable) == 0 || len(retryable) == len(errs) {
		return errors.Join(errs...)
	}
	return &partialError{all: errs, retryable: retryable}
}

// partialError reports every channel's failure but unwraps only to the retryable ones.
type partialError struct{ all, retryable []error }

func (e *partialError) Error() string   { return errors.Join(e.all...).Error() }
func (e *partialError) Unwrap() []error { return e.retryable }
