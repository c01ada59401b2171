// Package trigger starts runs. Schedules, `sluice trigger` and `sluice backfill` all request a run
// through it, under one rule: a date whose latest run is still queued, waiting or running is not
// queued again. The rule holds under races too, because the message id of a request names the
// run it follows (<pipeline>.<ds>.after.<latest run id>), so two producers that saw the same
// state publish the same id and the stream keeps one. The package also keeps each pipeline's
// schedule in the broker: the JetStream message schedule that fires the pipeline's ticks, and
// the schedule state (last interval requested, paused) in a KV bucket.
package trigger

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/sla"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Request asks for a run of Pipeline for DS.
type Request struct {
	Pipeline string
	DS       string
	// Trigger says who asked: schedule, cli, backfill.
	Trigger string
	// Interval is the data interval of a scheduled run.
	Interval schedule.Interval
	// Ended names a run known to have ended although its record may not say so yet (the
	// scheduler reacting to that run's completed or failed event).
	Ended string
	// SLA, if set, is armed once the request is stored; its deadline counts from the end of
	// Interval (the run's scheduled time), or from the request when there is no interval.
	SLA *config.SLA
}

// Planned is a request ready to publish: its run id and message id are fixed, so publishing it
// again (after a crash) is deduplicated by the stream.
type Planned struct {
	Request
	RunID       string
	MsgID       string
	RequestedAt time.Time
}

// Result is what a request did.
type Result struct {
	RunID string
	// Queued is true when this request queued RunID; false when the date already had a run
	// queued, waiting or running (RunID is that run, in State).
	Queued bool
	State  runstate.State
}

// Requester publishes requested events.
type Requester struct {
	js     jetstream.JetStream
	runs   *runstate.Store
	tracer trace.Tracer
	opts   bus.Options
}

// New returns a requester on the stream and subjects of opts.
func New(js jetstream.JetStream, runs *runstate.Store, tp trace.TracerProvider, opts bus.Options) *Requester {
	return &Requester{js: js, runs: runs, opts: opts, tracer: tp.Tracer("github.com/sluice-etl/sluice/pkg/trigger")}
}

// RequestRun requests a run of pipeline for ds (trigger by) on the stream and subjects of opts:
// Requester.Request for a caller that holds no requester (tools, tests, benchmarks).
func RequestRun(ctx context.Context, js jetstream.JetStream, tp trace.TracerProvider, opts bus.Options, pipeline, ds, by string) (Result, error) {
	runs, err := runstate.New(ctx, js)
	if err != nil {
		return Result{}, err
	}
	return New(js, runs, tp, opts).Request(ctx, Request{Pipeline: pipeline, DS: ds, Trigger: by})
}

// Runs is the run-state store the requester reads.
func (r *Requester) Runs() *runstate.Store { return r.runs }

// MsgID is the message id of a request for ds that follows run after ("" for a date's first).
func MsgID(pipeline, ds, after string) string {
	if after == "" {
		after = "none"
	}
	return pipeline + "." + ds + ".after." + after
}

// Pending returns the date's latest run if it has not ended.
func (r *Requester) Pending(ctx context.Context, pipeline, ds, ended string) (runstate.Record, bool, error) {
	latest, ok, err := r.Latest(ctx, pipeline, ds)
	if err != nil || !ok || latest.State.Final() || latest.RunID == ended {
		return runstate.Record{}, false, err
	}
	return latest, true, nil
}

// Latest returns the date's latest run, marked lost first if it is orphaned: it took the
// pipeline's lease and lost it without ending (its process died), so nothing will end it and
// its date may be requested again.
func (r *Requester) Latest(ctx context.Context, pipeline, ds string) (runstate.Record, bool, error) {
	latest, ok, err := r.runs.Latest(ctx, pipeline, ds)
	if err != nil || !ok || latest.State.Final() || latest.Fence == 0 {
		return latest, ok, err
	}
	holder, err := LeaseHolder(ctx, r.js, pipeline)
	if err != nil || !latest.Orphaned(holder) {
		// A caller that may not read the leases (the console's NATS user) sees the run as it is.
		return latest, ok, nil
	}
	run := event.Run{RunID: latest.RunID, Pipeline: pipeline, DS: ds, RequestedAt: latest.RequestedAt}
	detail := "lost: its lease is gone and it never ended (its process died)"
	if err := r.runs.Update(ctx, run, func(rec *runstate.Record) {
		if !rec.State.Final() {
			rec.State, rec.Detail, rec.Span = runstate.Lost, detail, nil
		}
	}); err != nil {
		return latest, ok, nil // not allowed to record it: the run stays as it is
	}
	return r.runs.Latest(ctx, pipeline, ds)
}

// LeaseHolder is the run id holding pipeline's lease, "" when it is free.
func LeaseHolder(ctx context.Context, js jetstream.JetStream, pipeline string) (string, error) {
	leases, err := lease.New(ctx, js)
	if err != nil {
		return "", err
	}
	h, held, err := leases.Get(ctx, pipeline)
	if err != nil || !held {
		return "", err
	}
	return h.RunID, nil
}

// Plan decides a request: it returns the date's pending run if there is one, or else the
// request to publish.
func (r *Requester) Plan(ctx context.Context, req Request) (Planned, *runstate.Record, error) {
	if _, err := event.ParseDS(req.DS); err != nil {
		return Planned{}, nil, err
	}
	latest, ok, err := r.Latest(ctx, req.Pipeline, req.DS)
	if err != nil {
		return Planned{}, nil, err
	}
	if ok && !latest.State.Final() && latest.RunID != req.Ended {
		return Planned{}, &latest, nil
	}
	now := time.Now().UTC()
	return Planned{Request: req, RunID: ulid.MustNew(ulid.Timestamp(now), rand.Reader).String(),
		MsgID: MsgID(req.Pipeline, req.DS, latest.RunID), RequestedAt: now}, nil, nil
}

// Request plans and publishes a request.
func (r *Requester) Request(ctx context.Context, req Request) (Result, error) {
	p, pending, err := r.Plan(ctx, req)
	if err != nil {
		return Result{}, err
	}
	if pending != nil {
		return Result{RunID: pending.RunID, State: pending.State}, nil
	}
	return r.Publish(ctx, p)
}

// Publish sends a planned request and records the run as queued. If the stream already holds a
// request with the same message id (another producer saw the same state first), the result
// names that request's run instead.
func (r *Requester) Publish(ctx context.Context, p Planned) (Result, error) {
	req := &event.Requested{Run: event.Run{RunID: p.RunID, Pipeline: p.Pipeline, DS: p.DS, Trigger: p.Trigger, RequestedAt: p.RequestedAt}}
	data, err := event.Encode(req)
	if err != nil {
		return Result{}, err
	}
	// The run gets its trace here, and only here: a root span id that every step's
	// span takes as parent, and a short request span under it.
	root := trace.NewSpanContext(trace.SpanContextConfig{TraceID: telemetry.NewTraceID(), SpanID: telemetry.NewSpanID(), TraceFlags: trace.FlagsSampled})
	runCtx := trace.ContextWithSpanContext(ctx, root)
	_, span := r.tracer.Start(runCtx, "request "+p.Pipeline+" "+p.DS, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("sluice.pipeline", p.Pipeline), attribute.String("sluice.ds", p.DS),
			attribute.String("sluice.run_id", p.RunID), attribute.String("sluice.trigger", p.Trigger)))
	defer span.End()
	m := &nats.Msg{Subject: event.Subject(r.opts.SubjectPrefix, p.Pipeline, event.KindRequested, p.DS), Header: nats.Header{}, Data: data}
	telemetry.Inject(runCtx, m.Header)
	var ack *jetstream.PubAck
	err = bus.Retry(ctx, func(ctx context.Context) (err error) {
		ack, err = r.js.PublishMsg(ctx, m, jetstream.WithMsgID(p.MsgID)) // a repeat is a duplicate
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("request %s %s: publish %s: %w", p.Pipeline, p.DS, m.Subject, err)
	}
	runID := p.RunID
	if !ack.Duplicate {
		// The run's place in the lease queue, before the caller requests the next date.
		if err := lease.Join(ctx, r.js, p.Pipeline, lease.Entry{Seq: ack.Sequence, DS: p.DS, RunID: runID}); err != nil {
			return Result{}, fmt.Errorf("request %s %s: %w", p.Pipeline, p.DS, err)
		}
	}
	if ack.Duplicate {
		if runID, err = r.original(ctx, ack.Sequence); err != nil {
			return Result{}, fmt.Errorf("request %s %s: %w", p.Pipeline, p.DS, err)
		}
	}
	if ack.Duplicate {
		rec, err := r.runs.Get(ctx, p.Pipeline, p.DS, runID)
		if err != nil {
			rec.State = runstate.Queued // its producer has not recorded it yet
		}
		if runID != p.RunID {
			return Result{RunID: runID, State: rec.State}, nil
		}
		if err == nil {
			// Ours, published and recorded before (a planned request published again).
			return Result{RunID: runID, Queued: true, State: rec.State}, r.arm(runCtx, p, req.Run)
		}
	}
	err = r.runs.Update(ctx, req.Run, func(rec *runstate.Record) {
		rec.Trigger = p.Trigger
		if !p.Interval.IsZero() {
			rec.Interval = p.Interval.String()
		}
	})
	if err != nil {
		return Result{}, fmt.Errorf("request %s %s: %w", p.Pipeline, p.DS, err)
	}
	return Result{RunID: runID, Queued: true, State: runstate.Queued}, r.arm(runCtx, p, req.Run)
}

// arm sets the run's SLA deadline, after the request is stored, never before: a deadline for a
// request that was not stored would alert on a run that does not exist. Arming twice replaces.
func (r *Requester) arm(ctx context.Context, p Planned, run event.Run) error {
	if p.SLA == nil {
		return nil
	}
	scheduled := p.RequestedAt
	if !p.Interval.IsZero() {
		scheduled = p.Interval.End
	}
	if err := sla.Arm(ctx, r.js, r.opts.SubjectPrefix, run, sla.Deadline(*p.SLA, scheduled)); err != nil {
		return fmt.Errorf("run %s requested, but its SLA deadline is not armed: %w", run.RunID, err)
	}
	return nil
}

// original returns the run id of the stored request at seq.
func (r *Requester) original(ctx context.Context, seq uint64) (string, error) {
	s, err := r.js.Stream(ctx, r.opts.Stream)
	if err != nil {
		return "", err
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return "", fmt.Errorf("read the earlier request at sequence %d: %w", seq, err)
	}
	var run event.Run
	if err := json.Unmarshal(m.Data, &run); err != nil {
		return "", fmt.Errorf("decode the earlier request at sequence %d: %w", seq, err)
	}
	return run.RunID, nil
}

// ErrConflict says the schedule state changed since it was read.
var ErrConflict = errors.New("schedule state changed concurrently")

// State is a pipeline's schedule state: the last interval the schedule handled and the run that
// serves it. Published is false between the moment a request is planned (and this state
// written) and the moment it is published, so a request planned by a process that then died is
// published by the next tick, with the same ids.
type State struct {
	Paused      bool      `json:"paused,omitempty"`
	Start       time.Time `json:"start,omitzero"`
	End         time.Time `json:"end,omitzero"`
	DS          string    `json:"ds,omitempty"`
	RunID       string    `json:"run_id,omitempty"`
	MsgID       string    `json:"msg_id,omitempty"`
	RequestedAt time.Time `json:"requested_at,omitzero"`
	Published   bool      `json:"published,omitempty"`
	// Coalesced is true when the interval was given to a run already queued for its date.
	Coalesced bool      `json:"coalesced,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Interval is the last interval handled.
func (s State) Interval() schedule.Interval { return schedule.Interval{Start: s.Start, End: s.End} }

// Planned is the state's request, to publish again.
func (s State) Planned(pipeline string) Planned {
	return Planned{Request: Request{Pipeline: pipeline, DS: s.DS, Trigger: "schedule", Interval: s.Interval()},
		RunID: s.RunID, MsgID: s.MsgID, RequestedAt: s.RequestedAt}
}

// States reads and writes schedule states.
type States struct{ kv jetstream.KeyValue }

// NewStates binds to the schedule bucket (provisioned by bus.Provision).
func NewStates(ctx context.Context, js jetstream.JetStream) (*States, error) {
	kv, err := bus.KeyValue(ctx, js, bus.ScheduleBucket)
	if err != nil {
		return nil, fmt.Errorf("schedule bucket: %w", err)
	}
	return &States{kv: kv}, nil
}

// Get returns the pipeline's state and its revision (0 when there is none yet).
func (s *States) Get(ctx context.Context, pipeline string) (State, uint64, error) {
	e, err := s.kv.Get(ctx, pipeline)
	if bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, fmt.Errorf("read schedule state of %s: %w", pipeline, err)
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return State{}, 0, fmt.Errorf("decode schedule state of %s: %w", pipeline, err)
	}
	return st, e.Revision(), nil
}

// Put writes st if the state is still at revision rev (0: not created yet); ErrConflict if not.
func (s *States) Put(ctx context.Context, pipeline string, st State, rev uint64) (uint64, error) {
	st.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	var n uint64
	if rev == 0 {
		n, err = s.kv.Create(ctx, pipeline, b)
	} else {
		n, err = s.kv.Update(ctx, pipeline, b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("write schedule state of %s: %w", pipeline, err)
	}
	return n, nil
}

// SetPaused pauses or unpauses a pipeline's schedule; changed is false if it already was.
func (s *States) SetPaused(ctx context.Context, pipeline string, paused bool) (changed bool, err error) {
	for attempt := 0; attempt < 10; attempt++ {
		st, rev, err := s.Get(ctx, pipeline)
		if err != nil {
			return false, err
		}
		if st.Paused == paused {
			return false, nil
		}
		st.Paused = paused
		if _, err := s.Put(ctx, pipeline, st, rev); errors.Is(err, ErrConflict) {
			continue
		} else if err != nil {
			return false, err
		}
		return true, nil
	}
	return false, fmt.Errorf("set paused for %s: %w", pipeline, ErrConflict)
}
