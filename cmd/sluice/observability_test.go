package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lineage"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// The observability acceptance test: one date through the six services, each its own process
// (the binaries built from cmd/sluice-<svc>), on an in-process JetStream server, real
// PostgreSQL, S3 and dbt. An in-process OTLP/HTTP receiver collects what they export.

var serviceNames = []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter"}

// buildServices builds the six service binaries into a temp dir of t (one go build, so the
// packages they share compile once).
func buildServices(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/"}
	for _, s := range serviceNames {
		args = append(args, "./services/"+s+"/cmd/sluice-"+s)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = testkit.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// otlpReceiver is an OTLP/HTTP trace endpoint keeping every span it is sent.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []span
}

type span struct {
	service string
	*tracepb.Span
}

func (s span) traceID() string  { return hex.EncodeToString(s.TraceId) }
func (s span) id() string       { return hex.EncodeToString(s.SpanId) }
func (s span) parentID() string { return hex.EncodeToString(s.ParentSpanId) }

func (s span) attr(key string) (string, []string) {
	for _, kv := range s.Attributes {
		if kv.Key != key {
			continue
		}
		if arr := kv.Value.GetArrayValue(); arr != nil {
			var out []string
			for _, v := range arr.Values {
				out = append(out, v.GetStringValue())
			}
			return "", out
		}
		if _, ok := kv.Value.Value.(*commonpb.AnyValue_IntValue); ok {
			return fmt.Sprint(kv.Value.GetIntValue()), nil
		}
		return kv.Value.GetStringValue(), nil
	}
	return "", nil
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ex coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &ex); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range ex.ResourceSpans {
			svc := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					svc = kv.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					r.spans = append(r.spans, span{service: svc, Span: sp})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *otlpReceiver) trace(id string) []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []span
	for _, s := range r.spans {
		if s.traceID() == id {
			out = append(out, s)
		}
	}
	return out
}

// proc is one service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer
	done chan error
}

// stack is the six processes and what they share.
type stack struct {
	cfg     *config.Config
	secrets map[string]string
	nc      *nats.Conn
	js      jetstream.JetStream
	procs   map[string]*proc
	events  *eventLog
	lineage string
	otlp    map[string]string // the OTEL_* variables the processes get
}

const obsConfig = `lineage:
  url: %s
  file: %s
pipelines:
  - name: orders
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 200ms
      timeout: 2m
    lease:
      ttl: 20s
    retries:
      max: 1
      delay: 200ms
    dbt:
      select: stg_orders orders
`

// startStack starts the six service processes exporting traces to otlpEndpoint (OTLP/HTTP).
func startStack(t *testing.T, otlpEndpoint, sourceURL, lineageURL string) *stack {
	t.Helper()
	return startStackWith(t, otlpEndpoint, "http/protobuf", sourceURL, lineageURL)
}

// startStackWith starts the six service processes exporting traces to otlpEndpoint with
// protocol (grpc or http/protobuf).
func startStackWith(t *testing.T, otlpEndpoint, protocol, sourceURL, lineageURL string) *stack {
	t.Helper()
	bin := buildServices(t)
	ns := testkit.NATS(t)
	s3cfg := testkit.S3(t)
	slackSrv, _ := testkit.Slack(t)
	dir := t.TempDir()
	st := &stack{procs: map[string]*proc{}, events: &eventLog{}, lineage: filepath.Join(dir, "lineage.jsonl"),
		otlp: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": otlpEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}}
	// No nats section: each process is given the broker with --nats.
	c := testConfig{noNATS: true, bucket: s3cfg.Bucket, dbt: true, slack: slackSrv.GetAPIURL(),
		rest: fmt.Sprintf(obsConfig, lineageURL, st.lineage, sourceURL)}
	path := c.writeIn(t, dir)
	st.secrets = testSecrets("", testkit.Postgres(t), s3cfg)
	delete(st.secrets, "NATS_URL")
	st.secrets["SLACK_TOKEN"] = "xoxb-observability-secret-token"
	st.cfg = loadConfig(t, path, st.secrets)
	st.nc, st.js = testkit.Connect(t, ns)
	if err := bus.Provision(context.Background(), st.js, app.BusOptions(st.cfg)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.nc.Subscribe("etl.>", st.events.add); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlpEndpoint, "OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol,
		"OTEL_BSP_SCHEDULE_DELAY=100"}
	for k, v := range st.secrets {
		env = append(env, k+"="+v)
	}
	for _, name := range serviceNames {
		p := &proc{name: name, logs: &syncBuffer{}, done: make(chan error, 1)}
		p.cmd = exec.Command(filepath.Join(bin, "sluice-"+name), "--config", path, "--nats", ns.ClientURL(), "--http", "127.0.0.1:0")
		p.cmd.Env = env
		stderr, err := p.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addr := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Bytes()
				_, _ = p.logs.Write(append(append([]byte(nil), line...), '\n'))
				var l struct{ Msg, Addr string }
				if json.Unmarshal(line, &l) == nil && l.Msg == "http endpoint" {
					addr <- l.Addr
				}
			}
		}()
		go func() { p.done <- p.cmd.Wait() }()
		st.procs[name] = p
		select {
		case p.addr = <-addr:
		case err := <-p.done:
			t.Fatalf("sluice-%s exited: %v\n%s", name, err, p.logs.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("sluice-%s did not serve HTTP within 60s:\n%s", name, p.logs.String())
		}
	}
	t.Cleanup(func() {
		st.stop(t)
		if t.Failed() {
			for _, name := range serviceNames {
				t.Logf("sluice-%s logs:\n%s", name, st.procs[name].logs.String())
			}
		}
	})
	return st
}

// stop asks every process to shut down (they flush their spans) and waits for them.
func (st *stack) stop(t *testing.T) {
	for _, p := range st.procs {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range st.procs {
		select {
		case <-p.done:
		case <-time.After(45 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Errorf("sluice-%s did not stop within 45s of SIGTERM", p.name)
		}
	}
}

// run requests ds from this test process (which exports its own "request" span) and waits for
// the run's completed event.
func (st *stack) run(t *testing.T, ds string) *event.Completed {
	t.Helper()
	tr, err := telemetry.NewTracing(context.Background(), "sluice-test", func(k string) (string, bool) {
		v, ok := st.otlp[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	req, err := trigger.RequestRun(context.Background(), st.js, tr.Provider, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}, "orders", ds, "test")
	if err != nil {
		t.Fatal(err)
	}
	_ = tr.Shutdown(context.Background())
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if c := st.events.find(req.RunID, event.KindCompleted); len(c) > 0 {
			return c[0].(*event.Completed)
		}
		if f := st.events.find(req.RunID, event.KindFailed); len(f) > 0 {
			t.Fatalf("run failed: %+v", f[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("run %s of %s did not complete within 3m", req.RunID, ds)
	return nil
}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestOneTraceMetricsDocsAndLineageAcrossSixProcesses(t *testing.T) {
	rcv := startOTLPReceiver(t)
	var olMu sync.Mutex
	var olPosted []lineage.RunEvent
	ol := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev lineage.RunEvent
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		olMu.Lock()
		olPosted = append(olPosted, ev)
		olMu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer ol.Close()
	h, err := samplesource.Handler(samplesource.Options{Rows: 200, Delay: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	st := startStack(t, rcv.URL, src.URL, ol.URL+"/api/v1/lineage")

	const ds = "2026-11-25"
	c := st.run(t, ds)
	rec, err := runRecord(st, c)
	if err != nil {
		t.Fatal(err)
	}
	traceID := rec.TraceID

	// One trace: the root span (exported when the run ends), the six step spans as its
	// children, each from its own process, the request span from this test's process. Each
	// process exports in its own batches, so wait for every step's span and every parent, and
	// for the dbt docs the dbt-runner publishes in the background after completed (their last
	// spans: the copies to the run's docs key).
	var spans []span
	testkit.Eventually(t, 2*time.Minute, "every step's span and its parent, and the docs' spans", func() bool {
		spans = rcv.trace(traceID)
		if findSpan(spans, "run orders "+ds) == nil || findSpan(spans, "dbt docs generate") == nil || findSpan(spans, "S3.CopyObject") == nil {
			return false
		}
		for _, name := range serviceNames {
			if findSpan(spans, name) == nil {
				return false
			}
		}
		have := map[string]bool{}
		for _, s := range spans {
			have[s.id()] = true
		}
		for _, s := range spans {
			if p := s.parentID(); p != "" && !have[p] {
				return false
			}
		}
		return true
	})
	root := findSpan(spans, "run orders "+ds)
	if root.parentID() != "" || root.service != telemetry.RunService {
		t.Errorf("root span: parent %q service %q, want no parent and service %q", root.parentID(), root.service, telemetry.RunService)
	}
	if o, _ := root.attr("sluice.outcome"); o != "completed" {
		t.Errorf("root span outcome %q", o)
	}
	if req := findSpan(spans, "request orders "+ds); req == nil || req.parentID() != root.id() || req.service != "sluice-test" {
		t.Errorf("request span %+v, want a child of the root from the test process", req)
	}
	ids := map[string]span{}
	for _, s := range spans {
		if _, dup := ids[s.id()]; dup {
			t.Errorf("span id %s appears twice (%s)", s.id(), s.Name)
		}
		ids[s.id()] = s
	}
	for _, s := range spans {
		if p := s.parentID(); p != "" {
			if _, ok := ids[p]; !ok {
				t.Errorf("span %s (%s) has parent %s, which is not in the trace", s.Name, s.service, p)
			}
		}
	}
	step := map[string]span{}
	for _, name := range serviceNames {
		s := findSpan(spans, name)
		if s == nil {
			t.Errorf("no %s step span in trace %s", name, traceID)
			continue
		}
		step[name] = *s
		if s.parentID() != root.id() {
			t.Errorf("%s span's parent is %s, want the run's root %s", name, s.parentID(), root.id())
		}
		if s.service != "sluice-"+name {
			t.Errorf("%s span exported by %q, want its own process sluice-%s", name, s.service, name)
		}
	}
	// Poke attempts are events on the one sensor span (the source answers 404 for a second).
	pokes := 0
	for _, e := range step["sensor"].Events {
		if e.Name == "poke" {
			pokes++
		}
	}
	if pokes < 2 {
		t.Errorf("sensor span has %d poke events, want at least 2", pokes)
	}
	// Outbound calls are children of their step's span.
	for _, want := range []struct{ step, name string }{
		{"sensor", "HTTP HEAD"}, {"fetcher", "HTTP GET"}, {"fetcher", "S3.PutObject"},
		{"validator", "S3.GetObject"}, {"validator", "SQL COPY"}, {"validator", "SQL DELETE"},
		{"partitioner", "SQL CREATE"}, {"dbtrunner", "dbt build"}, {"dbtrunner", "dbt docs generate"}, {"dbtrunner", "S3.PutObject"},
	} {
		if !hasDescendant(spans, step[want.step].id(), want.name) {
			t.Errorf("no %q span under the %s span", want.name, want.step)
		}
	}
	// dbt: one span per model and test, under `dbt build`, with its upstream nodes.
	build := findSpan(spans, "dbt build")
	orders := findSpan(spans, "model.sluice.orders")
	if build == nil || orders == nil {
		t.Fatalf("no dbt build or model.sluice.orders span")
	}
	if orders.parentID() != build.id() {
		t.Errorf("model span's parent is %s, want dbt build %s", orders.parentID(), build.id())
	}
	if _, deps := orders.attr("dbt.depends_on"); !slices.Contains(deps, "model.sluice.stg_orders") {
		t.Errorf("model.sluice.orders depends_on %v, want model.sluice.stg_orders", deps)
	}
	if status, _ := orders.attr("dbt.status"); status != "success" {
		t.Errorf("model.sluice.orders status %q", status)
	}
	tests := 0
	for _, s := range spans {
		if strings.HasPrefix(s.Name, "test.sluice.") && s.parentID() == build.id() {
			tests++
		}
	}
	if tests == 0 {
		t.Error("no dbt test spans")
	}
	// Lineage attributes: source URL -> S3 object -> staging table -> partition -> models.
	if u, _ := step["sensor"].attr("sluice.source.url"); !strings.HasSuffix(u, "/data/"+ds+".csv") {
		t.Errorf("sensor span source url %q", u)
	}
	if _, out := step["fetcher"].attr("sluice.lineage.outputs"); len(out) != 1 || out[0] != "s3://"+st.cfg.S3.Bucket+"/raw/orders/"+ds+".csv" {
		t.Errorf("fetcher outputs %v", out)
	}
	if tbl, _ := step["validator"].attr("sluice.staging_table"); tbl != "public.staging_orders" {
		t.Errorf("validator staging table %q", tbl)
	}
	if part, _ := step["partitioner"].attr("sluice.partition"); part != "public.orders_p20261125" {
		t.Errorf("partitioner partition %q", part)
	}
	if _, models := step["dbtrunner"].attr("sluice.models"); !slices.Contains(models, "orders") || !slices.Contains(models, "stg_orders") {
		t.Errorf("dbtrunner models %v", models)
	}

	checkMetrics(t, st, c)
	checkDocs(t, st, c)
	checkLogs(t, st, traceID)
	checkLineage(t, st, c, func() int { olMu.Lock(); defer olMu.Unlock(); return len(olPosted) })
}

func runRecord(st *stack, c *event.Completed) (rec struct{ TraceID string }, err error) {
	kv, err := st.js.KeyValue(context.Background(), "sluice_runs")
	if err != nil {
		return rec, err
	}
	e, err := kv.Get(context.Background(), c.Pipeline+"."+c.DS+"."+c.RunID)
	if err != nil {
		return rec, err
	}
	err = json.Unmarshal(e.Value(), &struct {
		TraceID *string `json:"trace_id"`
	}{&rec.TraceID})
	if err == nil && rec.TraceID == "" {
		err = fmt.Errorf("run record without trace id")
	}
	return rec, err
}

func findSpan(spans []span, name string) *span {
	for i := range spans {
		if spans[i].Name == name {
			return &spans[i]
		}
	}
	return nil
}

// hasDescendant reports a span whose name starts with name below the span with id parent.
func hasDescendant(spans []span, parent, name string) bool {
	byID := map[string]span{}
	for _, s := range spans {
		byID[s.id()] = s
	}
	for _, s := range spans {
		if !strings.HasPrefix(s.Name, name) {
			continue
		}
		for p := s.parentID(); p != ""; p = byID[p].parentID() {
			if p == parent {
				return true
			}
		}
	}
	return false
}

// scrape reads a service's /metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, _, body := get(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d", addr, code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", addr, err)
	}
	return fams
}

// value is the sum of the family's series matching labels (counter, gauge, or histogram count).
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range f.Metric {
		for k, v := range labels {
			match := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					match = true
				}
			}
			if !match {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

func checkMetrics(t *testing.T, st *stack, c *event.Completed) {
	t.Helper()
	known := map[string]bool{}
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range m.Names() {
		known[n] = true
	}
	type want struct {
		name   string
		labels map[string]string
		min    float64
	}
	o := map[string]string{"pipeline": "orders"}
	with := func(kv ...string) map[string]string {
		l := map[string]string{"pipeline": "orders"}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return l
	}
	perService := map[string][]want{
		"sensor": {{"sluice_step_outcomes_total", with("step", "sensor", "outcome", "ok"), 1},
			{"sluice_step_outcomes_total", with("step", "sensor", "outcome", "wait"), 1},
			{"sluice_sensor_pokes_total", with("result", "not_ready"), 1},
			{"sluice_sensor_pokes_total", with("result", "ready"), 1},
			{"sluice_step_duration_seconds", with("step", "sensor", "outcome", "ok"), 1},
			{"sluice_lease_contention_total", o, 0}},
		"fetcher": {{"sluice_bytes_total", with("step", "fetcher"), float64(c.Object.Size)},
			{"sluice_step_duration_seconds", with("step", "fetcher"), 1}},
		"validator":   {{"sluice_rows_total", with("step", "validator", "kind", "staged"), float64(c.Staged)}},
		"partitioner": {{"sluice_step_outcomes_total", with("step", "partitioner", "outcome", "ok"), 1}},
		"dbtrunner": {{"sluice_rows_total", with("kind", "inserted"), float64(c.Inserted)},
			{"sluice_runs_finished_total", with("outcome", "completed"), 1},
			{"sluice_run_duration_seconds", with("outcome", "completed"), 1},
			{"sluice_step_retries_total", o, 0}},
		"alerter": {{"sluice_step_outcomes_total", with("step", "alerter", "outcome", "ok"), 1},
			{"sluice_alerts_total", with("channel", "slack", "outcome", "sent"), 0}},
	}
	for _, name := range serviceNames {
		p := st.procs[name]
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, _, body := get(t, "http://"+p.addr+path); code != http.StatusOK {
				t.Errorf("sluice-%s %s: %d %s", name, path, code, body)
			}
		}
		var fams map[string]*dto.MetricFamily
		// The run-state gauges follow the bucket asynchronously.
		testkit.Eventually(t, 10*time.Second, "the run-state gauge counts a completed run", func() bool {
			fams = scrape(t, p.addr)
			v, _ := value(fams, "sluice_runs", with("state", "completed"))
			return v >= 1
		})
		ws := append(perService[name],
			want{"sluice_last_success_timestamp_seconds", o, float64(c.RequestedAt.Unix())},
			want{"sluice_consumer_pending_messages", map[string]string{"consumer": name}, 0},
			want{"sluice_consumer_ack_pending_messages", map[string]string{"consumer": name}, 0},
			want{"go_goroutines", nil, 1})
		for _, w := range ws {
			v, ok := value(fams, w.name, w.labels)
			if !ok || v < w.min {
				t.Errorf("sluice-%s: %s%v = %v (present %v), want at least %v", name, w.name, w.labels, v, ok, w.min)
			}
		}
		for fam := range fams {
			if strings.HasPrefix(fam, "sluice_") && !known[fam] {
				t.Errorf("sluice-%s exports %s, which metrics.Names does not list", name, fam)
			}
		}
	}
}

func checkDocs(t *testing.T, st *stack, c *event.Completed) {
	t.Helper()
	base := "http://" + st.procs["dbtrunner"].addr
	url := base + "/docs/orders/" + c.DS + "/" + c.RunID + "/"
	// The dbt-runner publishes a run's docs in the background, after completed.
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, _, _ := get(t, url+"catalog.json"); code == http.StatusOK {
			break
		}
	}
	code, hdr, index := get(t, url+"index.html")
	if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") || !bytes.Contains(index, []byte("dbt")) {
		t.Fatalf("GET %sindex.html: %d %s (%d bytes)", url, code, hdr.Get("Content-Type"), len(index))
	}
	s3c, err := objstore.New(context.Background(), st.cfg.S3)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"index.html", "manifest.json", "catalog.json"} {
		_, _, served := get(t, url+f)
		obj, err := s3c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(st.cfg.S3.Bucket), Key: aws.String(c.DocsKey + f)})
		if err != nil {
			t.Fatalf("docs object %s%s: %v", c.DocsKey, f, err)
		}
		stored, _ := io.ReadAll(obj.Body)
		obj.Body.Close()
		if !bytes.Equal(served, stored) {
			t.Errorf("%s%s: served %d bytes, the run published %d different ones", url, f, len(served), len(stored))
		}
	}
	_, _, manifest := get(t, url+"manifest.json")
	if !bytes.Contains(manifest, []byte(`"model.sluice.orders"`)) {
		t.Error("served manifest.json has no model.sluice.orders")
	}
	if code, hdr, _ := get(t, base+"/docs/orders/latest/"); code != http.StatusFound || hdr.Get("Location") != "/docs/orders/"+c.DS+"/"+c.RunID+"/" {
		t.Errorf("latest docs: %d -> %q", code, hdr.Get("Location"))
	}
	if code, _, _ := get(t, base+"/docs/orders/"+c.DS+"/NOSUCHRUN/index.html"); code != http.StatusNotFound {
		t.Errorf("docs of an unknown run: %d, want 404", code)
	}
	for _, path := range []string{"/..%2f..%2fraw%2forders%2f" + c.DS + ".csv", "/sub/x.json", "/.hidden"} {
		if code, _, _ := get(t, url+strings.TrimPrefix(path, "/")); code == http.StatusOK {
			t.Errorf("docs path %s outside the run's files: served", path)
		}
	}
}

// checkLogs: JSON lines; those about the run name it, its trace and a span; no secret anywhere.
func checkLogs(t *testing.T, st *stack, traceID string) {
	t.Helper()
	for _, name := range serviceNames {
		logs := st.procs[name].logs.String()
		for k, v := range st.secrets {
			if (k == "SLACK_TOKEN" || k == "S3_SECRET_KEY" || k == "PG_URL") && strings.Contains(logs, v) {
				t.Errorf("sluice-%s logs contain the value of %s", name, k)
			}
		}
		runLines := 0
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			var l map[string]any
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Errorf("sluice-%s: log line is not JSON: %s", name, line)
				continue
			}
			if l["run_id"] == nil {
				continue
			}
			runLines++
			if l["pipeline"] != "orders" || l["ds"] == nil || l["trace_id"] != traceID || l["span_id"] == nil {
				t.Errorf("sluice-%s: run log line without pipeline, ds, trace id %s or span id: %s", name, traceID, line)
			}
		}
		if runLines == 0 {
			t.Errorf("sluice-%s logged nothing about the run", name)
		}
	}
}

func checkLineage(t *testing.T, st *stack, c *event.Completed, posted func() int) {
	t.Helper()
	var events []lineage.RunEvent
	testkit.Eventually(t, 10*time.Second, "the lineage file holds the run's events", func() bool {
		b, _ := os.ReadFile(st.lineage)
		events = events[:0]
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var ev lineage.RunEvent
			if json.Unmarshal(line, &ev) == nil {
				events = append(events, ev)
			}
		}
		return len(events) >= 12 // START and COMPLETE of the run and of five steps
	})
	seen := map[string]lineage.RunEvent{}
	for _, ev := range events {
		seen[ev.Job.Name+" "+ev.EventType] = ev
	}
	for _, job := range []string{"orders", "orders.sensor", "orders.fetcher", "orders.validator", "orders.partitioner", "orders.dbtrunner"} {
		for _, typ := range []string{lineage.Start, lineage.Complete} {
			if _, ok := seen[job+" "+typ]; !ok {
				t.Errorf("no OpenLineage %s event for job %s", typ, job)
			}
		}
	}
	fetch := seen["orders.fetcher "+lineage.Complete]
	if len(fetch.Outputs) != 1 || fetch.Outputs[0].Namespace != "s3://"+st.cfg.S3.Bucket || fetch.Outputs[0].Name != "raw/orders/"+c.DS+".csv" {
		t.Errorf("fetcher outputs %+v", fetch.Outputs)
	}
	if len(fetch.Inputs) != 1 || fetch.Inputs[0].Name != "/data/"+c.DS+".csv" {
		t.Errorf("fetcher inputs %+v", fetch.Inputs)
	}
	dbt := seen["orders.dbtrunner "+lineage.Complete]
	names := []string{}
	for _, d := range dbt.Outputs {
		names = append(names, d.Name)
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".public.orders") }) ||
		!slices.ContainsFunc(names, func(n string) bool { return strings.HasSuffix(n, ".public.stg_orders") }) {
		t.Errorf("dbtrunner outputs %v, want the orders table and the stg_orders model", names)
	}
	run := seen["orders "+lineage.Complete]
	if run.Run.RunID != lineage.RunUUID(c.RunID) || dbt.Run.Facets["parent"] == nil {
		t.Errorf("run event id %s (want %s); step events need a parent facet", run.Run.RunID, lineage.RunUUID(c.RunID))
	}
	testkit.Eventually(t, 10*time.Second, "every lineage event posted", func() bool { return posted() >= len(events) })
}
