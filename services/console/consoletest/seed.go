// Package consoletest fills a bus with the history of many runs (run records, their events and
// log records) as the services would have left it, for the console's tests and benchmark.
package consoletest

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/logstream"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// Run is one seeded run.
type Run struct {
	Pipeline, DS, RunID string
	State               runstate.State
}

// Seed writes n runs of pipeline, one per date going back from last (every 17th failed at the
// validator, every 23rd retried the fetcher once), with their events and log lines, and returns
// them newest first.
func Seed(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, o bus.Options, pipeline string, last time.Time, n int) ([]Run, error) {
	return seed(ctx, js, nc, o, pipeline, last, n, true)
}

// SeedHistory writes the run records and log lines of Seed but no events, so services running
// on the same bus have nothing to consume: a past that the console shows next to live runs.
func SeedHistory(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, o bus.Options, pipeline string, last time.Time, n int) ([]Run, error) {
	return seed(ctx, js, nc, o, pipeline, last, n, false)
}

func seed(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, o bus.Options, pipeline string, last time.Time, n int, events bool) ([]Run, error) {
	kv, err := js.KeyValue(ctx, bus.RunBucket)
	if err != nil {
		return nil, err
	}
	alerts, err := js.KeyValue(ctx, bus.AlertBucket)
	if err != nil {
		return nil, err
	}
	var out []Run
	base := time.Now().Add(-time.Duration(n) * time.Hour)
	for i := 0; i < n; i++ {
		day := last.AddDate(0, 0, -i)
		ds := day.Format(time.DateOnly)
		req := base.Add(time.Duration(n-i) * time.Hour)
		id := ulid.MustNew(ulid.Timestamp(req), ulid.DefaultEntropy()).String()
		run := event.Run{RunID: id, Pipeline: pipeline, DS: ds, Trigger: "schedule", RequestedAt: req.UTC(), Fence: uint64(1000 + n - i)}
		failed, retried := i%17 == 5, i%23 == 7
		steps := []event.StepResult{}
		t := req.Add(150 * time.Millisecond)
		obj := event.Object{Bucket: "sluice", Key: "raw/" + pipeline + "/" + ds + ".csv", Size: 1_843_200 + int64(i), SHA256: fmt.Sprintf("%064x", i+1), SourceURL: "http://source.test/data/" + ds + ".csv"}
		publish := func(e event.Event) error {
			if !events {
				return nil
			}
			return flow.Publish(ctx, js, o.SubjectPrefix, e)
		}
		logLine := func(step string, attempt int, level, msg string, attrs map[string]any) {
			b, _ := json.Marshal(logstream.Record{Time: t.UTC(), Level: level, Msg: msg, Pipeline: pipeline, DS: ds, RunID: id, Step: step, Attempt: attempt, Attrs: attrs})
			_ = nc.Publish(event.LogSubject(o.SubjectPrefix, pipeline, ds, step), b)
		}
		if err := publish(&event.Requested{Run: run}); err != nil {
			return nil, err
		}
		state := runstate.Completed
		var failErr, failStep string
		for _, step := range []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner"} {
			attempts := 1
			if retried && step == "fetcher" {
				attempts = 2
				logLine(step, 1, "WARN", "step failed; retrying", map[string]any{"err": "GET source: 503 Service Unavailable", "retry_in": "10s"})
				t = t.Add(10 * time.Second)
			}
			logLine(step, attempts, "INFO", "step started", nil)
			if failed && step == "validator" {
				state, failStep = runstate.Failed, step
				failErr = fmt.Sprintf("contract orders: row 4: column amount: %q is not a number", "12,50")
				logLine(step, 1, "ERROR", pipeline+" "+ds+" validator: "+failErr, map[string]any{"class": "permanent"})
				run.Steps = steps
				if err := publish(&event.Failed{Run: run, Step: step, Attempts: 1, Class: "permanent", Error: failErr}); err != nil {
					return nil, err
				}
				break
			}
			d := stepDurations[step] + time.Duration(i%7)*100*time.Millisecond
			steps = append(steps, event.StepResult{Step: step, StartedAt: t.UTC(), DurationMS: d.Milliseconds(), Attempts: attempts})
			t = t.Add(d)
			logLine(step, attempts, "INFO", "step done", map[string]any{"duration_ms": d.Milliseconds()})
			run.Steps = steps
			t = t.Add(40 * time.Millisecond)
			if err := publish(stepEvent(step, run, obj, day, i)); err != nil {
				return nil, err
			}
		}
		rec := runstate.Record{RunID: id, Pipeline: pipeline, DS: ds, State: state, Trigger: "schedule", Steps: steps,
			TraceID: fmt.Sprintf("%032x", i+1), RequestedAt: req.UTC(), UpdatedAt: t.UTC()}
		if state == runstate.Failed { // its alert: one channel refused it once, the other took it
			rec.Step, rec.Attempts, rec.Error, rec.Detail = failStep, 1, failErr, "permanent"
			logLine("alerter", 1, "WARN", "step failed; retrying", map[string]any{"err": "slack: post message: 503 Service Unavailable", "channel": "slack", "alert": "failed"})
		}
		if err := putRecord(ctx, kv, alerts, rec, t.Add(time.Second)); err != nil {
			return nil, err
		}
		out = append(out, Run{Pipeline: pipeline, DS: ds, RunID: id, State: state})
	}
	return out, nc.Flush()
}

// stepDurations are how long each step of a seeded run takes (plus up to 600 ms).
var stepDurations = map[string]time.Duration{"sensor": 2 * time.Second, "fetcher": 900 * time.Millisecond,
	"validator": 1400 * time.Millisecond, "partitioner": 120 * time.Millisecond, "dbtrunner": 6 * time.Second}

// stepEvent is the event a seeded run's step hands the run on with (the i-th run of the seed).
func stepEvent(step string, run event.Run, obj event.Object, day time.Time, i int) event.Event {
	pipeline, partition := run.Pipeline, run.Pipeline+"_"+day.Format("20060102")
	switch step {
	case "sensor":
		return &event.Available{Run: run, URL: obj.SourceURL, Pokes: 1 + i%3}
	case "fetcher":
		return &event.Landed{Run: run, Object: obj}
	case "validator":
		return &event.Validated{Run: run, Object: obj, StagingTable: "staging_" + pipeline, Rows: 10000}
	case "partitioner":
		return &event.Partitioned{Run: run, Object: obj, StagingTable: "staging_" + pipeline, Rows: 10000,
			Table: "public." + pipeline, Partition: partition}
	}
	return &event.Completed{Run: run, Object: obj, Table: "public." + pipeline, Partition: partition,
		Staged: 10000, Inserted: 9000, Updated: 1000, Models: []event.ModelResult{
			{Node: "model.sluice.stg_" + pipeline, Status: "success", Seconds: 0.4, RowsAffected: 10000},
			{Node: "model.sluice." + pipeline, Status: "success", Seconds: 3.1, RowsAffected: 10000}}}
}

// putRecord writes a seeded run's record and, for a failed run, the mark of its alert sent by
// email at sentAt.
func putRecord(ctx context.Context, kv, alerts jetstream.KeyValue, rec runstate.Record, sentAt time.Time) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, runstate.Key(rec.Pipeline, rec.DS, rec.RunID), b); err != nil {
		return err
	}
	if rec.State == runstate.Failed {
		_, err = alerts.Put(ctx, rec.RunID+".failed.email", []byte(sentAt.UTC().Format(time.RFC3339Nano)))
	}
	return err
}
