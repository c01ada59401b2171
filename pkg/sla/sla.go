// Package sla arms each run's SLA deadline in the broker, not in any process: when a run is
// requested, a one-shot JetStream message schedule (`Nats-Schedule: @at <deadline>`) is stored
// on the run's own subject with the run's sla_missed subject as its target. The server fires it
// at the deadline — after restarts of every process, its own included, since the schedule is a
// stored message — and the alerter then decides from the run's state whether the deadline was
// missed. Arming again replaces the schedule (the server rolls up a schedule's subject), so every
// producer of a run's request may arm it without coordination.
package sla

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// Deadline is when a run scheduled at scheduled must have completed. The broker's @at has
// whole seconds, so the deadline is rounded up: it never fires early.
func Deadline(s config.SLA, scheduled time.Time) time.Time {
	d := scheduled.Add(s.Within).UTC()
	if t := d.Truncate(time.Second); !t.Equal(d) {
		return t.Add(time.Second)
	}
	return d
}

// Arm stores the schedule that publishes run's sla_missed event at deadline, carrying the trace
// context of ctx (the run's), so the alert links to the run's trace.
func Arm(ctx context.Context, js jetstream.JetStream, prefix string, run event.Run, deadline time.Time) error {
	run.Steps = nil
	data, err := event.Encode(&event.SLAMissed{Run: run, Deadline: deadline.UTC()})
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: event.DeadlineSubject(prefix, run.Pipeline, run.DS, run.RunID), Header: nats.Header{}, Data: data}
	telemetry.Inject(ctx, m.Header)
	err = bus.Retry(ctx, func(ctx context.Context) error {
		_, err := js.PublishMsg(ctx, m,
			jetstream.WithScheduleAt(deadline),
			jetstream.WithScheduleTarget(event.Subject(prefix, run.Pipeline, event.KindSLAMissed, run.DS)))
		return err
	})
	if err != nil {
		return fmt.Errorf("arm sla deadline %s of %s %s run %s: %w", deadline.Format(time.RFC3339), run.Pipeline, run.DS, run.RunID, err)
	}
	return nil
}

// Disarm removes a run's deadline schedule (the run completed in time): nothing fires. A
// schedule already fired or never armed is no error.
func Disarm(ctx context.Context, js jetstream.JetStream, stream, prefix string, run event.Run) error {
	return bus.Retry(ctx, func(ctx context.Context) error { return disarm(ctx, js, stream, prefix, run) })
}

func disarm(ctx context.Context, js jetstream.JetStream, stream, prefix string, run event.Run) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("disarm sla deadline: %w", err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(event.DeadlineSubject(prefix, run.Pipeline, run.DS, run.RunID))); err != nil {
		return fmt.Errorf("disarm sla deadline of %s %s run %s: %w", run.Pipeline, run.DS, run.RunID, err)
	}
	return nil
}

// Verdict is what a fired deadline means for its run.
type Verdict struct {
	// Missed is true when the run had not completed by the deadline.
	Missed bool
	// Step is where the run was stuck ("" when unknown: not yet picked up); State and Detail
	// say how (waiting for the source, retrying, ...).
	Step   string
	State  runstate.State
	Detail string
	// Reason says why a fired deadline is not a miss.
	Reason string
}

// Judge decides from a run's record whether the deadline was missed. A run that completed by
// the deadline, or ended otherwise before it (failed: its failure was alerted; skipped: on
// purpose), is no miss. A run with no record has not been picked up yet: it is stuck in the
// queue before its first step.
func Judge(rec *runstate.Record, deadline time.Time) Verdict {
	if rec == nil {
		return Verdict{Missed: true, State: runstate.Queued, Detail: "not picked up by the sensor yet"}
	}
	if rec.State.Final() {
		end := rec.UpdatedAt
		if rec.State == runstate.Completed {
			end = Ended(*rec)
		}
		if !end.After(deadline) {
			return Verdict{Reason: fmt.Sprintf("run %s at %s, by its deadline %s", rec.State, end.Format(time.RFC3339), deadline.Format(time.RFC3339))}
		}
		if rec.State != runstate.Completed {
			return Verdict{Reason: fmt.Sprintf("run %s after its deadline; its end was reported as such", rec.State)}
		}
		return Verdict{Missed: true, Step: lastStep(*rec), State: rec.State,
			Detail: "completed late, at " + end.Format(time.RFC3339)}
	}
	return Verdict{Missed: true, Step: rec.Step, State: rec.State, Detail: rec.Detail}
}

// Ended is when a finished run ended: the end of its last step, or its record's last update.
func Ended(rec runstate.Record) time.Time {
	var end time.Time
	for _, s := range rec.Steps {
		if e := s.StartedAt.Add(time.Duration(s.DurationMS) * time.Millisecond); e.After(end) {
			end = e
		}
	}
	if end.IsZero() {
		end = rec.UpdatedAt
	}
	return end
}

func lastStep(rec runstate.Record) string {
	if n := len(rec.Steps); n > 0 {
		return rec.Steps[n-1].Step
	}
	return rec.Step
}

// Lookup reads the run's record; nil, nil when there is none yet.
func Lookup(ctx context.Context, runs *runstate.Store, run event.Run) (*runstate.Record, error) {
	rec, err := runs.Get(ctx, run.Pipeline, run.DS, run.RunID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("run state of %s: %w", run.RunID, err)
	}
	return &rec, nil
}
