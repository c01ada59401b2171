package telemetry

import (
	"context"
	"net/http"
	"reflect"
	"strings"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Outbound calls are traced with the tracer provider of the span in the call's context: calls
// made for a run join its trace, calls made outside one (start-up DDL, health checks) make no
// spans, and no global provider is involved.

const scope = "github.com/sluice-etl/sluice/pkg/telemetry"

// tracerFor returns the tracer of ctx's span, or nil when ctx has no span to join.
func tracerFor(ctx context.Context) trace.Tracer {
	s := trace.SpanFromContext(ctx)
	if !s.SpanContext().IsValid() {
		return nil
	}
	return s.TracerProvider().Tracer(scope)
}

// HTTPTransport wraps base (nil: http.DefaultTransport) so that each request is a client span
// and carries the W3C trace context to the server.
func HTTPTransport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "HTTP " + r.Method }))
}

// PgxTracer makes a span for every statement (query, exec, DDL) and COPY on a pgx connection. Set
// it as pgx.ConnConfig.Tracer (pool: pgxpool.Config.ConnConfig.Tracer). Argument values are not
// recorded: they are data, and the SQL text says what ran.
type PgxTracer struct{}

var (
	_ pgx.QueryTracer    = PgxTracer{}
	_ pgx.CopyFromTracer = PgxTracer{}
)

type pgxSpanKey struct{}

// maxStatement bounds the SQL text kept on a span.
const maxStatement = 2000

func (PgxTracer) start(ctx context.Context, conn *pgx.Conn, name string, attrs ...attribute.KeyValue) context.Context {
	t := tracerFor(ctx)
	if t == nil {
		return ctx
	}
	attrs = append(attrs, attribute.String("db.system", "postgresql"))
	if conn != nil {
		cfg := conn.Config()
		attrs = append(attrs, attribute.String("db.namespace", cfg.Database),
			attribute.String("server.address", cfg.Host), attribute.Int("server.port", int(cfg.Port)))
	}
	ctx, span := t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return context.WithValue(ctx, pgxSpanKey{}, span)
}

func (PgxTracer) end(ctx context.Context, rows int64, err error) {
	span, ok := ctx.Value(pgxSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	span.SetAttributes(attribute.Int64("db.rows_affected", rows))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// TraceQueryStart starts a span named after the statement's first keyword (SELECT, COPY, CREATE).
func (t PgxTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	sql := strings.TrimSpace(data.SQL)
	if len(sql) > maxStatement {
		sql = sql[:maxStatement] + "…"
	}
	return t.start(ctx, conn, "SQL "+operation(sql),
		attribute.String("db.operation.name", operation(sql)), attribute.String("db.query.text", sql))
}

// TraceQueryEnd ends the statement's span.
func (t PgxTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	t.end(ctx, data.CommandTag.RowsAffected(), data.Err)
}

// TraceCopyFromStart starts a span for a COPY FROM STDIN into a table.
func (t PgxTracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	table := data.TableName.Sanitize()
	return t.start(ctx, conn, "SQL COPY "+table, attribute.String("db.operation.name", "COPY"),
		attribute.String("db.collection.name", table), attribute.StringSlice("db.copy.columns", data.ColumnNames))
}

// TraceCopyFromEnd ends the COPY's span with the rows copied.
func (t PgxTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromEndData) {
	t.end(ctx, data.CommandTag.RowsAffected(), data.Err)
}

func operation(sql string) string {
	op, _, _ := strings.Cut(strings.TrimLeft(sql, "( \t\r\n"), " ")
	op, _, _ = strings.Cut(op, "\n")
	if op == "" {
		return "SQL"
	}
	return strings.ToUpper(strings.TrimRight(op, ";"))
}

// S3Tracing is an aws-sdk-go-v2 API option (s3.Options.APIOptions) that makes a span for every
// S3 operation, retries included, naming its bucket and key.
func S3Tracing(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("SluiceTracing",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			t := tracerFor(ctx)
			if t == nil {
				return next.HandleInitialize(ctx, in)
			}
			op := awsmiddleware.GetOperationName(ctx)
			attrs := []attribute.KeyValue{attribute.String("rpc.system", "aws-api"),
				attribute.String("rpc.service", awsmiddleware.GetServiceID(ctx)), attribute.String("rpc.method", op)}
			bucket, key := s3Target(in.Parameters)
			if bucket != "" {
				attrs = append(attrs, attribute.String("aws.s3.bucket", bucket))
			}
			if key != "" {
				attrs = append(attrs, attribute.String("aws.s3.key", key))
			}
			ctx, span := t.Start(ctx, "S3."+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
			defer span.End()
			out, md, err := next.HandleInitialize(ctx, in)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return out, md, err
		}), middleware.After) // after the SDK's own initialize steps, which name the operation
}

// s3Target reads the Bucket and Key fields every S3 object operation's input has.
func s3Target(params any) (bucket, key string) {
	v := reflect.ValueOf(params)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return "", ""
	}
	field := func(name string) string {
		f := v.Elem().FieldByName(name)
		if f.Kind() == reflect.Pointer && !f.IsNil() && f.Elem().Kind() == reflect.String {
			return f.Elem().String()
		}
		return ""
	}
	return field("Bucket"), field("Key")
}
