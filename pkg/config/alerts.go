package config

import (
	"slices"
	"strings"

	"github.com/sluice-etl/sluice/pkg/secret"
)

// Alerts configures where failures are reported.
type Alerts struct {
	// RunURL is a link template for a run's page; {pipeline}, {ds} and {run_id} are replaced.
	RunURL string `yaml:"run_url"`
	// TraceURL is a link template for a run's trace (Jaeger, Tempo); {trace_id} is replaced,
	// and {pipeline}, {ds} and {run_id} as in RunURL.
	TraceURL string `yaml:"trace_url"`
	Slack    *Slack `yaml:"slack"`
	Email    *Email `yaml:"email"`
	SNS      *SNS   `yaml:"sns"`
}

// SNS publishes alerts to an AWS SNS topic. Without keys the SDK's default chain is used
// (instance role, IRSA, environment); keys, when given, must be references.
type SNS struct {
	TopicARN string `yaml:"topic_arn"`
	// Region defaults to the topic ARN's.
	Region string `yaml:"region"`
	// Endpoint overrides the SNS endpoint (a VPC endpoint).
	Endpoint  string       `yaml:"endpoint"`
	AccessKey secret.Value `yaml:"access_key"`
	SecretKey secret.Value `yaml:"secret_key"`
}

// Slack posts alerts with a bot token.
type Slack struct {
	Token   secret.Value `yaml:"token"`
	Channel string       `yaml:"channel"`
	// APIURL overrides Slack's API base URL (for a proxy or slack-go's slacktest server).
	APIURL string `yaml:"api_url"`
}

// Email sends alerts over SMTP.
type Email struct {
	Host     string       `yaml:"host"`
	Port     int          `yaml:"port"`
	Username string       `yaml:"username"`
	Password secret.Value `yaml:"password"`
	// TLS is "none", "starttls" (default) or "tls".
	TLS  string   `yaml:"tls"`
	From string   `yaml:"from"`
	To   []string `yaml:"to"`
}

// AlertChannel names a channel alerts go to (a pipeline's alerts and alerts_fallback).
type AlertChannel string

const (
	ChannelSlack AlertChannel = "slack"
	ChannelEmail AlertChannel = "email"
	ChannelSNS   AlertChannel = "sns"
)

// alertChannels are the channels a pipeline's alerts may name, in their order under alerts.
var alertChannels = []AlertChannel{ChannelSlack, ChannelEmail, ChannelSNS}

// applyDefaults sets the run page link (from the console's URL, defaulted first) and the
// email defaults.
func (a *Alerts) applyDefaults(consoleURL string) {
	setDefault(&a.RunURL, consoleURL+"/runs/{pipeline}/{ds}/{run_id}")
	if e := a.Email; e != nil {
		setDefault(&e.Port, 587)
		setDefault(&e.TLS, "starttls")
	}
}

// configured lists the channels configured, in alertChannels' order.
func (a *Alerts) configured() []AlertChannel {
	out := []AlertChannel{}
	for _, ch := range alertChannels {
		if a.has(ch) {
			out = append(out, ch)
		}
	}
	return out
}

// has reports whether channel is configured.
func (a *Alerts) has(channel AlertChannel) bool {
	switch channel {
	case ChannelSlack:
		return a.Slack != nil
	case ChannelEmail:
		return a.Email != nil
	case ChannelSNS:
		return a.SNS != nil
	}
	return false
}

func (a *Alerts) validate() error {
	if s := a.Slack; s != nil {
		if s.Token.IsZero() {
			return fieldErr("alerts.slack.token", "is required")
		}
		if s.Channel == "" {
			return fieldErr("alerts.slack.channel", "is required")
		}
	}
	if e := a.Email; e != nil {
		if err := e.validate(); err != nil {
			return err
		}
	}
	if s := a.SNS; s != nil {
		if parts := strings.Split(s.TopicARN, ":"); len(parts) != 6 || parts[0] != "arn" || parts[2] != "sns" || parts[5] == "" {
			return fieldErr("alerts.sns.topic_arn", "%q is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)", s.TopicARN)
		}
		if s.AccessKey.IsZero() != s.SecretKey.IsZero() {
			return fieldErr("alerts.sns", "needs both access_key and secret_key, or neither (the default credential chain)")
		}
	}
	return nil
}

func (e *Email) validate() error {
	if e.Host == "" {
		return fieldErr("alerts.email.host", "is required")
	}
	if e.Port < 1 || e.Port > 65535 {
		return fieldErr("alerts.email.port", "%d is not a port", e.Port)
	}
	switch e.TLS {
	case "none", "starttls", "tls":
	default:
		return fieldErr("alerts.email.tls", "%q must be none, starttls or tls", e.TLS)
	}
	if e.From == "" || len(e.To) == 0 {
		return fieldErr("alerts.email", "needs from and at least one to address")
	}
	return nil
}

// validateChannels checks a pipeline's alerts and alerts_fallback lists against the channels
// configured under alerts.
func (a *Alerts) validateChannels(at string, p *Pipeline) error {
	for i, ch := range p.AlertsFallback {
		if err := a.validateChannel(at+".alerts_fallback", ch); err != nil {
			return err
		}
		if slices.Contains(p.Alerts, ch) || slices.Contains(p.AlertsFallback[:i], ch) {
			return fieldErr(at+".alerts_fallback", "channel %q is already listed", ch)
		}
	}
	if p.SlackChannel != "" && a.Slack == nil {
		return fieldErr(at+".slack_channel", "needs alerts.slack")
	}
	for _, ch := range p.Alerts {
		if err := a.validateChannel(at+".alerts", ch); err != nil {
			return err
		}
	}
	return nil
}

func (a *Alerts) validateChannel(path string, ch AlertChannel) error {
	if !slices.Contains(alertChannels, ch) {
		return fieldErr(path, "unknown channel %q (slack, email, sns)", ch)
	}
	if !a.has(ch) {
		return fieldErr(path, "channel %q is not configured under alerts", ch)
	}
	return nil
}
