package dbtrunner

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/dbtdocs"
)

// docFiles are what `dbt docs generate` writes that a static docs site needs.
var docFiles = []struct{ name, contentType string }{
	{"index.html", "text/html; charset=utf-8"},
	{"manifest.json", "application/json"},
	{"catalog.json", "application/json"},
}

// DocsPrefix is where a run's dbt docs are published: docs/<pipeline>/<ds>/<run_id>/, which
// sluice's HTTP endpoint serves at /docs/<pipeline>/<ds>/<run_id>/ (package dbtdocs).
func DocsPrefix(pipeline, ds, runID string) string { return dbtdocs.Prefix(pipeline, ds, runID) }

// publishDocs runs `dbt docs generate` in the invocation's workspace (after build, so the
// catalog shows the upserted table) and uploads the site; it returns the key prefix.
func (inv *invocation) publishDocs(ctx context.Context, log *slog.Logger, c *s3.Client, bucket string) (string, error) {
	gctx, span := tracer(ctx).Start(ctx, "dbt docs generate", trace.WithSpanKind(trace.SpanKindClient))
	out, err := inv.run(gctx, "docs", "generate")
	if err != nil {
		if ctx.Err() == nil {
			err = classify(nil, nil, err, out)
			log.Warn("dbt docs generate failed", "err", err, "output", tail(out, 4000))
		}
		span.SetStatus(codes.Error, err.Error())
		span.End()
		return "", err
	}
	span.End()

	prefix := DocsPrefix(inv.pipeline, inv.ds, inv.runID)
	for _, f := range docFiles {
		b, err := os.ReadFile(inv.target(f.name))
		if err != nil {
			return "", fmt.Errorf("dbt docs generate wrote no %s: %w", f.name, err)
		}
		key := prefix + f.name
		pctx, span := tracer(ctx).Start(ctx, "s3 put", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("s3.bucket", bucket), attribute.String("s3.key", key), attribute.Int("s3.size", len(b))))
		_, err = c.PutObject(pctx, &s3.PutObjectInput{
			Bucket:      aws.String(bucket),
			Key:         aws.String(key),
			Body:        bytes.NewReader(b),
			ContentType: aws.String(f.contentType),
		})
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			span.End()
			return "", fmt.Errorf("put object %s: %w", key, err)
		}
		span.End()
	}
	return prefix, nil
}
