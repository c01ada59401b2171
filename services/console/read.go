package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/logstream"
	"github.com/sluice-etl/sluice/pkg/schedule"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// maxRead bounds what one page reads from a stream.
const maxRead = 5000

// readStream returns the messages of stream matching filter, oldest first, at most max (the
// newest max when there are more), through a short-lived consumer that acks nothing.
func readStream(ctx context.Context, js jetstream.JetStream, stream, filter string, max int) ([]jetstream.Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	cfg := jetstream.ConsumerConfig{FilterSubject: filter, AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second, MemoryStorage: true, Replicas: 1}
	cons, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filter, err)
	}
	defer func() {
		go func() { // nobody waits for the delete; InactiveThreshold reaps it if it fails
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name)
		}()
	}()
	pending := int(cons.CachedInfo().NumPending)
	if pending == 0 {
		return nil, nil
	}
	var out []jetstream.Msg
	for len(out) < pending {
		batch, err := cons.Fetch(min(pending-len(out), 1000), jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			return out, err
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return out, err
		}
		if n == 0 {
			break
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out, nil
}

// runEvent is one event of a run, decoded and as stored.
type runEvent struct {
	Kind  event.Kind
	Time  time.Time
	Event event.Event
	JSON  string // indented
	Seq   uint64
}

// runEvents reads the events of a run from the events stream (the subjects of its pipeline and
// date, filtered by run id).
func (c *Console) runEvents(ctx context.Context, pipeline, ds, runID string) ([]runEvent, error) {
	msgs, err := readStream(ctx, c.js, c.cfg.NATS.Stream, event.RunFilter(c.cfg.NATS.SubjectPrefix, pipeline, ds), maxRead)
	if err != nil {
		return nil, err
	}
	var out []runEvent
	for _, m := range msgs {
		_, kind, _, _ := event.ParseSubject(m.Subject())
		var hdr event.Run
		if json.Unmarshal(m.Data(), &hdr) != nil || hdr.RunID != runID {
			continue
		}
		e, err := event.Decode(kind, m.Data())
		if err != nil {
			continue
		}
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, m.Data(), "", "  ")
		ev := runEvent{Kind: kind, Event: e, JSON: pretty.String()}
		if md, err := m.Metadata(); err == nil {
			ev.Time, ev.Seq = md.Timestamp, md.Sequence.Stream
		}
		out = append(out, ev)
	}
	return out, nil
}

// runLogs reads a run's log records from the log stream.
func (c *Console) runLogs(ctx context.Context, pipeline, ds, runID string) ([]logstream.Record, error) {
	msgs, err := readStream(ctx, c.js, logstream.StreamName(c.cfg.NATS.Stream), event.LogFilter(c.cfg.NATS.SubjectPrefix, pipeline, ds), maxRead)
	if err != nil {
		return nil, err
	}
	var out []logstream.Record
	for _, m := range msgs {
		var rec logstream.Record
		if json.Unmarshal(m.Data(), &rec) != nil || rec.RunID != runID {
			continue
		}
		if rec.Service == "" {
			parts := strings.Split(m.Subject(), ".")
			rec.Service = parts[len(parts)-1]
		}
		out = append(out, rec)
	}
	return out, nil
}

// sentAlert is one alert delivered, as the alerter records it (<run id>.<kind>.<channel>), or
// a delivery that failed, as the alerter's log lines on the bus tell it (Outcome "failed").
type sentAlert struct {
	RunID, Kind, Channel string
	Pipeline, DS         string
	At                   time.Time
	Outcome, Error       string
}

// failedAlerts reads the alerter's warnings and errors about deliveries from the log stream.
func (c *Console) failedAlerts(ctx context.Context, pipeline string) ([]sentAlert, error) {
	if pipeline == "" {
		pipeline = "*"
	}
	msgs, err := readStream(ctx, c.js, logstream.StreamName(c.cfg.NATS.Stream), event.LogSubject(c.cfg.NATS.SubjectPrefix, pipeline, "*", "alerter"), 2000)
	if err != nil {
		return nil, err
	}
	var out []sentAlert
	for _, m := range msgs {
		var rec logstream.Record
		if json.Unmarshal(m.Data(), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
			continue
		}
		a := sentAlert{RunID: rec.RunID, Pipeline: rec.Pipeline, DS: rec.DS, At: rec.Time, Outcome: "failed", Error: rec.Msg}
		if e, ok := rec.Attrs["err"].(string); ok {
			a.Error = e
		}
		if ch, ok := rec.Attrs["channel"].(string); ok {
			a.Channel = ch
		}
		if k, ok := rec.Attrs["alert"].(string); ok {
			a.Kind = k
		}
		out = append(out, a)
	}
	return out, nil
}

func (c *Console) sentAlerts(ctx context.Context) ([]sentAlert, error) {
	kv, err := c.js.KeyValue(ctx, bus.AlertBucket)
	if err != nil {
		return nil, fmt.Errorf("alert bucket: %w", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []sentAlert
	for key := range lister.Keys() {
		parts := strings.Split(key, ".")
		if len(parts) != 3 {
			continue
		}
		a := sentAlert{RunID: parts[0], Kind: parts[1], Channel: parts[2], Outcome: "sent"}
		if e, err := kv.Get(ctx, key); err == nil {
			a.At, _ = time.Parse(time.RFC3339Nano, string(e.Value()))
		}
		if r, ok := c.runs.byRunID(a.RunID); ok {
			a.Pipeline, a.DS = r.Pipeline, r.DS
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out, nil
}

// slaMiss is one fired deadline.
type slaMiss struct {
	Pipeline, DS, RunID string
	Deadline, FiredAt   time.Time
}

func (c *Console) slaMisses(ctx context.Context, pipeline string) ([]slaMiss, error) {
	if pipeline == "" {
		pipeline = "*"
	}
	msgs, err := readStream(ctx, c.js, c.cfg.NATS.Stream, event.Subject(c.cfg.NATS.SubjectPrefix, pipeline, event.KindSLAMissed, "*"), 500)
	if err != nil {
		return nil, err
	}
	var out []slaMiss
	for _, m := range msgs {
		var e event.SLAMissed
		if json.Unmarshal(m.Data(), &e) != nil {
			continue
		}
		s := slaMiss{Pipeline: e.Pipeline, DS: e.DS, RunID: e.RunID, Deadline: e.Deadline}
		if md, err := m.Metadata(); err == nil {
			s.FiredAt = md.Timestamp
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FiredAt.After(out[j].FiredAt) })
	return out, nil
}

func (c *Console) leaseHolder(ctx context.Context, pipeline string) (lease.Holder, bool) {
	l, err := lease.New(ctx, c.js)
	if err != nil {
		return lease.Holder{}, false
	}
	h, ok, err := l.Get(ctx, pipeline)
	return h, ok && err == nil
}

func (c *Console) scheduleState(ctx context.Context, pipeline string) trigger.State {
	st, err := trigger.NewStates(ctx, c.js)
	if err != nil {
		return trigger.State{}
	}
	s, _, _ := st.Get(ctx, pipeline)
	return s
}

// nextFire is when the pipeline's schedule fires next (zero without a schedule).
func nextFire(schedExpr, tz string, now time.Time) time.Time {
	if schedExpr == "" {
		return time.Time{}
	}
	s, err := schedule.Parse(schedExpr, tz)
	if err != nil {
		return time.Time{}
	}
	t, _ := s.Next(now)
	return t
}
