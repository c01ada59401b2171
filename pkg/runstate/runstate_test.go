package runstate_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

func TestAFinalStateIsWrittenOnce(t *testing.T) {
	_, js := testkit.Connect(t, testkit.NATS(t))
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

// Steps report concurrently and late (each step writes "handed on" after the next one already
// wrote "running"): whatever the interleaving, a reader never sees the run move backward, and
// it ends at the furthest stage written.
func TestStateNeverMovesBackwardUnderConcurrentSteps(t *testing.T) {
	_, js := testkit.Connect(t, testkit.NATS(t))
	if err := bus.Provision(t.Context(), js, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	s, err := runstate.New(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	run := event.Run{RunID: "01M8ADKA5TWM9G3AJZJGH6NDNN", Pipeline: "orders", DS: "2024-01-02"}
	steps := []event.Kind{event.KindRequested, event.KindAvailable, event.KindLanded, event.KindValidated, event.KindPartitioned}
	type write struct {
		stage int
		state runstate.State
		step  string
	}
	var writes []write
	for _, k := range steps {
		writes = append(writes, write{runstate.StageOf(k, false), runstate.Queued, string(k)},
			write{runstate.StageOf(k, true), runstate.Running, string(k)})
	}
	stop := make(chan struct{})
	seen := make(chan []int)
	go func() { // a reader polling as `sluice status` does
		var stages []int
		for {
			select {
			case <-stop:
				seen <- stages
				return
			default:
			}
			if rec, err := s.Get(t.Context(), run.Pipeline, run.DS, run.RunID); err == nil {
				stages = append(stages, rec.Stage)
			}
		}
	}()
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(20)+(i%3)*5) * time.Millisecond)
			if err := s.Update(t.Context(), run, func(r *runstate.Record) { r.State, r.Step, r.Stage = w.state, w.step, w.stage }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(stop)
	stages := <-seen
	for i := 1; i < len(stages); i++ {
		if stages[i] < stages[i-1] {
			t.Fatalf("the run moved backward: stage %d after %d (reads %v)", stages[i], stages[i-1], stages)
		}
	}
	rec, err := s.Get(t.Context(), run.Pipeline, run.DS, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	last := writes[len(writes)-1]
	if rec.Stage != last.stage || rec.State != runstate.Running || rec.Step != last.step {
		t.Fatalf("record at stage %d, %s %s; want the furthest write: stage %d, running %s", rec.Stage, rec.State, rec.Step, last.stage, last.step)
	}
}

// Writers of one run's record racing each other (the requester recording the run as queued while
// the sensor and the steps after it move it on) all get their write in: the compare-and-set loop
// backs off between attempts instead of giving up with "too much contention".
func TestConcurrentWritersAllLand(t *testing.T) {
	_, js := testkit.Connect(t, testkit.NATS(t))
	if err := bus.Provision(t.Context(), js, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	s, err := runstate.New(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	run := event.Run{RunID: "01M8ADKA5TWM9G3AJZJGH6NDNP", Pipeline: "orders", DS: "2024-01-03"}
	const writers, each = 12, 10
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := s.Update(t.Context(), run, func(r *runstate.Record) { r.Attempts++ }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rec, err := s.Get(t.Context(), run.Pipeline, run.DS, run.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Attempts != writers*each {
		t.Fatalf("%d writes landed, want %d", rec.Attempts, writers*each)
	}
}
