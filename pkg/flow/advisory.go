package flow

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/telemetry"
)

// The router counts attempts itself and fails a run when its retries are spent, but only while
// its handler returns. A message that kills its handler's process every time (a crash loop), or
// that hangs it past the ack wait, never gets there: the broker stops delivering it after
// bus.MaxDeliveries and publishes a max-deliveries advisory. WatchMaxDeliveries turns that
// advisory into the same end as spent retries: the run is marked failed, `failed` is published
// once (its message id deduplicates it with any the router published) and the lease released.

// maxDeliveriesAdvisory is the part of the broker's advisory sluice reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// WatchMaxDeliveries handles the max-deliveries advisories of the routes' consumers until stop
// is called. Replicas of a service share the work through a queue group; the advisory is a core
// NATS message, so one published while no replica runs is not seen (the message stays in the
// stream, undelivered, and the run stays in its last state).
func (r *Router) WatchMaxDeliveries(ctx context.Context, routes ...Route) (stop func(), err error) {
	nc := r.js.Conn()
	var subs []*nats.Subscription
	var (
		mu       sync.Mutex
		stopped  bool
		inFlight sync.WaitGroup
	)
	// stop also waits for advisories in hand (each bounded by its 30 s), so none outlives Run.
	stop = func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		inFlight.Wait()
	}
	for _, rt := range routes {
		subject := event.MaxDeliveriesAdvisory(r.opts.Stream, rt.durable())
		sub, err := nc.QueueSubscribe(subject, "sluice-"+rt.durable(), func(m *nats.Msg) {
			mu.Lock()
			if stopped {
				mu.Unlock()
				return
			}
			inFlight.Add(1)
			mu.Unlock()
			defer inFlight.Done()
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := r.onMaxDeliveries(hctx, rt, m.Data); err != nil {
				r.log.Error("max-deliveries advisory not handled", "step", rt.Step, "err", err)
			}
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("watch max deliveries of %s: %w", rt.durable(), err)
		}
		subs = append(subs, sub)
	}
	return stop, nil
}

func (r *Router) onMaxDeliveries(ctx context.Context, rt Route, data []byte) error {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(data, &adv); err != nil {
		return fmt.Errorf("decode advisory: %w", err)
	}
	stream, err := r.js.Stream(ctx, r.opts.Stream)
	if err != nil {
		return err
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		return fmt.Errorf("read message %d: %w", adv.StreamSeq, err)
	}
	in, err := event.Decode(rt.Consumes, raw.Data)
	if err != nil {
		return fmt.Errorf("message %d on %s: %w", adv.StreamSeq, raw.Subject, err)
	}
	run := in.Header()
	log := r.log.With("pipeline", run.Pipeline, "ds", run.DS, "run_id", run.RunID, "step", rt.Step)
	cause := fmt.Errorf("the broker gave up after %d deliveries without an ack (the step crashed or hung every time)", adv.Deliveries)
	if terminal(rt.Consumes) {
		// Reporting on a run's end failed for good: nothing more to end.
		log.Error(fmt.Sprintf("%s %s %s: %v", run.Pipeline, run.DS, rt.Step, cause), "class", event.ClassTransient)
		return nil
	}
	// Recorded and released before it is announced, as for spent retries.
	pctx := telemetry.Extract(WithLogger(ctx, log), raw.Header)
	if err := r.Fail(pctx, *run, rt.Step, int(adv.Deliveries), event.ClassTransient, cause); err != nil {
		return err
	}
	log.Error(fmt.Sprintf("%s %s %s: %v", run.Pipeline, run.DS, rt.Step, cause), "class", event.ClassTransient)
	return nil
}
