package lineage

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-etl/sluice/pkg/event"
)

// OpenLineage event types.
const (
	Start    = "START"
	Complete = "COMPLETE"
	Fail     = "FAIL"
	Abort    = "ABORT"
)

const (
	producer  = "https://github.com/sluice-etl/sluice"
	schemaURL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
)

// RunEvent is an OpenLineage run event (spec 2-0-2).
type RunEvent struct {
	EventType string    `json:"eventType"`
	EventTime time.Time `json:"eventTime"`
	Producer  string    `json:"producer"`
	SchemaURL string    `json:"schemaURL"`
	Run       Run       `json:"run"`
	Job       Job       `json:"job"`
	Inputs    []Dataset `json:"inputs"`
	Outputs   []Dataset `json:"outputs"`
}

// Run is the event's run: a UUID and facets.
type Run struct {
	RunID  string         `json:"runId"`
	Facets map[string]any `json:"facets,omitempty"`
}

// Job is the event's job.
type Job struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Facets    map[string]any `json:"facets,omitempty"`
}

// Emitter sends events in order, in the background, so a slow or missing lineage server never
// holds up a run. Events that cannot be queued or sent are logged and counted, not retried.
type Emitter struct {
	namespace string
	url       string
	file      string
	http      *http.Client
	log       *slog.Logger
	counter   *prometheus.CounterVec
	queue     chan RunEvent
	done      chan struct{}
	mu        sync.RWMutex // guards closed: Emit never sends on a closed queue
	closed    bool
}

// NewEmitter sends events to url (POST, JSON) and/or appends them to file; it returns nil when
// both are empty. namespace is the jobs' namespace; counter (optional) counts events by outcome.
func NewEmitter(namespace, url, file string, log *slog.Logger, counter *prometheus.CounterVec) *Emitter {
	if url == "" && file == "" {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Emitter{namespace: namespace, url: url, file: file, log: log, counter: counter,
		http: &http.Client{Timeout: 10 * time.Second}, queue: make(chan RunEvent, 1024), done: make(chan struct{})}
	go e.loop()
	return e
}

// Namespace is the jobs' namespace.
func (e *Emitter) Namespace() string { return e.namespace }

// Emit queues ev.
func (e *Emitter) Emit(ev RunEvent) {
	if e == nil {
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return
	}
	select {
	case e.queue <- ev:
	default:
		e.count("failed")
		e.log.Warn("lineage event dropped: queue full", "job", ev.Job.Name, "event", ev.EventType)
	}
}

// Close sends what is queued, waiting at most until ctx ends.
func (e *Emitter) Close(ctx context.Context) {
	if e == nil {
		return
	}
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.queue)
	}
	e.mu.Unlock()
	select {
	case <-e.done:
	case <-ctx.Done():
	}
}

func (e *Emitter) loop() {
	defer close(e.done)
	for ev := range e.queue {
		if err := e.send(ev); err != nil {
			e.count("failed")
			e.log.Warn("lineage event not sent", "job", ev.Job.Name, "event", ev.EventType, "err", err)
			continue
		}
		e.count("sent")
	}
}

func (e *Emitter) count(outcome string) {
	if e.counter != nil {
		e.counter.WithLabelValues(outcome).Inc()
	}
}

func (e *Emitter) send(ev RunEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	var errs []error
	if e.file != "" {
		errs = append(errs, appendLine(e.file, b))
	}
	if e.url != "" {
		errs = append(errs, e.post(b))
	}
	return errors.Join(errs...)
}

func appendLine(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	// One write per event: O_APPEND keeps lines whole when replicas share the file.
	_, err = f.Write(append(b, '\n'))
	return errors.Join(err, f.Close())
}

func (e *Emitter) post(b []byte) error {
	req, err := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", e.url, resp.Status)
	}
	return nil
}

// RunUUID is the OpenLineage run id of a sluice run: its ULID's 16 bytes as a UUID, so the two
// convert into each other. An id that is not a ULID is hashed.
func RunUUID(runID string) string {
	if id, err := ulid.ParseStrict(runID); err == nil {
		return uuidString(id[:])
	}
	return hashUUID("run/" + runID)
}

// StepUUID is the OpenLineage run id of one step of a run (a name-based UUID, version 5).
func StepUUID(runID, step string) string { return hashUUID("step/" + runID + "/" + step) }

func hashUUID(name string) string {
	sum := sha1.Sum([]byte(name))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	return uuidString(b)
}

func uuidString(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func facet(schema string, fields map[string]any) map[string]any {
	fields["_producer"] = producer
	fields["_schemaURL"] = schema
	return fields
}

// JobName is a step's job: <pipeline>.<step>; a whole run's job is the pipeline's name.
func JobName(pipeline, step string) string {
	if step == "" {
		return pipeline
	}
	return pipeline + "." + step
}

// Event builds a run event for the run r: of one step, or of the whole run when step is "".
// errMsg goes in an errorMessage facet (FAIL).
func (e *Emitter) Event(eventType string, at time.Time, r *event.Run, step string, inputs, outputs []Dataset, errMsg string) RunEvent {
	ev := RunEvent{EventType: eventType, EventTime: at.UTC(), Producer: producer, SchemaURL: schemaURL,
		Job: Job{Namespace: e.namespace, Name: JobName(r.Pipeline, step), Facets: map[string]any{
			"jobType": facet("https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
				map[string]any{"processingType": "BATCH", "integration": "SLUICE", "jobType": jobType(step)}),
		}},
		Run:    Run{RunID: RunUUID(r.RunID), Facets: map[string]any{}},
		Inputs: orEmpty(inputs), Outputs: orEmpty(outputs),
	}
	if step != "" {
		ev.Run.RunID = StepUUID(r.RunID, step)
		ev.Run.Facets["parent"] = facet("https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet",
			map[string]any{"run": map[string]any{"runId": RunUUID(r.RunID)}, "job": map[string]any{"namespace": e.namespace, "name": r.Pipeline}})
	}
	ev.Run.Facets["sluice"] = facet("https://github.com/sluice-etl/sluice/blob/main/docs/observability.md#openlineage",
		map[string]any{"runId": r.RunID, "pipeline": r.Pipeline, "ds": r.DS, "trigger": r.Trigger})
	if errMsg != "" {
		ev.Run.Facets["errorMessage"] = facet("https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
			map[string]any{"message": errMsg, "programmingLanguage": "GO"})
	}
	return ev
}

func jobType(step string) string {
	if step == "" {
		return "DAG"
	}
	return "TASK"
}

func orEmpty(ds []Dataset) []Dataset {
	if ds == nil {
		return []Dataset{}
	}
	return ds
}
