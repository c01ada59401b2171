// Package alerter is sluice's failure alerting step: for each `failed` event it tells every
// channel the pipeline lists (Slack through slack-go, email over SMTP through go-mail) which run
// failed, at which step, for which execution date and why, with a link to the run. A JetStream KV
// bucket records each (run id, channel) alert once it is delivered, so a redelivered event, a
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

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// Channel names, as pipelines list them under `alerts`.
const (
	ChannelSlack = "slack"
	ChannelEmail = "email"
)

// Alerter sends failure alerts. It is safe for concurrent use.
type Alerter struct {
	kv        jetstream.KeyValue
	log       *slog.Logger
	runURL    string
	routes    map[string][]string // pipeline name -> channels
	notifiers map[string]notifier // channel -> its client
}

// notifier delivers one alert on one channel.
type notifier interface {
	send(ctx context.Context, a alert) error
}

// New builds the alerter. kv is a JetStream KV bucket used to deduplicate alerts across replicas
// and restarts. Only channels some pipeline lists get a client; a listed channel whose config is
// missing or invalid is an error. A pipeline with no alerts listed is never alerted on.
func New(cfg config.Alerts, pipelines []config.Pipeline, kv jetstream.KeyValue, log *slog.Logger) (*Alerter, error) {
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
		routes:    make(map[string][]string, len(pipelines)),
		notifiers: make(map[string]notifier),
	}
	for _, p := range pipelines {
		var channels []string
		for _, ch := range p.Alerts {
			if slices.Contains(channels, ch) {
				continue
			}
			if _, ok := a.notifiers[ch]; !ok {
				n, err := newNotifier(ch, cfg)
				if err != nil {
					return nil, fmt.Errorf("pipeline %s: alerts: %w", p.Name, err)
				}
				a.notifiers[ch] = n
			}
			channels = append(channels, ch)
		}
		a.routes[p.Name] = channels
	}
	return a, nil
}

func newNotifier(channel string, cfg config.Alerts) (notifier, error) {
	switch channel {
	case ChannelSlack:
		if cfg.Slack == nil {
			return nil, errors.New("channel slack is listed but alerts.slack is not configured")
		}
		return newSlackNotifier(*cfg.Slack)
	case ChannelEmail:
		if cfg.Email == nil {
			return nil, errors.New("channel email is listed but alerts.email is not configured")
		}
		return newEmailNotifier(*cfg.Email)
	}
	return nil, fmt.Errorf("unknown channel %q (slack, email)", channel)
}

// runIDRe keeps a run id to one KV key token: dots would change the key's shape.
var runIDRe = regexp.MustCompile(`^[A-Za-z0-9_=-]+$`)

// Handle sends the failure alert for one failed run to every channel the pipeline lists. It tries
// every channel even when one fails; the error is permanent only if every failure is.
func (a *Alerter) Handle(ctx context.Context, f *event.Failed) error {
	channels, ok := a.routes[f.Pipeline]
	if !ok {
		return flow.Permanentf("alert: unknown pipeline %q", f.Pipeline)
	}
	if !runIDRe.MatchString(f.RunID) {
		return flow.Permanentf("alert: run id %q is not a valid key token", f.RunID)
	}
	log := a.log.With("pipeline", f.Pipeline, "ds", f.DS, "run_id", f.RunID)
	al := newAlert(f, a.runURL)

	var errs []error
	for _, ch := range channels {
		if err := a.deliver(ctx, log, ch, f.RunID, al); err != nil {
			log.WarnContext(ctx, "alert not sent", "channel", ch, "err", err, "permanent", flow.IsPermanent(err))
			errs = append(errs, fmt.Errorf("alert on %s: %w", ch, err))
		}
	}
	return combine(errs)
}

// deliver sends al on channel unless the KV bucket records it as sent for this run.
func (a *Alerter) deliver(ctx context.Context, log *slog.Logger, channel, runID string, al alert) error {
	key := runID + ".failed." + channel
	switch _, err := a.kv.Get(ctx, key); {
	case err == nil:
		log.DebugContext(ctx, "alert already sent", "channel", channel)
		return nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("check %s: %w", key, err)
	}
	if err := a.notifiers[channel].send(ctx, al); err != nil {
		return err
	}
	log.InfoContext(ctx, "alert sent", "channel", channel, "step", al.Step)
	sentAt := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := a.kv.Create(ctx, key, sentAt); err != nil {
		// The alert is out; failing now would only make a retry send it again. Another replica
		// holding the key means both sent, which the record cannot undo either.
		log.WarnContext(ctx, "alert sent but not recorded; a redelivery may repeat it", "channel", channel, "err", err)
	}
	return nil
}

// combine joins the channels' errors. A permanent failure on one channel must not stop the retry
// that can still deliver on another, and errors.Is would find it inside a plain join: so the
// result is permanent only when every failure is.
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
