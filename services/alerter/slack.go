package alerter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// slackTimeout bounds one chat.postMessage call; slack-go's default client has no timeout.
const slackTimeout = 30 * time.Second

// permanentSlackErrors are Slack API errors a retry cannot fix: the token or the channel is wrong
// or the bot was never invited. Everything else (rate limits, 5xx, network) is retried.
var permanentSlackErrors = map[string]bool{
	"invalid_auth":      true,
	"channel_not_found": true,
	"not_in_channel":    true,
}

type slackNotifier struct {
	client  *slack.Client
	channel string
}

func newSlackNotifier(cfg config.Slack) (*slackNotifier, error) {
	if cfg.Channel == "" {
		return nil, errors.New("alerts.slack.channel is empty")
	}
	token := cfg.Token.Reveal()
	if token == "" {
		return nil, fmt.Errorf("alerts.slack.token %s is empty or unresolved", cfg.Token)
	}
	opts := []slack.Option{slack.OptionHTTPClient(&http.Client{Timeout: slackTimeout, Transport: telemetry.HTTPTransport(nil)})}
	if u := cfg.APIURL; u != "" {
		if !strings.HasSuffix(u, "/") {
			u += "/" // slack-go appends method names to it
		}
		opts = append(opts, slack.OptionAPIURL(u))
	}
	return &slackNotifier{client: slack.New(token, opts...), channel: cfg.Channel}, nil
}

func (s *slackNotifier) send(ctx context.Context, a alert) error {
	text, blocks, err := slackMessage(a)
	if err != nil {
		return flow.Permanent(err)
	}
	channel := s.channel
	if a.slackChannel != "" {
		channel = a.slackChannel
	}
	_, _, err = s.client.PostMessageContext(ctx, channel,
		slack.MsgOptionText(text, false),
		slack.MsgOptionBlocks(blocks...),
		slack.MsgOptionDisableLinkUnfurl(),
	)
	if err == nil {
		return nil
	}
	// A 429 says when to come back: wait that long (deferrably, via the broker) instead of
	// spending a retry on it.
	var limited *slack.RateLimitedError
	if errors.As(err, &limited) {
		return flow.Wait(limited.RetryAfter, "slack rate limited: retry after %s", limited.RetryAfter)
	}
	err = fmt.Errorf("slack post to %s: %w", channel, err)
	var resp slack.SlackErrorResponse
	if errors.As(err, &resp) && permanentSlackErrors[resp.Err] {
		return flow.Permanent(err)
	}
	return err
}
