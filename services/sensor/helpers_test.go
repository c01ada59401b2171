package sensor_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
	"github.com/sluice-etl/sluice/services/sensor"
)

// source is a real HTTP source whose answer per ds the test sets; it records every poke.
type source struct {
	*httptest.Server
	mu      sync.Mutex
	status  map[string]int
	pokes   map[string][]time.Time
	methods map[string]bool
}

func newSource(t *testing.T) *source {
	t.Helper()
	s := &source{status: map[string]int{}, pokes: map[string][]time.Time{}, methods: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ds := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/data/"), ".csv")
		s.mu.Lock()
		s.pokes[ds] = append(s.pokes[ds], time.Now())
		s.methods[r.Method] = true
		code := s.status[ds]
		s.mu.Unlock()
		if code == 0 {
			code = http.StatusNotFound
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *source) set(ds string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[ds] = code
}

func (s *source) count(ds string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pokes[ds])
}

// env is one sensor service on an embedded JetStream server, with every event recorded.
type env struct {
	stack  *app.Stack
	js     jetstream.JetStream
	cfg    *config.Config
	mu     sync.Mutex
	events []event.Event
	logs   *bytes.Buffer
}

// pipelineYAML is one pipeline's config; %s is the source URL, then the sensor and lease lines.
const configHead = `nats:
  url: env:NATS_URL
postgres:
  url: env:PG_URL
s3:
  bucket: unused
pipelines:
`

// startSensor runs the sensor service with the given pipelines (YAML list items).
func startSensor(t *testing.T, pipelines string, env_ map[string]string) *env {
	t.Helper()
	ns := testkit.NATS(t)
	vars := map[string]string{"NATS_URL": ns.ClientURL(), "PG_URL": "postgres://unused"}
	for k, v := range env_ {
		vars[k] = v
	}
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(configHead+pipelines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cfg: cfg, logs: &bytes.Buffer{}}
	nc, js := testkit.Connect(t, ns)
	e.js = js
	var logMu sync.Mutex
	log := telemetry.Logger(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return e.logs.Write(p)
	}), slog.LevelDebug)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := app.Start(ctx, cfg, log, app.Options{HTTPAddr: "127.0.0.1:0", Provision: true}, sensor.Service)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.stack = st
	if _, err := nc.Subscribe("etl.>", func(m *nats.Msg) {
		k := event.Kind(strings.Split(m.Subject, ".")[2])
		ev, err := event.Decode(k, m.Data)
		if err != nil {
			t.Errorf("event on %s does not match its schema: %v", m.Subject, err)
			return
		}
		e.mu.Lock()
		e.events = append(e.events, ev)
		e.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = st.Wait()
		if t.Failed() {
			logMu.Lock()
			t.Logf("sensor logs:\n%s", e.logs.String())
			logMu.Unlock()
		}
	})
	return e
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (e *env) request(t *testing.T, pipeline, ds string) string {
	t.Helper()
	res, err := trigger.RequestRun(context.Background(), e.js, e.stack.Tracer, app.BusOptions(e.stack.Config), pipeline, ds, "test")
	if err != nil {
		t.Fatal(err)
	}
	return res.RunID
}

func (e *env) find(runID string, k event.Kind) []event.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []event.Event
	for _, ev := range e.events {
		if ev.Header().RunID == runID && ev.Kind() == k {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) count(k event.Kind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if ev.Kind() == k {
			n++
		}
	}
	return n
}

// await polls until the run has an event of kind k.
func (e *env) await(t *testing.T, runID string, k event.Kind, within time.Duration) event.Event {
	t.Helper()
	var got event.Event
	testkit.Eventually(t, within, fmt.Sprintf("run %s publishes %s", runID, k), func() bool {
		if evs := e.find(runID, k); len(evs) > 0 {
			got = evs[0]
			return true
		}
		return false
	})
	return got
}

func (e *env) state(t *testing.T, pipeline, ds, runID string) runstate.Record {
	t.Helper()
	rec, err := e.stack.Router.Runs().Get(context.Background(), pipeline, ds, runID)
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	return rec
}
