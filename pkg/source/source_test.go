package source

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sluice-etl/sluice/pkg/config"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.example.com/data/2026-11-25.csv":                       "https://api.example.com/data/2026-11-25.csv",
		"https://user:pw@api.example.com/x.csv":                             "https://REDACTED@api.example.com/x.csv",
		"https://api.example.com/x.csv?api_key=k3y&fmt=csv":                 "https://api.example.com/x.csv?api_key=REDACTED&fmt=csv",
		"https://b.s3.amazonaws.com/x?X-Amz-Signature=abc&X-Amz-Expires=60": "https://b.s3.amazonaws.com/x?X-Amz-Expires=60&X-Amz-Signature=REDACTED",
		"https://api.example.com/x?myToken=t&sessionSecret=s":               "https://api.example.com/x?myToken=REDACTED&sessionSecret=REDACTED",
		"http://[::1%zz/": Redacted,
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%s) = %s, want %s", in, got, want)
		}
	}
}

// The span of a request to the source shows its URL redacted (otelhttp records the query as it
// is; the source client overwrites it).
func TestSpanShowsTheURLRedacted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "run")
	p := &config.Pipeline{Name: "orders", Source: config.Source{URL: srv.URL + "/{ds}.csv?api_key=k3y"}}
	req, err := NewRequest(ctx, p, http.MethodGet, "2026-11-25", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := Do(Client(time.Minute, nil), req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()
	found := false
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), "k3y") {
				t.Fatalf("span %s attribute %s = %s", s.Name(), a.Key, a.Value.Emit())
			}
			if a.Key == "url.full" {
				found = strings.Contains(a.Value.AsString(), "api_key=REDACTED")
			}
		}
	}
	if !found {
		t.Fatal("no span with a redacted url.full")
	}
}
