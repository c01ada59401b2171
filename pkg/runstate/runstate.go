// Package runstate keeps each run's state (queued, waiting, running a step, retrying, completed,
// failed, skipped) with its attempts, timings and error in a JetStream KV bucket, so `sluice
// status` can show every run without asking any service. A run's state only moves forward: each
// record carries its stage in the flow, and a write for an earlier stage (a step that reports
// after the next step has started) is dropped, compare-and-set on the KV revision.
package runstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
)

// State is where a run is.
type State string

const (
	// Queued: requested and not yet taken by the sensor, or waiting behind another run's lease.
	Queued State = "queued"
	// Waiting: the sensor holds the lease and waits for the source's file.
	Waiting State = "waiting"
	// Running: a step works on the run (Step names it).
	Running State = "running"
	// Retrying: a step failed transiently; it runs again at NextAttempt.
	Retrying  State = "retrying"
	Completed State = "completed"
	Failed    State = "failed"
	Skipped   State = "skipped"
	// Lost is a run that held its pipeline's lease and no longer does, without having ended:
	// its process died where no delivery of it is left to finish it (see Record.Orphaned).
	// A lost run is over; its date can be requested again.
	Lost State = "lost"
)

// HandedOn starts the Detail of a run between two steps: the step named in Step is done and
// the next one has not picked the run up yet (Detail names the event it was handed on as).
const HandedOn = "done; handed on as "

// Final reports whether a run in state s is over.
func (s State) Final() bool { return s == Completed || s == Failed || s == Skipped || s == Lost }

// Record is one run.
type Record struct {
	RunID    string `json:"run_id"`
	Pipeline string `json:"pipeline"`
	DS       string `json:"ds"`
	State    State  `json:"state"`
	Step     string `json:"step,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	Error    string `json:"error,omitempty"`
	TraceID  string `json:"trace_id,omitempty"`
	// Trigger is what requested the run (schedule, cli, backfill, ...); Interval is the data
	// interval a scheduled run was requested for (ISO 8601 start/end).
	Trigger     string             `json:"trigger,omitempty"`
	Interval    string             `json:"interval,omitempty"`
	RequestedAt time.Time          `json:"requested_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	Steps       []event.StepResult `json:"steps,omitempty"`
	// Stage is where in the flow the record was written (see StageOf); a write for an earlier
	// stage never replaces it.
	Stage int `json:"stage,omitempty"`
	// NextAttempt is when a retrying step runs again.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Span is the trace span of a step that is waiting (a sensor poking): started at the first
	// delivery and exported when the step stops waiting, with one event per wait.
	Span *Span `json:"span,omitempty"`
	// Fence is the run's lease token once it holds the lease.
	Fence uint64 `json:"fence,omitempty"`
	// Final is the event that announces the run's end (completed or failed), recorded with the
	// end before it is published, so a step that died in between can publish it when its
	// message comes back.
	Final json.RawMessage `json:"final,omitempty"`
}

// Orphaned reports whether the run took its pipeline's lease and lost it without ending: the
// lease is free or held by another run (leaseRunID: its holder, "" when free). Every step after
// the sensor runs under the lease, and a run's end is recorded before its lease is released, so
// such a run can only have died; a delivery that still comes back fails it as fenced.
func (r Record) Orphaned(leaseRunID string) bool {
	return !r.State.Final() && r.Fence != 0 && leaseRunID != r.RunID
}

// Span is a step's trace span kept open across the deliveries that wait.
type Span struct {
	Step    string    `json:"step"`
	SpanID  string    `json:"span_id"`
	Started time.Time `json:"started"`
	Waits   []Wait    `json:"waits,omitempty"`
	// Dropped counts waits left out of Waits, which keeps only the latest ones.
	Dropped int `json:"dropped,omitempty"`
}

// Wait is one delivery of a step that waited: when and why.
type Wait struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// Store reads and writes run records.
type Store struct {
	kv jetstream.KeyValue
}

// New binds to the run bucket (provisioned by bus.Provision).
func New(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := bus.KeyValue(ctx, js, bus.RunBucket)
	if err != nil {
		return nil, fmt.Errorf("run state bucket: %w", err)
	}
	return &Store{kv: kv}, nil
}

// StageOf is the stage of a record written while the event of kind k is handled (working is
// true: the step consuming k runs, waits or retries) or once it is published and not yet taken
// (working is false). Stages follow the flow: requested, the sensor, available, the fetcher, ...
func StageOf(k event.Kind, working bool) int {
	i := 0
	for j, kind := range event.Kinds {
		if kind == k {
			i = j
			break
		}
	}
	if working {
		return 2*i + 1
	}
	return 2 * i
}

// Key is a run's KV key.
func Key(pipeline, ds, runID string) string { return pipeline + "." + ds + "." + runID }

// Update applies fn to the run's record (creating it) with optimistic concurrency. State only
// moves forward: an update that lowers the record's Stage (a step reporting after the next one
// started) is dropped, and a run's end is written once: an update that would move a record out
// of its final state (back to running, or to another end, say a late failure after completion)
// is dropped too.
func (s *Store) Update(ctx context.Context, r event.Run, fn func(*Record)) error {
	return bus.Retry(ctx, func(ctx context.Context) error { return s.update(ctx, r, fn) })
}

func (s *Store) update(ctx context.Context, r event.Run, fn func(*Record)) error {
	key := Key(r.Pipeline, r.DS, r.RunID)
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if attempt > 0 {
			// Another writer got in between our read and our write: the requester and the step
			// handling the run both write it, and on a replicated bucket (R3) each write takes
			// long enough (every replica syncs it) that retrying at once meets the next write
			// again. Back off exponentially (2 ms doubling, at most 200 ms), randomly within
			// [d/2, d], so the writers stop lining up even when every write takes 100 ms.
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return fmt.Errorf("write run %s: %w", key, err)
			}
		}
		rec := Record{RunID: r.RunID, Pipeline: r.Pipeline, DS: r.DS, RequestedAt: r.RequestedAt, State: Queued}
		var rev uint64
		e, err := s.kv.Get(ctx, key)
		switch {
		case err == nil:
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return fmt.Errorf("decode run %s: %w", key, err)
			}
			rev = e.Revision()
		case !bus.IsNotFound(err) && !errors.Is(err, jetstream.ErrKeyDeleted):
			return fmt.Errorf("read run %s: %w", key, err)
		}
		before, stage := rec.State, rec.Stage
		fn(&rec)
		if before.Final() && rec.State != before {
			return nil
		}
		if rec.Stage < stage && !rec.State.Final() {
			return nil // the run is already further on
		}
		rec.UpdatedAt = time.Now().UTC()
		b, _ := json.Marshal(rec)
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, b)
		} else {
			_, err = s.kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("write run %s: %w", key, err)
		}
	}
	return fmt.Errorf("write run %s: too much contention", key)
}

// updateAttempts bounds Update's compare-and-set loop: with backoff, about 1.5–3 s of trying.
const updateAttempts = 20

// backoff is the wait before compare-and-set attempt n (n ≥ 1).
func backoff(n int) time.Duration {
	d := min(2*time.Millisecond<<min(n-1, 10), 200*time.Millisecond)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Get returns one run.
func (s *Store) Get(ctx context.Context, pipeline, ds, runID string) (Record, error) {
	var e jetstream.KeyValueEntry
	err := bus.Retry(ctx, func(ctx context.Context) (err error) { e, err = s.kv.Get(ctx, Key(pipeline, ds, runID)); return err })
	if err != nil {
		return Record{}, err
	}
	var rec Record
	return rec, json.Unmarshal(e.Value(), &rec)
}

// List returns every run, most recently updated first.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Record
	for key := range lister.Keys() {
		e, err := s.kv.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile
		}
		var rec Record
		if json.Unmarshal(e.Value(), &rec) == nil {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UpdatedAt.After(out[j].UpdatedAt) })
	return out, nil
}

// Runs returns the runs of a pipeline, of one date when ds is not empty, oldest request first
// (run ids are ULIDs, so their order is the order of their requests).
func (s *Store) Runs(ctx context.Context, pipeline, ds string) ([]Record, error) {
	filter := pipeline + ".>"
	if ds != "" {
		filter = pipeline + "." + ds + ".*"
	}
	// Listing watches the bucket through a consumer: with a node lost (its leader, say) the watch
	// is retried like any broker request, and one cut short by its deadline is an error, not a
	// shorter list (the lister just stops).
	var keys []string
	err := bus.Retry(ctx, func(ctx context.Context) error {
		keys = keys[:0]
		lister, err := s.kv.ListKeysFiltered(ctx, filter)
		if err != nil {
			return err
		}
		for key := range lister.Keys() {
			keys = append(keys, key)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list runs of %s: %w", pipeline, err)
	}
	sort.Slice(keys, func(i, j int) bool { return runID(keys[i]) < runID(keys[j]) })
	out := make([]Record, 0, len(keys))
	for _, key := range keys {
		var e jetstream.KeyValueEntry
		err := bus.Retry(ctx, func(ctx context.Context) (err error) { e, err = s.kv.Get(ctx, key); return err })
		if err != nil {
			continue // deleted meanwhile
		}
		var rec Record
		if json.Unmarshal(e.Value(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// Latest returns the most recently requested run of pipeline for ds.
func (s *Store) Latest(ctx context.Context, pipeline, ds string) (Record, bool, error) {
	runs, err := s.Runs(ctx, pipeline, ds)
	if err != nil || len(runs) == 0 {
		return Record{}, false, err
	}
	return runs[len(runs)-1], true, nil
}

func runID(key string) string { return key[strings.LastIndexByte(key, '.')+1:] }

// Describe is a run's current state in words: "running validator (attempt 2): <detail>".
func (r Record) Describe() string {
	s := string(r.State)
	if r.Step != "" && !r.State.Final() {
		s += " " + r.Step
	}
	if r.Attempts > 1 {
		s += fmt.Sprintf(" (attempt %d)", r.Attempts)
	}
	if r.Detail != "" && !strings.HasPrefix(r.Detail, HandedOn) {
		s += ": " + r.Detail
	}
	return s
}
