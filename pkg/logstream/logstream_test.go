package logstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/logstream"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

func TestRunRecordsArePublishedOnTheirSubject(t *testing.T) {
	nc, js := testkit.Connect(t, testkit.NATS(t))
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, logstream.StreamConfig("SLUICE", "etl", logstream.Limits{})); err != nil {
		t.Fatal(err)
	}
	pub := logstream.NewPublisher(nc, "etl", 0)
	log := slog.New(telemetry.WithRunContext(pub.Handler(slog.LevelInfo)))
	log.Info("not about a run")
	log.Debug("below the level", "pipeline", "orders", "ds", "2026-11-25", "run_id", "R1")
	step := log.With("pipeline", "orders", "ds", "2026-11-25", "run_id", "R1", "step", "validator", "attempt", 2)
	step.Error("contract violated", "err", errors.New("row 3: amount: not a number"), "rows", 7)
	runCtx := telemetry.ContextWithRun(ctx, "orders", "2026-11-25", "R1")
	log.With("service", "alerter").InfoContext(runCtx, "alert sent", slog.Group("alert", "channel", "slack"))
	pub.Close(ctx)

	s, err := js.Stream(ctx, logstream.StreamName("SLUICE"))
	if err != nil {
		t.Fatal(err)
	}
	// Records are core-NATS publishes: Close flushes them to the server, which stores them
	// a moment later.
	var info *jetstream.StreamInfo
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		info, err = s.Info(ctx, jetstream.WithSubjectFilter(event.LogFilter("etl", "orders", "2026-11-25")))
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= 2 || time.Now().After(deadline) {
			break
		}
	}
	want := map[string]uint64{"logs.etl.orders.2026-11-25.validator": 1, "logs.etl.orders.2026-11-25.alerter": 1}
	if len(info.State.Subjects) != len(want) || info.State.Msgs != 2 {
		t.Fatalf("subjects %v (%d messages), want %v", info.State.Subjects, info.State.Msgs, want)
	}
	for subj, n := range want {
		if info.State.Subjects[subj] != n {
			t.Errorf("%s: %d records, want %d", subj, info.State.Subjects[subj], n)
		}
	}
	m, err := s.GetLastMsgForSubject(ctx, "logs.etl.orders.2026-11-25.validator")
	if err != nil {
		t.Fatal(err)
	}
	var rec logstream.Record
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Level != "ERROR" || rec.Msg != "contract violated" || rec.RunID != "R1" || rec.Step != "validator" || rec.Attempt != 2 ||
		rec.Attrs["err"] != "row 3: amount: not a number" || rec.Attrs["rows"] != float64(7) {
		t.Errorf("record %+v", rec)
	}
	m, err = s.GetLastMsgForSubject(ctx, "logs.etl.orders.2026-11-25.alerter")
	if err != nil {
		t.Fatal(err)
	}
	rec = logstream.Record{}
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		t.Fatal(err)
	}
	if g, _ := rec.Attrs["alert"].(map[string]any); rec.Service != "alerter" || rec.Step != "" || g["channel"] != "slack" {
		t.Errorf("record from context %+v", rec)
	}
}

// A broker that cannot take records must not hold up the logging step: records are dropped and
// counted instead.
func TestAnUnreachableBrokerDropsRecordsWithoutBlocking(t *testing.T) {
	ns := testkit.NATS(t)
	nc, err := nats.Connect(ns.ClientURL(), nats.ReconnectBufSize(-1), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ns.Shutdown()
	pub := logstream.NewPublisher(nc, "etl", 8)
	log := slog.New(pub.Handler(slog.LevelInfo)).With("pipeline", "orders", "ds", "2026-11-25", "run_id", "R1", "step", "fetcher")
	const n = 20000
	done := make(chan struct{})
	go func() {
		for i := 0; i < n; i++ {
			log.Info("line", "i", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("logging blocked on an unreachable broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pub.Close(ctx)
	if d := pub.Dropped(); d != n {
		t.Errorf("%d records dropped, want all %d", d, n)
	}
}
