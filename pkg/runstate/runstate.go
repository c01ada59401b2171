// Package runstate keeps each run's state (queued, waiting, running a step, completed, failed,
// skipped) with its attempts, timings and error in a JetStream KV bucket, so `sluice status`
// can show every run without asking any service.
package runstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
)

// State is where a run is.
type State string

const (
	Queued    State = "queued"
	Waiting   State = "waiting"
	Running   State = "running"
	Completed State = "completed"
	Failed    State = "failed"
	Skipped   State = "skipped"
)

// Final reports whether a run in state s is over.
func (s State) Final() bool { return s == Completed || s == Failed || s == Skipped }

// Record is one run.
type Record struct {
	RunID       string             `json:"run_id"`
	Pipeline    string             `json:"pipeline"`
	DS          string             `json:"ds"`
	State       State              `json:"state"`
	Step        string             `json:"step,omitempty"`
	Detail      string             `json:"detail,omitempty"`
	Attempts    int                `json:"attempts,omitempty"`
	Error       string             `json:"error,omitempty"`
	TraceID     string             `json:"trace_id,omitempty"`
	RequestedAt time.Time          `json:"requested_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
	Steps       []event.StepResult `json:"steps,omitempty"`
}

// Store reads and writes run records.
type Store struct {
	kv jetstream.KeyValue
}

// New binds to the run bucket (provisioned by bus.Provision).
func New(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, bus.RunBucket)
	if err != nil {
		return nil, fmt.Errorf("run state bucket: %w", err)
	}
	return &Store{kv: kv}, nil
}

// Key is a run's KV key.
func Key(pipeline, ds, runID string) string { return pipeline + "." + ds + "." + runID }

// Update applies fn to the run's record (creating it) with optimistic concurrency. A record in a
// final state is not moved back by a late, out-of-order update.
func (s *Store) Update(ctx context.Context, r event.Run, fn func(*Record)) error {
	key := Key(r.Pipeline, r.DS, r.RunID)
	for attempt := 0; attempt < 5; attempt++ {
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
		before := rec.State
		fn(&rec)
		if before.Final() && !rec.State.Final() {
			return nil
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

// Get returns one run.
func (s *Store) Get(ctx context.Context, pipeline, ds, runID string) (Record, error) {
	e, err := s.kv.Get(ctx, Key(pipeline, ds, runID))
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
