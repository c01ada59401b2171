package flow_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/pkg/sla"
)

func TestRequestArmsTheSLADeadline(t *testing.T) {
	h := newHarness(t, 3)
	ctx := context.Background()
	stream, err := h.js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}

	plain, err := flow.Request(ctx, h.js, h.tp, "etl", "orders", "2026-11-24", "test", flow.WithSLA(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, sla.Subject("etl", "orders", plain.DS, plain.RunID)); err != jetstream.ErrMsgNotFound {
		t.Errorf("a pipeline without an SLA got a deadline (%v)", err)
	}

	scheduled := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	req, err := flow.Request(ctx, h.js, h.tp, "etl", "orders", "2026-11-25", "test",
		flow.WithSLA(&config.SLA{Within: 2 * time.Hour}), flow.WithScheduledAt(scheduled))
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, sla.Subject("etl", "orders", req.DS, req.RunID))
	if err != nil {
		t.Fatalf("no deadline armed: %v", err)
	}
	want := "@at " + scheduled.Add(2*time.Hour).UTC().Format(time.RFC3339)
	if got := m.Header.Get(jetstream.ScheduleHeader); got != want {
		t.Errorf("schedule %q, want %q (2h after the scheduled time)", got, want)
	}
	if got := m.Header.Get(jetstream.ScheduleTargetHeader); got != "etl.orders.sla_missed.2026-11-25" {
		t.Errorf("schedule target %q", got)
	}
}
