package trigger

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
	"github.com/sluice-etl/sluice/pkg/schedule"
)

// HeaderTick marks a tick that sluice published itself (start, unpause) and says why. Ticks
// fired by the server carry jetstream.SchedulerHeader (the schedule's subject) and
// jetstream.ScheduleNextHeader (when it fires next) instead.
const HeaderTick = "Sluice-Tick"

// TickTTL is how long a tick stays in the stream. Ticks carry no state (the interval is worked
// out from the clock and the schedule state), so one that expired unconsumed is not missed: the
// start of the scheduler publishes a tick of its own.
const TickTTL = time.Hour

// Install creates, updates or removes each pipeline's message schedule so the broker fires
// the pipeline's ticks. A schedule already stored with the same headers is left alone, so
// starting more replicas does not move the next fire time.
func Install(ctx context.Context, js jetstream.JetStream, opts bus.Options, pipelines []config.Pipeline) error {
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return fmt.Errorf("install schedules: %w", err)
	}
	for _, p := range pipelines {
		subj := event.ScheduleSubject(opts.SubjectPrefix, p.Name)
		stored, err := stream.GetLastMsgForSubject(ctx, subj)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("install schedule of %s: %w", p.Name, err)
		}
		if p.Schedule == "" {
			if stored != nil {
				if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
					return fmt.Errorf("remove schedule of %s: %w", p.Name, err)
				}
			}
			continue
		}
		sched, err := schedule.Parse(p.Schedule, p.Timezone)
		if err != nil {
			return fmt.Errorf("pipeline %s: %w", p.Name, err)
		}
		m := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: []byte(`{"pipeline":"` + p.Name + `"}`)}
		m.Header.Set(jetstream.ScheduleHeader, sched.Pattern())
		m.Header.Set(jetstream.ScheduleTargetHeader, event.TickSubject(opts.SubjectPrefix, p.Name))
		if tz := sched.TimeZone(); tz != "" {
			m.Header.Set(jetstream.ScheduleTimeZoneHeader, tz)
		}
		m.Header.Set(jetstream.ScheduleTTLHeader, TickTTL.String())
		// The schedule itself must outlive the stream's max age.
		m.Header.Set(jetstream.MsgTTLHeader, "never")
		if stored != nil && sameHeaders(stored.Header, m.Header) {
			continue
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("install schedule %q of %s: %w", p.Schedule, p.Name, err)
		}
	}
	return nil
}

func sameHeaders(stored, want nats.Header) bool {
	for _, k := range []string{jetstream.ScheduleHeader, jetstream.ScheduleTargetHeader, jetstream.ScheduleTimeZoneHeader, jetstream.ScheduleTTLHeader, jetstream.MsgTTLHeader} {
		if stored.Get(k) != want.Get(k) {
			return false
		}
	}
	return true
}

// Kick publishes a tick for pipeline now, saying why (start, unpause). A tick only makes the
// scheduler look at the clock and the schedule state, so an extra one never requests twice.
func Kick(ctx context.Context, js jetstream.JetStream, prefix, pipeline, why string) error {
	m := &nats.Msg{Subject: event.TickSubject(prefix, pipeline), Header: nats.Header{}, Data: []byte(`{"pipeline":"` + pipeline + `"}`)}
	m.Header.Set(HeaderTick, why)
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgTTL(TickTTL)); err != nil {
		return fmt.Errorf("tick %s: %w", pipeline, err)
	}
	return nil
}
