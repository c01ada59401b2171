package sensor_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/sensor"
)

func f(v float64) *float64 { return &v }

func TestNextWait(t *testing.T) {
	s := func(mod func(*config.Sensor)) config.Sensor {
		c := config.Sensor{PokeInterval: time.Second, Timeout: time.Hour, Backoff: 1, MaxInterval: time.Second, Jitter: f(0)}
		mod(&c)
		return c
	}
	fixed := s(func(*config.Sensor) {})
	backoff := s(func(c *config.Sensor) { c.Backoff, c.MaxInterval, c.Timeout = 2, 10*time.Second, 48*time.Hour })
	jitter := s(func(c *config.Sensor) { c.Jitter = f(0.2) })
	short := s(func(c *config.Sensor) { c.Timeout = 5 * time.Second })
	for _, tc := range []struct {
		name   string
		s      config.Sensor
		waited time.Duration
		r      float64
		want   time.Duration
	}{
		{"fixed interval at start", fixed, 0, 0, time.Second},
		{"fixed interval later", fixed, 30 * time.Minute, 0.9, time.Second},
		// Waits 1s, 2s, 4s, 8s: each is poke + (f-1)·waited for waited 0, 1, 3, 7.
		{"backoff first wait", backoff, 0, 0, time.Second},
		{"backoff second wait", backoff, time.Second, 0, 2 * time.Second},
		{"backoff third wait", backoff, 3 * time.Second, 0, 4 * time.Second},
		{"backoff fourth wait", backoff, 7 * time.Second, 0, 8 * time.Second},
		{"backoff capped", backoff, 15 * time.Second, 0, 10 * time.Second},
		{"backoff capped after a day", backoff, 24 * time.Hour, 0, 10 * time.Second},
		{"jitter never lengthens", jitter, 0, 0, time.Second},
		{"jitter shortens by at most its share", jitter, 0, 0.999999, 800*time.Millisecond + 200*time.Nanosecond},
		{"jitter half", jitter, 0, 0.5, 900 * time.Millisecond},
		{"ends at the timeout", short, 4500 * time.Millisecond, 0, 500 * time.Millisecond},
		{"never a busy loop", short, 5*time.Second - time.Millisecond, 0, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sensor.NextWait(tc.s, tc.waited, tc.r); got != tc.want {
				t.Errorf("NextWait(waited %s, r %v) = %s, want %s", tc.waited, tc.r, got, tc.want)
			}
		})
	}
}

func TestReady(t *testing.T) {
	def := config.Sensor{}
	custom := config.Sensor{ReadyStatus: []int{202, 304}}
	for _, tc := range []struct {
		s      config.Sensor
		status int
		want   bool
	}{
		{def, 200, true}, {def, 204, true}, {def, 299, true}, {def, 304, false}, {def, 404, false}, {def, 500, false},
		{custom, 202, true}, {custom, 304, true}, {custom, 200, false}, {custom, 404, false},
	} {
		if got := sensor.Ready(tc.s, tc.status); got != tc.want {
			t.Errorf("Ready(%v, %d) = %v, want %v", tc.s.ReadyStatus, tc.status, got, tc.want)
		}
	}
}

func pipeline(name, url, sensorYAML, leaseYAML string) string {
	return fmt.Sprintf(`  - name: %s
    source:
      url: %s/data/{ds}.csv
      method: GET
    sensor:
%s
    lease:
%s
`, name, url, sensorYAML, leaseYAML)
}

func TestPokesUntilReadyWithTheConfiguredMethodAndStatus(t *testing.T) {
	src := newSource(t)
	e := startSensor(t, pipeline("orders", src.URL,
		"      poke_interval: 50ms\n      ready_status: [202]", "      ttl: 5s"), nil)
	run := e.request(t, "orders", "2026-11-24")
	testkit.Eventually(t, 10*time.Second, "two pokes", func() bool { return src.count("2026-11-24") >= 2 })
	// 200 is not in ready_status: still waiting.
	src.set("2026-11-24", http.StatusOK)
	n := src.count("2026-11-24")
	testkit.Eventually(t, 10*time.Second, "two more pokes", func() bool { return src.count("2026-11-24") >= n+2 })
	if len(e.find(run, event.KindAvailable)) > 0 {
		t.Fatal("200 is not a ready status for this pipeline, yet the run became available")
	}
	if rec := e.state(t, "orders", "2026-11-24", run); rec.State != runstate.Waiting && rec.State != runstate.Running {
		t.Errorf("run state %s, want waiting", rec.State)
	}
	src.set("2026-11-24", http.StatusAccepted)
	av := e.await(t, run, event.KindAvailable, 10*time.Second).(*event.Available)
	if av.Fence == 0 || av.Pokes < 5 {
		t.Errorf("available: fence %d, pokes %d; want a fencing token and at least 5 pokes", av.Fence, av.Pokes)
	}
	h, held, err := e.stack.Router.Leases().Get(context.Background(), "orders")
	if err != nil || !held || h.RunID != run || h.Fence != av.Fence {
		t.Errorf("lease = %+v (held %v, err %v), want held by %s with the event's token", h, held, err, run)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if !src.methods["GET"] || src.methods["HEAD"] {
		t.Errorf("source saw methods %v, want only GET", src.methods)
	}
}

func TestTimeoutFailsTheRun(t *testing.T) {
	src := newSource(t)
	e := startSensor(t, pipeline("orders", src.URL, "      poke_interval: 50ms\n      timeout: 300ms", "      ttl: 5s"), nil)
	run := e.request(t, "orders", "2026-11-24")
	fl := e.await(t, run, event.KindFailed, 10*time.Second).(*event.Failed)
	if fl.Step != "sensor" || fl.Class != "permanent" {
		t.Errorf("failed event %+v, want a permanent sensor failure", fl)
	}
	if _, held, _ := e.stack.Router.Leases().Get(context.Background(), "orders"); held {
		t.Error("a failed run kept the lease")
	}
}

func TestSoftFailSkipsTheRunAndFreesTheLease(t *testing.T) {
	src := newSource(t)
	e := startSensor(t, pipeline("orders", src.URL,
		"      poke_interval: 50ms\n      timeout: 300ms\n      soft_fail: true", "      ttl: 1m"), nil)
	run := e.request(t, "orders", "2026-11-24")
	testkit.Eventually(t, 10*time.Second, "the run is skipped", func() bool {
		return e.state(t, "orders", "2026-11-24", run).State == runstate.Skipped
	})
	if rec := e.state(t, "orders", "2026-11-24", run); rec.Detail == "" {
		t.Error("skipped run records no reason")
	}
	// The lease (ttl 1m) is free at once: the next run proceeds without waiting for it.
	src.set("2026-11-25", http.StatusOK)
	next := e.request(t, "orders", "2026-11-25")
	e.await(t, next, event.KindAvailable, 10*time.Second)
	if n := e.count(event.KindFailed); n != 0 {
		t.Errorf("%d failed events, want none: soft_fail skips", n)
	}
}

func TestBusyLeaseQueuesOrSkips(t *testing.T) {
	src := newSource(t)
	e := startSensor(t, pipeline("queued", src.URL, "      poke_interval: 50ms", "      ttl: 5s\n      on_busy: queue")+
		pipeline("skipping", src.URL, "      poke_interval: 50ms", "      ttl: 5s\n      on_busy: skip"), nil)
	ctx := context.Background()
	leases := e.stack.Router.Leases()
	for _, p := range []string{"queued", "skipping"} {
		if _, err := leases.Acquire(ctx, p, "01JQHOLDER0000000000000000", "2026-11-01", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	src.set("2026-11-24", http.StatusOK)
	queued, skipped := e.request(t, "queued", "2026-11-24"), e.request(t, "skipping", "2026-11-24")
	testkit.Eventually(t, 10*time.Second, "the skip-policy run is skipped", func() bool {
		return e.state(t, "skipping", "2026-11-24", skipped).State == runstate.Skipped
	})
	testkit.Eventually(t, 10*time.Second, "the queue-policy run is queued", func() bool {
		rec := e.state(t, "queued", "2026-11-24", queued)
		return rec.State == runstate.Queued && rec.Attempts >= 2
	})
	if src.count("2026-11-24") != 0 {
		t.Error("a run without the lease poked the source")
	}
	if err := leases.Release(ctx, "queued", "01JQHOLDER0000000000000000"); err != nil {
		t.Fatal(err)
	}
	e.await(t, queued, event.KindAvailable, 10*time.Second)
	if len(e.find(skipped, event.KindAvailable)) != 0 {
		t.Error("the skipped run went on")
	}
}
