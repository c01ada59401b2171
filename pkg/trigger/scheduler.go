package trigger

// Schedules: the broker fires each pipeline's cron as a tick on <prefix>.<pipeline>.tick (a
// JetStream message schedule, installed at start); the scheduler turns ticks into `requested`
// events. The sensor's process runs it. No process keeps a timer: a tick only makes the scheduler compare the clock with the
// pipeline's schedule state in KV and request what is due. Ticks are interchangeable, so a late,
// doubled or lost tick changes nothing but when the next request happens.
//
// One scheduled run at a time: while the run of the last interval has not ended, or another run
// (a trigger, a backfill) holds the pipeline's lease, ticks do nothing (the seed's
// max_active_runs=1, as Airflow does it: it creates no run while one is active). When a run
// ends, its completed or failed event makes the scheduler look again one sensor wait later, so
// with catchup the missed intervals run back to back, oldest first, and without catchup the
// latest interval runs. The wait is the longest a run queued on the lease takes to look again:
// without it a scheduled run requested the instant the lease is freed would take it ahead of
// runs queued before it, and a fast schedule would starve a backfill. Replicas share both
// consumers and serialise on the state's revision, so two of them never request one interval.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/schedule"
)

// Scheduler turns schedule ticks into requested events.
type Scheduler struct {
	req       *Requester
	states    *States
	leases    *lease.Leases
	pipelines map[string]*config.Pipeline
	scheds    map[string]*schedule.Schedule
	log       *slog.Logger
	now       func() time.Time
}

// Outcome says what a tick did, for logs and tests.
type Outcome struct {
	Interval schedule.Interval
	DS       string
	RunID    string
	// Requested is true when a run was requested; Coalesced when the interval went to a run
	// already queued for its date; otherwise Reason says why nothing was due.
	Requested bool
	Coalesced bool
	Reason    string
}

// NewScheduler builds the scheduler for the pipelines that have a schedule.
func NewScheduler(req *Requester, states *States, leases *lease.Leases, pipelines []config.Pipeline, log *slog.Logger) (*Scheduler, error) {
	s := &Scheduler{req: req, states: states, leases: leases, pipelines: map[string]*config.Pipeline{}, scheds: map[string]*schedule.Schedule{}, log: log, now: time.Now}
	for i := range pipelines {
		p := &pipelines[i]
		if p.Schedule == "" {
			continue
		}
		sched, err := schedule.Parse(p.Schedule, p.Timezone)
		if err != nil {
			return nil, fmt.Errorf("pipeline %s: %w", p.Name, err)
		}
		s.pipelines[p.Name], s.scheds[p.Name] = p, sched
	}
	return s, nil
}

// StartScheduler installs the pipelines' schedules in the broker, ticks each scheduled pipeline
// once (what was due while no scheduler ran is requested now, not at the next fire), and has r
// consume ticks and run ends (bus.TickConsumer, bus.EndConsumer: shared by all replicas) under
// its bounded drain until r's context is done.
func StartScheduler(ctx context.Context, r *flow.Router, req *Requester, pipelines []config.Pipeline, log *slog.Logger) error {
	js, opts := req.js, req.opts
	if err := Install(ctx, js, opts, pipelines); err != nil {
		return err
	}
	states, err := NewStates(ctx, js)
	if err != nil {
		return err
	}
	s, err := NewScheduler(req, states, r.Leases(), pipelines, log)
	if err != nil || len(s.pipelines) == 0 {
		return err
	}
	ticks, err := bus.BindConsumer(ctx, js, opts.Stream, bus.TickConsumer)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", bus.TickConsumer, err)
	}
	ends, err := bus.BindConsumer(ctx, js, opts.Stream, bus.EndConsumer)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", bus.EndConsumer, err)
	}
	for name := range s.pipelines {
		if err := Kick(ctx, js, opts.SubjectPrefix, name, "start"); err != nil {
			return err
		}
	}
	r.Loop(ticks, log, s.settle(s.onTick))
	r.Loop(ends, log, s.settle(s.onEnd))
	return nil
}

// settle handles one message and answers the broker: a failed message comes back after a second.
func (s *Scheduler) settle(handle func(context.Context, jetstream.Msg) (time.Duration, error)) func(context.Context, jetstream.Msg) {
	return func(ctx context.Context, msg jetstream.Msg) {
		// A tick in hand is finished even when shutdown starts: it is a few KV reads and writes.
		hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		later, err := handle(hctx, msg)
		cancel()
		if later > 0 { // look again then: the broker holds the message meanwhile
			_ = msg.NakWithDelay(later)
			return
		}
		if err != nil {
			s.log.Warn("schedule tick failed; will retry", "subject", msg.Subject(), "err", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		_ = msg.Ack()
	}
}

func (s *Scheduler) onTick(ctx context.Context, msg jetstream.Msg) (time.Duration, error) {
	name, _ := event.ParseTick(msg.Subject())
	p, ok := s.pipelines[name]
	if !ok {
		return 0, nil // a pipeline this config does not schedule
	}
	_, err := s.Tick(ctx, p.Name, s.reference(msg), "")
	return 0, err
}

func (s *Scheduler) onEnd(ctx context.Context, msg jetstream.Msg) (time.Duration, error) {
	_, kind, _, ok := event.ParseSubject(msg.Subject())
	if !ok {
		return 0, nil
	}
	ev, err := event.Decode(kind, msg.Data())
	if err != nil {
		return 0, nil // not ours to judge; the alerter reports bad events
	}
	run := ev.Header()
	p, ok := s.pipelines[run.Pipeline]
	if !ok {
		return 0, nil
	}
	// Runs queued on the lease look again within one sensor wait: give them that turn first.
	if meta, err := msg.Metadata(); err == nil && meta.NumDelivered == 1 {
		return turn(p), nil
	}
	_, err = s.Tick(ctx, run.Pipeline, s.reference(msg), run.RunID)
	return 0, err
}

// turn is how long the schedule leaves a freed lease to the runs queued on it: the longest a
// queued run waits before looking again, and a little more.
func turn(p *config.Pipeline) time.Duration { return p.Sensor.MaxWait() + 500*time.Millisecond }

// reference is the time a tick is judged at: the later of the broker's time of the message and
// this process's clock, so a sensor whose clock is behind the server's still sees the interval
// the tick closed.
func (s *Scheduler) reference(msg jetstream.Msg) time.Time {
	ref := s.now()
	if meta, err := msg.Metadata(); err == nil && meta.Timestamp.After(ref) {
		ref = meta.Timestamp
	}
	return ref
}

// Tick requests what is due for pipeline at ref. ended names a run that has just ended (its
// record may lag behind its completed or failed event).
func (s *Scheduler) Tick(ctx context.Context, pipeline string, ref time.Time, ended string) (Outcome, error) {
	p := s.pipelines[pipeline]
	if p == nil {
		return Outcome{Reason: "no schedule"}, nil
	}
	for attempt := 0; attempt < 20; attempt++ {
		st, rev, err := s.states.Get(ctx, pipeline)
		if err != nil {
			return Outcome{}, err
		}
		if st.Paused {
			return Outcome{Reason: "paused"}, nil
		}
		if st.RunID != "" && !st.Published {
			// Planned by a scheduler that stopped before publishing: publish it now, with the
			// same run id and message id, so a copy that did get out is dropped by the stream.
			if _, err := s.publish(ctx, p, st.Planned(pipeline), st, rev); err != nil {
				return Outcome{}, err
			}
			continue
		}
		if out, busy, err := s.busy(ctx, p, st, ended); busy || err != nil {
			return out, err
		}
		target, why := s.due(p, st, ref)
		if why != "" {
			return Outcome{Reason: why}, nil
		}
		out, err := s.request(ctx, p, target, ended, rev)
		if errors.Is(err, ErrConflict) {
			continue // another replica moved first; look again
		}
		return out, err
	}
	return Outcome{}, fmt.Errorf("schedule of %s: %w", pipeline, ErrConflict)
}

// busy reports why the schedule must not request now: the run of the last interval has not
// ended (or has just ended, and runs queued on the lease go first), or another run holds the
// pipeline.
func (s *Scheduler) busy(ctx context.Context, p *config.Pipeline, st State, ended string) (Outcome, bool, error) {
	if st.RunID != "" && st.RunID != ended {
		rec, active, err := s.active(ctx, p.Name, st)
		if err != nil {
			return Outcome{}, true, err
		}
		if active {
			return Outcome{Interval: st.Interval(), DS: st.DS, RunID: st.RunID, Reason: "run " + st.RunID + " of the last interval has not ended"}, true, nil
		}
		if rec.State.Final() && s.now().Sub(rec.UpdatedAt) < turn(p) {
			// Just ended: runs queued on the lease go first; its end event comes back after
			// their turn and requests then.
			return Outcome{Reason: "run " + st.RunID + " just ended: queued runs go first"}, true, nil
		}
	}
	if h, held, err := s.leases.Get(ctx, p.Name); err != nil {
		return Outcome{}, true, fmt.Errorf("read lease of %s: %w", p.Name, err)
	} else if held && h.RunID != ended {
		return Outcome{Reason: "run " + h.RunID + " (ds " + h.DS + ") holds the pipeline"}, true, nil
	}
	return Outcome{}, false, nil
}

// due returns the interval to request at ref: the latest that has closed, or with catchup the
// oldest not yet requested; or why none is due.
func (s *Scheduler) due(p *config.Pipeline, st State, ref time.Time) (schedule.Interval, string) {
	sched := s.scheds[p.Name]
	var startDate time.Time
	if p.StartDate != "" {
		d, _ := time.Parse(time.DateOnly, p.StartDate) // validated with the config
		startDate = time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, sched.Location())
	}
	latest, ok := sched.Latest(ref)
	if !ok {
		return latest, "no interval has closed"
	}
	if !st.End.IsZero() && !latest.End.After(st.End) {
		return latest, "up to date"
	}
	target := latest
	if p.Catchup {
		from := st.End
		if from.IsZero() {
			from = startDate // with no history, catch up from start_date if there is one
		}
		if !from.IsZero() {
			if iv, ok := sched.After(from); ok && !iv.End.After(latest.End) {
				target = iv
			}
		}
	}
	if !startDate.IsZero() && target.Start.Before(startDate) {
		return target, "the latest interval starts before start_date " + p.StartDate
	}
	return target, ""
}

// request plans the run of target, records it in the schedule state (at revision rev; a
// conflict is ErrConflict), then publishes it. A date that already has a run queued (a trigger,
// a backfill) gives the interval to that run.
func (s *Scheduler) request(ctx context.Context, p *config.Pipeline, target schedule.Interval, ended string, rev uint64) (Outcome, error) {
	ds := s.scheds[p.Name].DS(target)
	planned, pending, err := s.req.Plan(ctx, Request{Pipeline: p.Name, DS: ds, Trigger: "schedule", Interval: target, Ended: ended, SLA: p.SLA})
	if err != nil {
		return Outcome{}, err
	}
	next := State{Start: target.Start, End: target.End, DS: ds}
	if pending != nil {
		next.RunID, next.Published, next.Coalesced = pending.RunID, true, true
	} else {
		next.RunID, next.MsgID, next.RequestedAt = planned.RunID, planned.MsgID, planned.RequestedAt
	}
	if rev, err = s.states.Put(ctx, p.Name, next, rev); err != nil {
		return Outcome{}, err
	}
	out := Outcome{Interval: target, DS: ds, RunID: next.RunID, Coalesced: pending != nil}
	if pending != nil {
		s.log.Info("scheduled interval given to the run already queued for its date", "pipeline", p.Name, "ds", ds, "interval", target.String(), "run_id", pending.RunID)
		return out, nil
	}
	res, err := s.publish(ctx, p, planned, next, rev)
	if err != nil {
		return Outcome{}, err // the state says unpublished: the next tick publishes it
	}
	out.RunID, out.Requested = res.RunID, res.Queued
	s.log.Info("scheduled run requested", "pipeline", p.Name, "ds", ds, "interval", target.String(), "run_id", res.RunID)
	return out, nil
}

// publish publishes a planned request and records it published in the schedule state st (at
// revision rev; a conflict there means another replica moved on, which is fine).
func (s *Scheduler) publish(ctx context.Context, p *config.Pipeline, planned Planned, st State, rev uint64) (Result, error) {
	planned.SLA = p.SLA
	res, err := s.req.Publish(ctx, planned)
	if err != nil {
		return Result{}, err
	}
	st.RunID, st.Published = res.RunID, true
	if _, err := s.states.Put(ctx, p.Name, st, rev); err != nil && !errors.Is(err, ErrConflict) {
		return Result{}, err
	}
	return res, nil
}

// active reports whether the run serving the last interval has not ended.
func (s *Scheduler) active(ctx context.Context, pipeline string, st State) (runstate.Record, bool, error) {
	rec, err := s.req.Runs().Get(ctx, pipeline, st.DS, st.RunID)
	switch {
	case err == nil:
		return rec, !rec.State.Final(), nil
	case bus.IsNotFound(err) || errors.Is(err, jetstream.ErrKeyDeleted):
		// Not recorded yet (its producer stopped between publishing and recording; the sensor
		// records it when it gets there), or expired from the run bucket long ago.
		return rec, s.now().Sub(st.RequestedAt) < 10*time.Minute, nil
	default:
		return rec, false, err
	}
}
