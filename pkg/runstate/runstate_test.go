package runstate_test

import (
	"testing"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/natstest"
	"github.com/sluice-etl/sluice/pkg/runstate"
)

func TestAFinalStateIsWrittenOnce(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Server(t))
	if err := bus.Provision(t.Context(), js, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	s, err := runstate.New(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	run := event.Run{RunID: "01M8ADKA5TWM9G3AJZJGH6NDNM", Pipeline: "orders", DS: "2024-01-01"}
	set := func(st runstate.State, step string) {
		t.Helper()
		if err := s.Update(t.Context(), run, func(r *runstate.Record) { r.State, r.Step = st, step }); err != nil {
			t.Fatal(err)
		}
	}
	set(runstate.Running, "validator")
	if rec, _ := s.Get(t.Context(), run.Pipeline, run.DS, run.RunID); rec.State != runstate.Running {
		t.Fatalf("state %s, want running", rec.State)
	}
	set(runstate.Completed, "dbtrunner")
	// A late delivery of an earlier step, then a late failure: neither changes the end.
	set(runstate.Running, "partitioner")
	set(runstate.Failed, "alerter")
	rec, err := s.Get(t.Context(), run.Pipeline, run.DS, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != runstate.Completed || rec.Step != "dbtrunner" {
		t.Fatalf("record %+v, want completed at dbtrunner", rec)
	}
}
