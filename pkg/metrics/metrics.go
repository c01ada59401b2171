// Package metrics defines every Prometheus series sluice exports, on a registry the caller
// injects (never the global one): step durations and outcomes, pokes, retries, lease contention,
// rows and bytes moved, finished runs, SLA misses, alerts, lineage events, and collectors that
// read the broker on scrape (consumer pending and ack-pending counts) or follow the run-state
// bucket (runs per state, the last successful run). docs/observability.md lists them.
package metrics

import (
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// Step outcomes (label outcome of the step series).
const (
	OutcomeOK     = "ok"     // the next event was published
	OutcomeWait   = "wait"   // a deferrable wait: source not ready, lease busy
	OutcomeRetry  = "retry"  // a transient failure that will be retried
	OutcomeFailed = "failed" // the run failed at this step
	OutcomeSkip   = "skip"   // the run was dropped (lease busy, on_busy: skip)
)

// StepOutcomes lists the step outcomes, to initialise series at zero.
var StepOutcomes = []string{OutcomeOK, OutcomeWait, OutcomeRetry, OutcomeFailed, OutcomeSkip}

// Run outcomes (label outcome of the run series).
const (
	RunCompleted = "completed"
	RunFailed    = "failed"
	RunSkipped   = "skipped"
)

// Metrics holds sluice's series. Create it once per registry with New.
type Metrics struct {
	// StepDuration is how long one delivery of a step took, by outcome.
	StepDuration *prometheus.HistogramVec
	// StepOutcomes counts deliveries of a step by outcome.
	StepOutcomes *prometheus.CounterVec
	// Pokes counts the sensor's checks of the source: result ready, not_ready or failed.
	Pokes *prometheus.CounterVec
	// Retries counts transient failures that were retried.
	Retries *prometheus.CounterVec
	// LeaseContention counts deliveries that found the pipeline's lease held by another run.
	LeaseContention *prometheus.CounterVec
	// LeaseLost counts steps that found their run's lease lost (the run fails as fenced).
	LeaseLost *prometheus.CounterVec
	// Rows counts rows moved: kind staged or quarantined (validator), inserted, updated, unchanged (dbt).
	Rows *prometheus.CounterVec
	// Bytes counts bytes landed from sources into object storage.
	Bytes *prometheus.CounterVec
	// RunsFinished counts runs by outcome; counted once per run by the consumer of the run's
	// final event (the alerter), or where a run is skipped.
	RunsFinished *prometheus.CounterVec
	// RunDuration is the time from a run's request to its final event.
	RunDuration *prometheus.HistogramVec
	// RunFailures counts failed runs by the step that failed and the failure class.
	RunFailures *prometheus.CounterVec
	// SLAMisses counts sla_missed events.
	SLAMisses *prometheus.CounterVec
	// Alerts counts alert deliveries by channel and outcome (sent, failed, duplicate).
	Alerts *prometheus.CounterVec
	// LineageEvents counts OpenLineage events by outcome (sent, failed).
	LineageEvents *prometheus.CounterVec
	// EventsRefused counts events a step refused: malformed, or claiming what the config does
	// not say (an unknown pipeline, a foreign URL or key, no fencing token). Labelled by step
	// only, so crafted events cannot add series.
	EventsRefused *prometheus.CounterVec
	// WebhookRequests counts the sensor's webhook pushes by pipeline and outcome (available,
	// requested, marked, or why rejected).
	WebhookRequests *prometheus.CounterVec

	names []string
}

// Buckets for step and run durations: from a 10 ms poke to a multi-hour wait for data.
var durationBuckets = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400}

// New creates the series and registers them on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{}
	var cs []prometheus.Collector
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		cs, m.names = append(cs, c), append(m.names, name)
		return c
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets}, labels)
		cs, m.names = append(cs, h), append(m.names, name)
		return h
	}
	m.StepDuration = histogram("sluice_step_duration_seconds", "Time one delivery of a step took, by outcome.", "pipeline", "step", "outcome")
	m.StepOutcomes = counter("sluice_step_outcomes_total", "Deliveries of a step by outcome (ok, wait, retry, failed, skip).", "pipeline", "step", "outcome")
	m.Pokes = counter("sluice_sensor_pokes_total", "Source checks by the sensor, by result (ready, not_ready, failed).", "pipeline", "result")
	m.Retries = counter("sluice_step_retries_total", "Transient step failures that were retried.", "pipeline", "step")
	m.LeaseContention = counter("sluice_lease_contention_total", "Deliveries that found the pipeline's lease held by another run.", "pipeline")
	m.LeaseLost = counter("sluice_lease_lost_total", "Steps that found their run's lease lost (the run fails as fenced).", "pipeline", "step")
	m.Rows = counter("sluice_rows_total", "Rows moved: kind staged or quarantined (validator), inserted, updated, unchanged (dbt upsert).", "pipeline", "step", "kind")
	m.Bytes = counter("sluice_bytes_total", "Bytes landed from sources into object storage.", "pipeline", "step")
	m.RunsFinished = counter("sluice_runs_finished_total", "Finished runs by outcome (completed, failed, skipped).", "pipeline", "outcome")
	m.RunDuration = histogram("sluice_run_duration_seconds", "Time from a run's request to its final event.", "pipeline", "outcome")
	m.RunFailures = counter("sluice_run_failures_total", "Failed runs by failing step and class (permanent, transient, fenced).", "pipeline", "step", "class")
	m.SLAMisses = counter("sluice_sla_misses_total", "Runs whose SLA deadline passed before they finished.", "pipeline")
	m.Alerts = counter("sluice_alerts_total", "Alert deliveries by channel and outcome (sent, failed, duplicate).", "pipeline", "channel", "outcome")
	m.LineageEvents = counter("sluice_lineage_events_total", "OpenLineage events by outcome (sent, failed).", "outcome")
	m.EventsRefused = counter("sluice_events_refused_total", "Events a step refused: malformed, or claiming what the config does not say.", "step")
	m.WebhookRequests = counter("sluice_webhook_requests_total", "Webhook pushes by pipeline and outcome (available, requested, marked, or why rejected).", "pipeline", "outcome")
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// Names returns the metric names New registers, and those of the collectors in this package.
func (m *Metrics) Names() []string {
	out := append(append([]string(nil), m.names...), consumerNames...)
	out = append(out, runNames...)
	sort.Strings(out)
	return out
}
