package lease

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
)

// The queue: runs that wait for a pipeline's lease take it in the order they were requested,
// whoever requested them (a schedule, `sluice run`, trigger, backfill). A waiting run is still a
// parked message redelivered by the broker; what orders the runs is an entry per waiting run in
// the lease bucket, <pipeline>.queue.<request's stream sequence>.<ds>.<run id>, and the rule that
// only the run with the lowest sequence (the head) may take a free lease. The requester adds the
// entry right after its request is stored and before it requests the next date, so a later
// request never finds the queue without the earlier ones; the sensor adds it too (idempotently)
// for a request whose requester died in between. The entry goes when its run takes the lease,
// or when a waiting run finds the head's run ended without taking it (skipped, failed, ...).

// Entry is one run in a pipeline's queue.
type Entry struct {
	Seq   uint64 // stream sequence of the run's requested event: its place in the queue
	DS    string
	RunID string
}

func queueKey(pipeline string, e Entry) string {
	return fmt.Sprintf("%s.queue.%020d.%s.%s", pipeline, e.Seq, e.DS, e.RunID)
}

func queueSubject(pipeline, rest string) string {
	return event.KVSubject(bus.LeaseBucket, pipeline+".queue."+rest)
}

// Join puts the run requested at stream sequence seq into the pipeline's queue (a no-op if it is
// there). It binds the bucket itself, for requesters that hold no Leases.
func Join(ctx context.Context, js jetstream.JetStream, pipeline string, e Entry) error {
	kv, err := js.KeyValue(ctx, bus.LeaseBucket)
	if err != nil {
		return fmt.Errorf("lease bucket: %w", err)
	}
	return join(ctx, kv, pipeline, e)
}

// Join puts a run into the pipeline's queue (a no-op if it is there).
func (l *Leases) Join(ctx context.Context, pipeline string, e Entry) error {
	return join(ctx, l.kv, pipeline, e)
}

func join(ctx context.Context, kv jetstream.KeyValue, pipeline string, e Entry) error {
	return bus.Retry(ctx, func(ctx context.Context) error {
		if _, err := kv.Create(ctx, queueKey(pipeline, e), []byte(e.RunID)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("queue run %s for the lease of %s: %w", e.RunID, pipeline, err)
		}
		return nil
	})
}

// Queue lists the pipeline's queue, head first, in one request to the server (the bucket's
// subjects, not their values).
func (l *Leases) Queue(ctx context.Context, pipeline string) ([]Entry, error) {
	var info *jetstream.StreamInfo
	err := bus.Retry(ctx, func(ctx context.Context) (err error) {
		info, err = l.stream.Info(ctx, jetstream.WithSubjectFilter(queueSubject(pipeline, ">")))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read the lease queue of %s: %w", pipeline, err)
	}
	prefix := queueSubject(pipeline, "")
	var out []Entry
	for subj := range info.State.Subjects {
		parts := strings.Split(strings.TrimPrefix(subj, prefix), ".")
		if len(parts) != 3 {
			continue
		}
		seq, err := strconv.ParseUint(parts[0], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, Entry{Seq: seq, DS: parts[1], RunID: parts[2]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}

// Leave takes a run out of the pipeline's queue. The entry is purged, not deleted, so no
// delete marker stays behind in the bucket.
func (l *Leases) Leave(ctx context.Context, pipeline, runID string) error {
	err := bus.Retry(ctx, func(ctx context.Context) error {
		return l.stream.Purge(ctx, jetstream.WithPurgeSubject(queueSubject(pipeline, "*.*."+runID)))
	})
	if err != nil {
		return fmt.Errorf("take run %s out of the lease queue of %s: %w", runID, pipeline, err)
	}
	return nil
}

// Turn returns the head of the pipeline's queue and how many runs wait ahead of runID. ended
// reports a run that ended without taking the lease; such heads are taken out of the queue
// first, so a run that went away never blocks the ones behind it.
func (l *Leases) Turn(ctx context.Context, pipeline, runID string, ended func(Entry) bool) (head Entry, ahead int, err error) {
	for {
		q, err := l.Queue(ctx, pipeline)
		if err != nil || len(q) == 0 {
			return Entry{}, 0, err
		}
		if q[0].RunID != runID && ended != nil && ended(q[0]) {
			if err := l.Leave(ctx, pipeline, q[0].RunID); err != nil {
				return Entry{}, 0, err
			}
			continue
		}
		for _, e := range q {
			if e.RunID == runID {
				break
			}
			ahead++
		}
		return q[0], ahead, nil
	}
}
