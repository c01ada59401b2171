package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/services/sensor"
)

// hopsResult holds, per run, the time from a message's storing in the stream to the start of
// the handler that consumes it.
type hopsResult struct {
	toSensor  []time.Duration // requested → sensor handler
	toFetcher []time.Duration // available → next service's handler (a fetcher that does nothing)
	raw       []time.Duration // baseline: JetStream publish → a pull consumer's Next returns
}

// measureHops runs n runs one after another through two stacks on one broker, as separate
// services would: the real sensor (against a source that answers 200 at once) and a stand-in
// fetcher whose handler only notes when it started and frees the lease for the next run.
func measureHops(ctx context.Context, dir string, n int) (*hopsResult, error) {
	b, err := startBroker(dir + "/nats-hops")
	if err != nil {
		return nil, err
	}
	defer b.close()
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer src.Close()
	cfg, err := config.Parse("hops.yaml", []byte(configHead+fmt.Sprintf(`  - name: hop
    source:
      url: %s/{ds}.csv
    sensor:
      poke_interval: 1s
    lease:
      ttl: 10s
`, src.URL)))
	if err != nil {
		return nil, err
	}
	if err := cfg.Resolve(func(string) (string, bool) { return "postgres://unused.invalid/db", true }); err != nil {
		return nil, err
	}

	var mu sync.Mutex
	started := map[string]time.Time{}
	done := make(chan string, 1)
	note := func(kind event.Kind, run string) {
		now := time.Now()
		mu.Lock()
		started[string(kind)+run] = now
		mu.Unlock()
	}
	sensorSvc := app.Service{Name: "sensor", Routes: func(_ context.Context, d *app.Deps) ([]flow.Route, error) {
		s := sensor.New(&http.Client{Timeout: 10 * time.Second}, d.Router.Leases())
		rt := flow.On("sensor", func(ctx context.Context, p *config.Pipeline, in *event.Requested) (*event.Available, error) {
			note(event.KindRequested, in.RunID)
			return s.Handle(ctx, p, in)
		})
		rt.Workers = 8
		return []flow.Route{rt}, nil
	}}
	fetcherSvc := app.Service{Name: "fetcher", Routes: func(_ context.Context, d *app.Deps) ([]flow.Route, error) {
		return []flow.Route{{Step: "fetcher", Consumes: event.KindAvailable, Workers: 4,
			Handle: func(ctx context.Context, p *config.Pipeline, in event.Event) (event.Event, error) {
				run := in.Header().RunID
				note(event.KindAvailable, run)
				if err := d.Router.Leases().Release(ctx, p.Name, run); err != nil {
					return nil, err
				}
				done <- run
				return nil, nil
			}}}, nil
	}}
	log := telemetry.Logger(io.Discard, slog.LevelWarn)
	if os.Getenv("BENCH_VERBOSE") != "" {
		log = telemetry.Logger(os.Stderr, slog.LevelInfo)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var stacks []*app.Stack
	for _, svc := range []app.Service{sensorSvc, fetcherSvc} {
		st, err := app.Start(sctx, cfg, log, app.Options{NATSURL: b.ns.ClientURL(), Provision: true}, svc)
		if err != nil {
			return nil, err
		}
		stacks = append(stacks, st)
	}
	defer func() {
		stop()
		for _, st := range stacks {
			_ = st.Wait()
		}
	}()

	res := &hopsResult{}
	// Warm up connections and code paths; not measured.
	for i := 0; i < n+20; i++ {
		ds := dsOf(i)
		runID, err := b.request(ctx, "hop", ds)
		if err != nil {
			return nil, err
		}
		select {
		case got := <-done:
			if got != runID {
				return nil, fmt.Errorf("hop run %s finished while %s was expected", got, runID)
			}
		case <-time.After(30 * time.Second):
			return nil, fmt.Errorf("hop run %d (%s) did not reach the fetcher", i, ds)
		}
		if i < 20 {
			continue
		}
		mu.Lock()
		sensorStart, fetcherStart := started[string(event.KindRequested)+runID], started[string(event.KindAvailable)+runID]
		mu.Unlock()
		reqAt, _, err := b.storedAt(ctx, "hop", event.KindRequested, ds)
		if err != nil {
			return nil, err
		}
		avAt, _, err := b.storedAt(ctx, "hop", event.KindAvailable, ds)
		if err != nil {
			return nil, err
		}
		res.toSensor = append(res.toSensor, sensorStart.Sub(reqAt))
		res.toFetcher = append(res.toFetcher, fetcherStart.Sub(avAt))
	}

	// Baseline: the same broker and a durable pull consumer like the router's, one message at a
	// time, without decoding, run state, lease or trace.
	cons, err := b.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "rawbench",
		FilterSubject: prefix + ".raw.bench.*", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		return nil, err
	}
	for i := 0; i < n+20; i++ {
		got := make(chan time.Time, 1)
		go func() {
			msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			if err != nil {
				close(got)
				return
			}
			got <- time.Now()
			_ = msg.Ack()
		}()
		time.Sleep(time.Millisecond) // the pull request is at the server, as the router's idle workers' are
		ack, err := b.js.Publish(ctx, prefix+".raw.bench."+strconv.Itoa(i), []byte(`{}`))
		if err != nil {
			return nil, err
		}
		at, ok := <-got
		if !ok {
			return nil, fmt.Errorf("raw baseline message %d not received", i)
		}
		if i < 20 {
			continue
		}
		st, err := b.js.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		m, err := st.GetMsg(ctx, ack.Sequence)
		if err != nil {
			return nil, err
		}
		res.raw = append(res.raw, at.Sub(m.Time))
	}
	return res, nil
}
