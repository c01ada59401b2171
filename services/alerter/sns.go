package alerter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/smithy-go"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// snsTimeout bounds one Publish call, the SDK's own retries included.
const snsTimeout = 30 * time.Second

// snsSubjectMax is SNS's limit on a subject (used by its email subscriptions).
const snsSubjectMax = 100

// permanentSNSErrors are SNS error codes a retry cannot fix: a wrong topic, missing permission,
// bad parameters. Throttling, 5xx and network errors are retried.
var permanentSNSErrors = map[string]bool{
	"NotFound":             true,
	"AuthorizationError":   true,
	"InvalidParameter":     true,
	"InvalidClientTokenId": true,
	"KMSAccessDenied":      true,
	"KMSDisabled":          true,
}

type snsNotifier struct {
	client *sns.Client
	topic  string
	fifo   bool
}

func newSNSNotifier(cfg config.SNS) (*snsNotifier, error) {
	parts := strings.Split(cfg.TopicARN, ":")
	if len(parts) != 6 || parts[2] != "sns" {
		return nil, fmt.Errorf("alerts.sns.topic_arn %q is not an SNS topic ARN", cfg.TopicARN)
	}
	region := cfg.Region
	if region == "" {
		region = parts[3]
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(region)}
	if !cfg.AccessKey.IsZero() {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey.Reveal(), cfg.SecretKey.Reveal(), "")))
	}
	ctx, cancel := context.WithTimeout(context.Background(), snsTimeout)
	defer cancel()
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("alerts.sns: load aws config: %w", err)
	}
	client := sns.NewFromConfig(ac, func(o *sns.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return &snsNotifier{client: client, topic: cfg.TopicARN, fifo: strings.HasSuffix(parts[5], ".fifo")}, nil
}

func (s *snsNotifier) send(ctx context.Context, a alert) error {
	subject, err := emailSubject(a)
	if err != nil {
		return flow.Permanent(err)
	}
	text, _, err := emailBodies(a)
	if err != nil {
		return flow.Permanent(err)
	}
	in := &sns.PublishInput{
		TopicArn: aws.String(s.topic),
		Subject:  aws.String(snsSubject(subject)),
		Message:  aws.String(text),
	}
	if s.fifo {
		// A FIFO topic deduplicates by this id for five minutes: the crash window between
		// publishing and recording the alert then repeats nothing.
		in.MessageDeduplicationId = aws.String(a.RunID + "." + a.Kind.dedupeKind())
		in.MessageGroupId = aws.String(a.Pipeline)
	}
	ctx, cancel := context.WithTimeout(ctx, snsTimeout)
	defer cancel()
	if _, err := s.client.Publish(ctx, in); err != nil {
		err = fmt.Errorf("sns publish to %s: %w", s.topic, err)
		var api smithy.APIError
		if errors.As(err, &api) && permanentSNSErrors[api.ErrorCode()] {
			return flow.Permanent(err)
		}
		return err
	}
	return nil
}

// snsSubject fits a subject to SNS's rules: ASCII letters, digits, punctuation and spaces, at
// most 100 characters, starting with a letter, number or punctuation mark.
func snsSubject(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	out := strings.TrimSpace(b.String())
	if len(out) > snsSubjectMax {
		out = out[:snsSubjectMax-3] + "..."
	}
	return out
}
