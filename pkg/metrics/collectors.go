package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

var consumerNames = []string{"sluice_consumer_pending_messages", "sluice_consumer_ack_pending_messages", "sluice_consumer_redelivered_messages"}

// ConsumerCollector reports, on every scrape, the broker's view of durable consumers: messages
// not yet delivered (pending: the lag), delivered but not acknowledged (ack-pending: in flight
// or waiting for a redelivery, as a deferrable wait is) and redelivered.
type ConsumerCollector struct {
	js        jetstream.JetStream
	stream    string
	consumers []string
	pending   *prometheus.Desc
	ackPend   *prometheus.Desc
	redeliv   *prometheus.Desc
}

// NewConsumerCollector reports the named durable consumers of stream.
func NewConsumerCollector(js jetstream.JetStream, stream string, consumers []string) *ConsumerCollector {
	labels := []string{"stream", "consumer"}
	return &ConsumerCollector{js: js, stream: stream, consumers: consumers,
		pending: prometheus.NewDesc(consumerNames[0], "Messages of the consumer's subjects not yet delivered (consumer lag).", labels, nil),
		ackPend: prometheus.NewDesc(consumerNames[1], "Messages delivered but not yet acknowledged: in flight, or waiting to be redelivered.", labels, nil),
		redeliv: prometheus.NewDesc(consumerNames[2], "Messages delivered more than once and not yet acknowledged.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ConsumerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPend
	ch <- c.redeliv
}

// Collect asks the broker for each consumer's state; a consumer it cannot read is left out.
func (c *ConsumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for _, name := range c.consumers {
		cons, err := c.js.Consumer(ctx, c.stream, name)
		if err != nil {
			continue
		}
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), c.stream, name)
		ch <- prometheus.MustNewConstMetric(c.ackPend, prometheus.GaugeValue, float64(info.NumAckPending), c.stream, name)
		ch <- prometheus.MustNewConstMetric(c.redeliv, prometheus.GaugeValue, float64(info.NumRedelivered), c.stream, name)
	}
}

var runNames = []string{"sluice_runs", "sluice_last_success_timestamp_seconds"}

// RunsCollector follows the run-state bucket and reports how many runs are in each state per
// pipeline (waiting runs are state="waiting") and when each pipeline last completed a run. It
// reads the bucket, not this process's own work, so every replica reports the same numbers.
type RunsCollector struct {
	mu        sync.Mutex
	pipelines []string
	runs      map[string]runEntry // by run key
	success   map[string]time.Time
	state     *prometheus.Desc
	last      *prometheus.Desc
}

type runEntry struct {
	pipeline string
	state    runstate.State
}

var allStates = []runstate.State{runstate.Queued, runstate.Waiting, runstate.Running, runstate.Retrying, runstate.Completed, runstate.Failed, runstate.Skipped}

// WatchRuns starts following the run-state bucket until ctx ends. pipelines get series at zero
// before they have runs.
func WatchRuns(ctx context.Context, js jetstream.JetStream, pipelines []string, log *slog.Logger) (*RunsCollector, error) {
	kv, err := bus.KeyValue(ctx, js, bus.RunBucket)
	if err != nil {
		return nil, fmt.Errorf("run state bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch run state: %w", err)
	}
	c := &RunsCollector{pipelines: pipelines, runs: map[string]runEntry{}, success: map[string]time.Time{},
		state: prometheus.NewDesc(runNames[0], "Runs per state (queued, waiting, running, retrying, completed, failed, skipped), from the run-state bucket.", []string{"pipeline", "state"}, nil),
		last:  prometheus.NewDesc(runNames[1], "When the pipeline's most recent completed run finished (Unix seconds).", []string{"pipeline"}, nil),
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					if ctx.Err() == nil {
						log.Warn("run state watch ended; sluice_runs stops updating")
					}
					return
				}
				if e != nil {
					c.apply(e)
				}
			}
		}
	}()
	return c, nil
}

func (c *RunsCollector) apply(e jetstream.KeyValueEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(c.runs, e.Key())
		return
	}
	var rec runstate.Record
	if json.Unmarshal(e.Value(), &rec) != nil {
		return
	}
	c.runs[e.Key()] = runEntry{pipeline: rec.Pipeline, state: rec.State}
	if rec.State == runstate.Completed && rec.UpdatedAt.After(c.success[rec.Pipeline]) {
		c.success[rec.Pipeline] = rec.UpdatedAt
	}
}

// Describe implements prometheus.Collector.
func (c *RunsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.last
}

// Collect implements prometheus.Collector.
func (c *RunsCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := map[[2]string]int{}
	for _, p := range c.pipelines {
		for _, s := range allStates {
			counts[[2]string{p, string(s)}] = 0
		}
	}
	for _, r := range c.runs {
		counts[[2]string{r.pipeline, string(r.state)}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for p, t := range c.success {
		ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, float64(t.UnixNano())/1e9, p)
	}
}
