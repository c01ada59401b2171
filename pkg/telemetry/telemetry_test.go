package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/telemetry"
)

func TestRedactRemovesSecretsFromEveryPartOfALine(t *testing.T) {
	var buf bytes.Buffer
	secrets := []string{"postgres://app:s3cr3t-pw@db:5432/wh", "xoxb-slack-token", "ab"}
	log := telemetry.Redact(telemetry.Logger(&buf, slog.LevelDebug), secrets).With("conn", "postgres://app:s3cr3t-pw@db:5432/wh")
	log.Info("token xoxb-slack-token in message",
		"err", errors.New("dial postgres://app:s3cr3t-pw@db:5432/wh: refused"),
		"pw", "the password is s3cr3t-pw",
		"nested", slog.GroupValue(slog.String("token", "xoxb-slack-token")),
		"any", struct{ Token string }{"xoxb-slack-token"},
		"short", "ab is too short to redact")
	out := buf.String()
	for _, s := range []string{"s3cr3t-pw", "xoxb-slack-token"} {
		if strings.Contains(out, s) {
			t.Errorf("log line contains %q: %s", s, out)
		}
	}
	if strings.Count(out, telemetry.Redacted) < 6 || !strings.Contains(out, "ab is too short") {
		t.Errorf("log line: %s", out)
	}
}

func TestLoggerAddsRunAndTraceFromTheContext(t *testing.T) {
	var buf bytes.Buffer
	log := telemetry.Logger(&buf, slog.LevelInfo).With("ds", "given")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: telemetry.NewTraceID(), SpanID: telemetry.NewSpanID()})
	ctx := trace.ContextWithSpanContext(telemetry.ContextWithRun(context.Background(), "orders", "2026-11-25", "01RUN"), sc)
	log.InfoContext(ctx, "hello", "run_id", "explicit")
	out := buf.String()
	for _, want := range []string{`"pipeline":"orders"`, `"trace_id":"` + sc.TraceID().String(), `"span_id":"` + sc.SpanID().String(), `"run_id":"explicit"`, `"ds":"given"`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in %s", want, out)
		}
	}
	if strings.Count(out, `"run_id"`) != 1 || strings.Count(out, `"ds"`) != 1 {
		t.Errorf("a key twice: %s", out)
	}
}

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestTracingExportsOnlyWhenAnEndpointIsSet(t *testing.T) {
	ctx := context.Background()
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()

	off, err := telemetry.NewTracing(ctx, "sluice-test", env(nil))
	if err != nil || off.Exporting {
		t.Fatalf("no OTEL_* variables: exporting %v, %v", off != nil && off.Exporting, err)
	}
	for _, bad := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_TRACES_EXPORTER": "zipkin"},
	} {
		if _, err := telemetry.NewTracing(ctx, "sluice-test", env(bad)); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	if tr, err := telemetry.NewTracing(ctx, "x", env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_TRACES_EXPORTER": "none"})); err != nil || tr.Exporting {
		t.Errorf("OTEL_TRACES_EXPORTER=none still exports (%v)", err)
	}

	tr, err := telemetry.NewTracing(ctx, "sluice-test", env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL}))
	if err != nil || !tr.Exporting {
		t.Fatalf("endpoint set: exporting %v, %v", tr != nil && tr.Exporting, err)
	}
	_, s := tr.Provider.Tracer("t").Start(ctx, "step")
	s.End()
	_, s = tr.Runs.Tracer("t").Start(ctx, "run")
	s.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Error("no spans reached the OTLP endpoint")
	}
}

func TestWithSpanIDsGivesOnlyTheNextSpanTheIDs(t *testing.T) {
	tp := telemetry.TracerProvider("t")
	tid, sid := telemetry.NewTraceID(), telemetry.NewSpanID()
	ctx, root := tp.Tracer("t").Start(telemetry.WithSpanIDs(context.Background(), tid, sid), "root", trace.WithNewRoot())
	if root.SpanContext().TraceID() != tid || root.SpanContext().SpanID() != sid {
		t.Fatalf("root ids %s %s, want %s %s", root.SpanContext().TraceID(), root.SpanContext().SpanID(), tid, sid)
	}
	_, child := tp.Tracer("t").Start(ctx, "child")
	if child.SpanContext().SpanID() == sid || child.SpanContext().TraceID() != tid {
		t.Fatalf("child reused the fixed span id")
	}
}
