// Package objstore builds the S3 client every service uses, from the s3 section of the config.
package objstore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sluice-etl/sluice/pkg/config"
)

// New returns an S3 client for cfg. Static credentials are used when the config gives them,
// otherwise the SDK's default chain (instance role, IRSA, environment). optFns adjust the
// client's options after cfg's (app adds tracing middleware).
func New(ctx context.Context, cfg config.S3, optFns ...func(*s3.Options)) (*s3.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region)}
	if !cfg.AccessKey.IsZero() {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey.Reveal(), cfg.SecretKey.Reveal(), "")))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	base := func(o *s3.Options) {
		if ep := cfg.Endpoint.Reveal(); ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
		o.UsePathStyle = cfg.PathStyle
		// A GET of a multipart object cannot check the SDK's whole-object CRC and says so on
		// stderr, outside the JSON log, on every read; sluice checks the SHA-256 of what it
		// reads itself (the validator against the landed event).
		o.DisableLogOutputChecksumValidationSkipped = true
	}
	return s3.NewFromConfig(ac, append([]func(*s3.Options){base}, optFns...)...), nil
}

// EnsureBucket creates the bucket if it does not exist.
func EnsureBucket(ctx context.Context, c *s3.Client, bucket string) error {
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)}); err == nil {
		return nil
	}
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return nil
}
