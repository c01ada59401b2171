package flow_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/metrics"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

// syncBuffer is a log sink the router's workers may write to concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(substr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// Crafted events are refused with one line each, before anything is recorded: no run state, no
// lease, no handler call, no per-pipeline series; only the refused counter (labelled by step)
// moves.
func TestCraftedEventsAreRefusedAndChangeNothing(t *testing.T) {
	ctx := context.Background()
	_, js := testkit.Connect(t, testkit.NATS(t))
	opts := bus.Options{Stream: "T", SubjectPrefix: "etl"}
	if err := bus.Provision(ctx, js, opts); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	p := config.Pipeline{Name: "orders", Lease: config.Lease{TTL: time.Minute}, Landing: config.Landing{Key: "raw/{pipeline}/{ds}.csv"}}
	r, err := flow.NewRouter(ctx, js, opts, []config.Pipeline{p}, telemetry.TracerProvider("test"), telemetry.Logger(logs, 0), flow.WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	handle := func(context.Context, *config.Pipeline, event.Event) (event.Event, error) {
		calls.Add(1)
		return nil, nil
	}
	claims := func(p *config.Pipeline, in event.Event) error {
		if key := in.(*event.Landed).Object.Key; key != config.Expand(p.Landing.Key, p.Name, in.Header().DS, "") {
			return fmt.Errorf("object %s is not the pipeline's landing key", key)
		}
		return nil
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		_ = r.Run(runCtx,
			flow.Route{Step: "sensor", Consumes: event.KindRequested, Handle: handle},
			flow.Route{Step: "validator", Consumes: event.KindLanded, Handle: handle, Claims: claims},
			flow.Route{Step: "alerter", Consumes: event.KindFailed, Handle: handle})
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	before := snapshot(t, reg)

	now := time.Now().UTC().Format(time.RFC3339Nano)
	run := func(pipeline string, fence string) string {
		return fmt.Sprintf(`"run_id":%q,"pipeline":%q,"ds":"2026-11-25","requested_at":%q%s`, ulid.Make().String(), pipeline, now, fence)
	}
	obj := func(key string) string {
		return fmt.Sprintf(`"object":{"bucket":"landing","key":%q,"size":3,"sha256":%q,"source_url":"http://source/x.csv"}`, key, strings.Repeat("a", 64))
	}
	crafted := []struct {
		name, subject, data, why string
	}{
		{"unknown pipeline", "etl.ghost.requested.2026-11-25", "{" + run("ghost", "") + "}", `ghost 2026-11-25 sensor: refused requested event`},
		{"unknown pipeline, failed", "etl.ghost.failed.2026-11-25", "{" + run("ghost", "") + `,"step":"fetcher","attempts":1,"class":"permanent","error":"x"}`, `ghost 2026-11-25 alerter: refused failed event`},
		{"another pipeline's subject", "etl.orders.requested.2026-11-25", "{" + run("payments", "") + "}", `payments 2026-11-25 sensor: refused requested event`},
		{"subject of another date", "etl.orders.requested.2026-11-24", "{" + run("orders", "") + "}", "published on etl.orders.requested.2026-11-24, but the event is for etl.orders.requested.2026-11-25"},
		{"fence 0", "etl.orders.landed.2026-11-25", "{" + run("orders", `,"fence":0`) + "," + obj("raw/orders/2026-11-25.csv") + "}", "at '/fence': minimum: got 0, want 1"},
		{"no fence", "etl.orders.landed.2026-11-25", "{" + run("orders", "") + "," + obj("raw/orders/2026-11-25.csv") + "}", "missing property 'fence'"},
		{"foreign key", "etl.orders.landed.2026-11-25", "{" + run("orders", `,"fence":9`) + "," + obj("raw/payments/2026-11-25.csv") + "}", "object raw/payments/2026-11-25.csv is not the pipeline's landing key"},
	}
	for _, c := range crafted {
		if _, err := js.Publish(ctx, c.subject, []byte(c.data)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "every crafted event refused", func() bool { return len(logs.lines("refused")) >= len(crafted) })
	time.Sleep(200 * time.Millisecond) // let anything that would follow a refusal happen
	refused := logs.lines("refused")
	if len(refused) != len(crafted) {
		t.Fatalf("%d refusal lines for %d crafted events:\n%s", len(refused), len(crafted), strings.Join(refused, "\n"))
	}
	for _, c := range crafted {
		found := false
		for _, l := range refused {
			found = found || strings.Contains(l, c.why)
		}
		if !found {
			t.Errorf("%s: no refusal line says %q:\n%s", c.name, c.why, strings.Join(refused, "\n"))
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("a handler saw %d crafted events", n)
	}
	for _, bucket := range []string{bus.RunBucket, bus.LeaseBucket} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		if keys, err := kv.Keys(ctx); !errors.Is(err, jetstream.ErrNoKeysFound) {
			t.Fatalf("%s holds %v (%v) after crafted events", bucket, keys, err)
		}
	}
	// No failed event was published for any of them (the stream holds only the crafted ones).
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := st.Info(ctx); info.State.Msgs != uint64(len(crafted)) {
		t.Fatalf("stream holds %d messages, want the %d crafted ones", info.State.Msgs, len(crafted))
	}
	after := snapshot(t, reg)
	for series, v := range after {
		if strings.HasPrefix(series, "sluice_events_refused_total") {
			continue
		}
		if before[series] != v {
			t.Errorf("%s changed: %v -> %v", series, before[series], v)
		}
	}
	refusedTotal := 0.0
	for series, v := range after {
		if strings.HasPrefix(series, "sluice_events_refused_total") {
			refusedTotal += v
		}
	}
	if refusedTotal != float64(len(crafted)) {
		t.Fatalf("sluice_events_refused_total = %v, want %d", refusedTotal, len(crafted))
	}
}

// snapshot is every series of reg with its value (a histogram's sample count).
func snapshot(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + labelString(m.GetLabel())
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "{%s=%s}", l.GetName(), l.GetValue())
	}
	return b.String()
}

// A step that hangs (a statement or request that never answers) is cancelled at its deadline
// and retried; when it hangs every time the run fails once, as a timeout.
func TestStepDeadlineCancelsAndRetriesAHungStep(t *testing.T) {
	for _, always := range []bool{false, true} {
		h := newHarness(t, 1)
		var calls atomic.Int32
		h.run(t, flow.Route{Step: "fetcher", Consumes: event.KindRequested, Handle: func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
			if calls.Add(1) == 1 || always {
				<-ctx.Done() // hangs until cancelled, as a silent server does
				return nil, fmt.Errorf("read: %w", ctx.Err())
			}
			return toAvailable(ctx, p, in)
		}})
		req := request(t, h.js, h.tp, "deadline", "2026-11-25")
		if !always {
			if _, e := h.next(t, event.KindAvailable); e.Header().RunID != req.RunID || calls.Load() != 2 {
				t.Fatalf("available after %d calls", calls.Load())
			}
			continue
		}
		_, e := h.next(t, event.KindFailed)
		if f := e.(*event.Failed); f.Class != "timeout" || f.Attempts != 2 || !strings.Contains(f.Error, "fetcher took longer than 300ms and was cancelled") {
			t.Fatalf("failed = %+v", f)
		}
	}
}
