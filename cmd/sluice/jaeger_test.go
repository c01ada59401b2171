//go:build jaeger

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// The end-to-end trace check against a real Jaeger (all-in-one, memory storage): the six service
// processes export over OTLP/gRPC, and the run's trace is read back through Jaeger's query API.
// Building Jaeger takes long, so this runs in `make test-jaeger`, not `make test`.

const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startJaeger runs the all-in-one binary `make test-jaeger` builds; it returns the OTLP/gRPC
// endpoint and the query API's base URL.
func startJaeger(t *testing.T) (otlp, query string) {
	t.Helper()
	bin := os.Getenv("SLUICE_JAEGER")
	if bin == "" {
		bin = filepath.Join(testkit.RepoRoot(t), ".sluice/bin/jaeger")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("jaeger not found at %s: run `make test-jaeger`, which builds it", bin)
	}
	otlpAddr, httpAddr, grpcAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, httpAddr, grpcAddr, otlpAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("jaeger logs:\n%s", logs.String())
		}
	})
	query = "http://" + httpAddr
	testkit.Eventually(t, 60*time.Second, "Jaeger answers its query API", func() bool {
		resp, err := http.Get(query + "/api/services")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	return "http://" + otlpAddr, query
}

type jaegerTrace struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			ProcessID     string `json:"processID"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			Tags []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

func TestRunTraceInJaeger(t *testing.T) {
	otlp, query := startJaeger(t)
	h, err := samplesource.Handler(samplesource.Options{Rows: 100, Delay: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	lineageSink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer lineageSink.Close()
	st := startStackWith(t, otlp, "grpc", src.URL, lineageSink.URL)
	c := st.run(t, "2026-11-24")
	rec, err := runRecord(st, c)
	if err != nil {
		t.Fatal(err)
	}

	var tr jaegerTrace
	var ops []string
	testkit.Eventually(t, 60*time.Second, "Jaeger holds the run's trace", func() bool {
		resp, err := http.Get(query + "/api/traces/" + rec.TraceID)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		tr = jaegerTrace{}
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&tr) != nil || len(tr.Data) != 1 {
			return false
		}
		ops = ops[:0]
		for _, s := range tr.Data[0].Spans {
			ops = append(ops, s.OperationName)
		}
		return slices.Contains(ops, "run orders 2026-11-24") && slices.Contains(ops, "alerter")
	})
	trace := tr.Data[0]
	var rootID string
	services := map[string]string{}
	for _, s := range trace.Spans {
		services[s.OperationName] = trace.Processes[s.ProcessID].ServiceName
		if s.OperationName == "run orders 2026-11-24" {
			rootID = s.SpanID
			if len(s.References) != 0 {
				t.Errorf("root span has references %+v", s.References)
			}
		}
	}
	for _, step := range serviceNames {
		found := false
		for _, s := range trace.Spans {
			if s.OperationName != step {
				continue
			}
			found = true
			if len(s.References) != 1 || s.References[0].RefType != "CHILD_OF" || s.References[0].SpanID != rootID {
				t.Errorf("%s span references %+v, want CHILD_OF the root %s", step, s.References, rootID)
			}
			if svc := trace.Processes[s.ProcessID].ServiceName; svc != "sluice-"+step {
				t.Errorf("%s span from service %q", step, svc)
			}
		}
		if !found {
			t.Errorf("no %s span in Jaeger's trace (operations %v)", step, ops)
		}
	}
	if !slices.Contains(ops, "model.sluice.orders") || !slices.ContainsFunc(ops, func(o string) bool { return strings.HasPrefix(o, "SQL COPY") }) {
		t.Errorf("Jaeger's trace lacks the dbt model or the COPY span: %v", ops)
	}
	t.Logf("Jaeger has trace %s with %d spans from %d services", rec.TraceID, len(trace.Spans), len(trace.Processes))
}
