package sensor

// Schedules: the broker fires each pipeline's cron as a tick on <prefix>.<pipeline>.tick (a
// JetStream message schedule, installed at start); the sensor turns ticks into `requested`
// events. No process keeps a timer: a tick only makes the scheduler compare the clock with the
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
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// Consumers of the scheduler, shared by all sensor replicas (provisioned by bus.Provision).
const (
	TickConsumer = bus.TickConsumer
	// EndConsumer reads completed and failed events, so the next interval follows a run's end.
	EndConsumer = bus.EndConsumer
)

// Scheduler turns schedule ticks into requested events.
type Scheduler struct {
	req       *trigger.Requester
	states    *trigger.States
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
func NewScheduler(req *trigger.Requester, states *trigger.States, leases *lease.Leases, pipelines []config.Pipeline, log *slog.Logger) (*Scheduler, error) {
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
// once (what was due while no scheduler ran is requested now, not at the next fire), and
// has the router consume ticks and run ends until ctx is done.
func StartScheduler(ctx context.Context, d *app.Deps) error {
	opts := app.BusOptions(d.Config)
	if err := trigger.Install(ctx, d.JS, opts, d.Config.Pipelines); err != nil {
		return err
	}
	states, err := trigger.NewStates(ctx, d.JS)
	if err != nil {
		return err
	}
	s, err := NewScheduler(trigger.New(d.JS, d.Router.Runs(), d.Tracer, opts), states, d.Router.Leases(), d.Config.Pipelines, d.Logger("sensor").With("step", "scheduler"))
	if err != nil {
		return err
	}
	if len(s.pipelines) == 0 {
		return nil
	}
	ticks, err := bus.BindConsumer(ctx, d.JS, opts.Stream, TickConsumer)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", TickConsumer, err)
	}
	ends, err := bus.BindConsumer(ctx, d.JS, opts.Stream, EndConsumer)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", EndConsumer, err)
	}
	for name := range s.pipelines {
		if err := trigger.Kick(ctx, d.JS, opts.SubjectPrefix, name, "start"); err != nil {
			return err
		}
	}
	// The router runs both loops under its bounded drain.
	d.Router.Loop(ticks, s.log, s.settle(s.onTick))
	d.Router.Loop(ends, s.log, s.settle(s.onEnd))
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
	parts := strings.Split(msg.Subject(), ".")
	p, ok := s.pipelines[parts[len(parts)-2]]
	if !ok {
		return 0, nil // a pipeline this config does not schedule
	}
	_, err := s.Tick(ctx, p.Name, s.reference(msg), "")
	return 0, err
}

func (s *Scheduler) onEnd(ctx context.Context, msg jetstream.Msg) (time.Duration, error) {
	parts := strings.Split(msg.Subject(), ".")
	if len(parts) < 4 {
		return 0, nil
	}
	ev, err := event.Decode(event.Kind(parts[len(parts)-2]), msg.Data())
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
	p, sched := s.pipelines[pipeline], s.scheds[pipeline]
	if p == nil {
		return Outcome{Reason: "no schedule"}, nil
	}
	var startDate time.Time
	if p.StartDate != "" {
		d, _ := time.Parse(time.DateOnly, p.StartDate) // validated with the config
		startDate = time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, sched.Location())
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
			planned := st.Planned(pipeline)
			planned.SLA = p.SLA
			res, err := s.req.Publish(ctx, planned)
			if err != nil {
				return Outcome{}, err
			}
			st.RunID, st.Published = res.RunID, true
			if _, err := s.states.Put(ctx, pipeline, st, rev); err != nil && !errors.Is(err, trigger.ErrConflict) {
				return Outcome{}, err
			}
			continue
		}
		if st.RunID != "" && st.RunID != ended {
			rec, active, err := s.active(ctx, pipeline, st)
			if err != nil {
				return Outcome{}, err
			}
			if active {
				return Outcome{Interval: st.Interval(), DS: st.DS, RunID: st.RunID, Reason: "run " + st.RunID + " of the last interval has not ended"}, nil
			}
			if rec.State.Final() && s.now().Sub(rec.UpdatedAt) < turn(p) {
				// Just ended: runs queued on the lease go first; its end event comes back
				// after their turn and requests then.
				return Outcome{Reason: "run " + st.RunID + " just ended: queued runs go first"}, nil
			}
		}
		if h, held, err := s.leases.Get(ctx, pipeline); err != nil {
			return Outcome{}, fmt.Errorf("read lease of %s: %w", pipeline, err)
		} else if held && h.RunID != ended {
			return Outcome{Reason: "run " + h.RunID + " (ds " + h.DS + ") holds the pipeline"}, nil
		}
		latest, ok := sched.Latest(ref)
		if !ok {
			return Outcome{Reason: "no interval has closed"}, nil
		}
		if !st.End.IsZero() && !latest.End.After(st.End) {
			return Outcome{Reason: "up to date"}, nil
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
			return Outcome{Reason: "the latest interval starts before start_date " + p.StartDate}, nil
		}
		ds := sched.DS(target)
		planned, pending, err := s.req.Plan(ctx, trigger.Request{Pipeline: pipeline, DS: ds, Trigger: "schedule", Interval: target, Ended: ended, SLA: p.SLA})
		if err != nil {
			return Outcome{}, err
		}
		next := trigger.State{Start: target.Start, End: target.End, DS: ds}
		if pending != nil {
			// The date already has a run queued (a trigger, a backfill): it serves this interval.
			next.RunID, next.Published, next.Coalesced = pending.RunID, true, true
		} else {
			next.RunID, next.MsgID, next.RequestedAt = planned.RunID, planned.MsgID, planned.RequestedAt
		}
		rev, err = s.states.Put(ctx, pipeline, next, rev)
		if errors.Is(err, trigger.ErrConflict) {
			continue // another replica moved first; look again
		}
		if err != nil {
			return Outcome{}, err
		}
		out := Outcome{Interval: target, DS: ds, RunID: next.RunID, Coalesced: pending != nil}
		if pending != nil {
			s.log.Info("scheduled interval given to the run already queued for its date", "pipeline", pipeline, "ds", ds, "interval", target.String(), "run_id", pending.RunID)
			return out, nil
		}
		res, err := s.req.Publish(ctx, planned)
		if err != nil {
			return Outcome{}, err // the state says unpublished: the next tick publishes it
		}
		next.RunID, next.Published = res.RunID, true
		if _, err := s.states.Put(ctx, pipeline, next, rev); err != nil && !errors.Is(err, trigger.ErrConflict) {
			return Outcome{}, err
		}
		out.RunID, out.Requested = res.RunID, res.Queued
		s.log.Info("scheduled run requested", "pipeline", pipeline, "ds", ds, "interval", target.String(), "run_id", res.RunID)
		return out, nil
	}
	return Outcome{}, fmt.Errorf("schedule of %s: %w", pipeline, trigger.ErrConflict)
}

// active reports whether the run serving the last interval has not ended.
func (s *Scheduler) active(ctx context.Context, pipeline string, st trigger.State) (runstate.Record, bool, error) {
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
