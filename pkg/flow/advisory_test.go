package flow_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

// A message whose handler never acks it (its process dies every time) is given up by the broker
// after MaxDeliver deliveries; the advisory fails the run once and frees the lease.
func TestMaxDeliveriesAdvisoryFailsTheRunOnce(t *testing.T) {
	h := newHarness(t, 3)
	ctx := context.Background()
	opts := bus.Options{Stream: "T", SubjectPrefix: "etl"}

	// A consumer like a step's, but quick to give up, so the test need not wait out 100 ack
	// waits of 30 seconds.
	cfg := bus.ConsumerConfig(opts, "crashloop", event.KindLanded)
	cfg.MaxDeliver, cfg.AckWait = 2, 300*time.Millisecond
	cons, err := h.js.CreateOrUpdateConsumer(ctx, "T", cfg)
	if err != nil {
		t.Fatal(err)
	}
	route := flow.Route{Step: "validator", Consumes: event.KindLanded, Durable: "crashloop"}
	stop, err := h.router.WatchMaxDeliveries(ctx, route)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	req := request(t, h.js, h.tp, "orders", "2026-11-25")
	holder, err := h.router.Leases().Acquire(ctx, "orders", req.RunID, req.DS, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	run := req
	run.Fence = holder.Fence
	if err := flow.Publish(ctx, h.js, "etl", &event.Landed{Run: run, Object: event.Object{Bucket: "b", Key: "k", Size: 1, SHA256: strings.Repeat("a", 64), SourceURL: "http://s/x"}}); err != nil {
		t.Fatal(err)
	}
	// Two deliveries, neither acked: the handler "crashed" both times. The broker notices the
	// limit when a worker asks for the next message, as the step's workers always do.
	for i := 0; i < 2; i++ {
		if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
			t.Fatalf("delivery %d: %v", i+1, err)
		}
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(time.Second)); err == nil {
		t.Fatalf("delivered a third time: %s", m.Subject())
	}

	_, e := h.next(t, event.KindFailed)
	f := e.(*event.Failed)
	if f.RunID != req.RunID || f.Step != "validator" || f.Attempts != 2 || f.Class != "transient" {
		t.Errorf("failed event %+v, want run %s failed at validator after 2 deliveries", f, req.RunID)
	}
	h.none(t, event.KindFailed, 500*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, held, _ := h.router.Leases().Get(ctx, "orders")
		rec, err := h.router.Runs().Get(ctx, "orders", req.DS, req.RunID)
		if !held && err == nil && rec.State == runstate.Failed && rec.Step == "validator" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease held %v, run %+v (%v): want the lease released and the run failed", held, rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
