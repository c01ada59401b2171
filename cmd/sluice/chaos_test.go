//go:build linux

package main

// The fault-injection suite (docs/reliability.md). SLUICE_CHAOS=fast runs the subset `make test`
// runs; SLUICE_CHAOS=full (`make chaos`) runs every case and, with SLUICE_CHAOS_REPORT=<file>,
// writes the results table there.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/crash"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/samplesource"
)

// chaosResult is one row of the reliability table.
type chaosResult struct {
	fault      string
	runs       int
	correct    int
	duplicates int
	lost       int
	alerts     string
	failed     bool
	// recheck marks a row about runs other rows already counted.
	recheck bool
	// recovery says how long the system took to recover from the fault (cluster cases).
	recovery string
}

type chaosCase struct {
	name string
	fast bool
	run  func(t *testing.T, s *chaosSuite) chaosResult
}

// chaosSuite is the cluster plus what the cases have loaded so far, from which the expected
// orders table follows.
type chaosSuite struct {
	*chaosCluster
	loaded []loadedDS
	ended  []string // run ids of orders runs that completed, for the SLA check
	// eventsDates are the dates the events pipeline completed (cluster cases).
	eventsDates []string
	// cleanTook is how long the clean runs of the cluster cases took, request to completed.
	cleanTook time.Duration
	// fences sums up the fencing history at its last check (cluster cases).
	fences fenceSummary
}

type loadedDS struct {
	ds   string
	opts samplesource.Options
}

// expected is the orders table a clean run of every loaded date gives: the latest version of
// every order, in the partition of the date that delivered it.
func (s *chaosSuite) expected(t *testing.T) map[int64]row {
	t.Helper()
	out := map[int64]row{}
	for _, l := range s.loaded {
		orders, err := samplesource.Orders(l.ds, l.opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range orders {
			if cur, ok := out[o.OrderID]; ok && !o.UpdatedAt.After(cur.updated) {
				continue
			}
			out[o.OrderID] = row{customer: o.CustomerID, amount: o.Amount, updated: o.UpdatedAt, loadDate: l.ds}
		}
	}
	return out
}

// completes checks a run that must complete: its record, the orders table against a clean
// run's, one stored event of each kind, and no alert.
func (s *chaosSuite) completes(t *testing.T, fault, ds, runID string, opts samplesource.Options) chaosResult {
	t.Helper()
	res := chaosResult{fault: fault, runs: 1, alerts: "0 (none due)"}
	rec := s.waitRun("orders", ds, runID, 5*time.Minute)
	if rec.State != runstate.Completed {
		t.Errorf("run %s ended %s at %s: %s", runID, rec.State, rec.Step, rec.Error)
		res.failed = true
		return res
	}
	s.loaded = append(s.loaded, loadedDS{ds, opts})
	s.ended = append(s.ended, runID)
	// A message left unacked by a killed step comes back after the ack wait, possibly after the
	// run completed: wait for it to be dealt with before judging, so a late redelivery that
	// fails or restarts a completed run is seen.
	s.quiesce(t)
	if rec, err := s.runs.Get(context.Background(), "orders", ds, runID); err != nil || rec.State != runstate.Completed {
		t.Errorf("run %s: after the leftover deliveries its record says %s at %s (%v)", runID, rec.State, rec.Step, err)
		res.failed = true
	}
	got, dups := s.table()
	want := s.expected(t)
	for id := range want {
		if _, ok := got[id]; !ok {
			res.lost++
		}
	}
	ev := s.events("orders", ds, runID)
	res.duplicates = dups + eventDuplicates(ev)
	for _, k := range []event.Kind{event.KindRequested, event.KindAvailable, event.KindLanded, event.KindValidated, event.KindPartitioned, event.KindCompleted} {
		if ev[k] == 0 {
			t.Errorf("run %s: no %s event stored", runID, k)
			res.failed = true
		}
	}
	if ev[event.KindFailed] != 0 {
		t.Errorf("run %s completed but %d failed event(s) were published", runID, ev[event.KindFailed])
		res.failed = true
	}
	if len(got) != len(want) || tableChecksum(got) != tableChecksum(want) {
		t.Errorf("orders: %d rows (checksum %s), a clean run gives %d (checksum %s)", len(got), tableChecksum(got), len(want), tableChecksum(want))
		res.failed = true
	}
	if res.duplicates > 0 || res.lost > 0 {
		t.Errorf("run %s: %d duplicates, %d lost rows (events %v)", runID, res.duplicates, res.lost, ev)
		res.failed = true
	}
	if n, m := s.alertsFor(runID); n+m != 0 {
		t.Errorf("run %s completed but raised %d Slack message(s) and %d email(s)", runID, n, m)
		res.alerts = fmt.Sprintf("%d Slack + %d email (none due)", n, m)
		res.failed = true
	}
	if !res.failed {
		res.correct = 1
	}
	return res
}

// failsOnce checks a run that must fail: one failed event, the lease released, exactly one
// Slack message and one email (the alert due), the orders table untouched.
func (s *chaosSuite) failsOnce(t *testing.T, fault, ds, runID, step string) chaosResult {
	t.Helper()
	res := chaosResult{fault: fault, runs: 1}
	before, _ := s.table()
	rec := s.waitRun("orders", ds, runID, 5*time.Minute)
	if rec.State != runstate.Failed || rec.Step != step {
		t.Errorf("run %s ended %s at %s, want failed at %s", runID, rec.State, rec.Step, step)
		res.failed = true
	}
	s.poll("the failure alert of "+runID, 2*time.Minute, func() bool {
		n, m := s.alertsFor(runID)
		return n >= 1 && m >= 1
	})
	ev := s.events("orders", ds, runID)
	res.duplicates = eventDuplicates(ev)
	if ev[event.KindFailed] != 1 || ev[event.KindCompleted] != 0 {
		t.Errorf("run %s: %d failed and %d completed events, want 1 and 0", runID, ev[event.KindFailed], ev[event.KindCompleted])
		res.failed = true
	}
	s.poll("the lease of orders to be free", 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h, held, err := s.leases.Get(ctx, "orders")
		return err == nil && (!held || h.RunID != runID)
	})
	// An extra alert would come from a redelivery (of the failing step's message, or of the
	// failed event): wait until nothing is pending anywhere, then count.
	s.quiesce(t)
	n, m := s.alertsFor(runID)
	res.alerts = fmt.Sprintf("%d Slack + %d email (1 + 1 due)", n, m)
	if n != 1 || m != 1 {
		t.Errorf("run %s: %d Slack message(s) and %d email(s), want exactly one of each", runID, n, m)
		res.duplicates += max(n-1, 0) + max(m-1, 0)
		res.failed = true
	}
	after, dups := s.table()
	if len(after) != len(before) || tableChecksum(after) != tableChecksum(before) || dups != 0 {
		t.Errorf("a failed run changed orders: %d rows -> %d", len(before), len(after))
		res.failed = true
	}
	if !res.failed {
		res.correct = 1
	}
	return res
}

// quiesce waits until no step has a message pending or unacknowledged.
func (s *chaosSuite) quiesce(t *testing.T) {
	t.Helper()
	s.idle(t, append(append([]string(nil), chaosServices[:5]...), "alerter", "alerter-sla", "alerter-completed")...)
}

// alerterIdle waits until the alerter's consumers have no message pending or unacknowledged.
func (s *chaosSuite) alerterIdle(t *testing.T) {
	t.Helper()
	s.idle(t, "alerter", "alerter-sla", "alerter-completed")
}

func (s *chaosSuite) idle(t *testing.T, consumers ...string) {
	t.Helper()
	s.poll(fmt.Sprintf("consumers %v to be idle", consumers), 2*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, name := range consumers {
			info, err := s.js.Consumer(ctx, s.cfg.NATS.Stream, name)
			if err != nil {
				return false
			}
			ci, err := info.Info(ctx)
			if err != nil || ci.NumPending > 0 || ci.NumAckPending > 0 {
				return false
			}
		}
		return true
	})
}

func crashCase(svc, point, what string, fast bool) chaosCase {
	return chaosCase{name: "SIGKILL " + svc + " " + point, fast: fast, run: func(t *testing.T, s *chaosSuite) chaosResult {
		fault := fmt.Sprintf("SIGKILL %s %s (%s)", svc, point, what)
		ds := s.nextDS()
		s.armCrash(svc, point)
		runID := s.request("orders", ds)
		s.waitCrash(svc, "orders", ds, runID)
		return s.completes(t, fault, ds, runID, sourceOpts)
	}}
}

func chaosCases() []chaosCase {
	cases := []chaosCase{
		{name: "clean run", run: func(t *testing.T, s *chaosSuite) chaosResult {
			ds := s.nextDS()
			return s.completes(t, "none (clean run)", ds, s.request("orders", ds), sourceOpts)
		}},
		crashCase("dbtrunner", crash.AfterHandle, "after the upsert, before publishing completed", true),
	}
	for _, c := range []struct{ svc, handle, publish string }{
		{"sensor", "lease taken, before publishing available", "available published, before the ack"},
		{"fetcher", "object written, before publishing landed", "landed published, before the ack"},
		{"validator", "staging loaded, before publishing validated", "validated published, before the ack"},
		{"partitioner", "partition created, before publishing partitioned", "partitioned published, before the ack"},
		{"dbtrunner", "", "completed published, before the ack"},
	} {
		if c.handle != "" {
			cases = append(cases, crashCase(c.svc, crash.AfterHandle, c.handle, false))
		}
		cases = append(cases, crashCase(c.svc, crash.AfterPublish, c.publish, false))
	}
	cases = append(cases,
		chaosCase{name: "SIGKILL alerter after-handle", fast: true, run: func(t *testing.T, s *chaosSuite) chaosResult {
			ds := s.nextDS()
			s.source.set(s.source.broken, ds, true)
			s.armCrash("alerter", crash.AfterHandle)
			runID := s.request("orders", ds)
			s.waitCrash("alerter", "orders", ds, runID)
			return s.failsOnce(t, "SIGKILL alerter after-handle (alerts sent and recorded, before the ack)", ds, runID, "validator")
		}},
		chaosCase{name: "SIGKILL validator after-publish of failed", run: func(t *testing.T, s *chaosSuite) chaosResult {
			ds := s.nextDS()
			s.source.set(s.source.broken, ds, true)
			s.armCrash("validator", crash.AfterPublish)
			runID := s.request("orders", ds)
			s.waitCrash("validator", "orders", ds, runID)
			return s.failsOnce(t, "SIGKILL validator after-publish (failed published, before the term)", ds, runID, "validator")
		}},
		crashCase("fetcher", crash.MidUpload, "part of the source's body read into the upload, nothing stored yet", false),
		crashCase("validator", crash.MidCopy, "rows sent into the staging COPY, not ended or committed", false),
		chaosCase{name: "SIGKILL alerter after-send", run: alerterAfterSend},
		chaosCase{name: "NATS restart", run: natsRestart},
		chaosCase{name: "PostgreSQL backend terminated during COPY", run: pgDuringCopy},
		chaosCase{name: "PostgreSQL backend terminated during the dbt upsert", run: pgDuringUpsert},
		chaosCase{name: "SIGKILL dbt worker mid-upsert", run: dbtWorkerDuringUpsert},
		chaosCase{name: "S3 503 twice", run: func(t *testing.T, s *chaosSuite) chaosResult {
			ds := s.nextDS()
			s.s3.mu.Lock()
			s.s3.fail503, s.s3.refused = 2, 0
			s.s3.mu.Unlock()
			res := s.completes(t, "S3 answers 503 to the first two uploads", ds, s.request("orders", ds), sourceOpts)
			s.s3.mu.Lock()
			refused := s.s3.refused
			s.s3.mu.Unlock()
			if refused != 2 {
				t.Errorf("the proxy refused %d uploads, want 2", refused)
				res.failed, res.correct = true, 0
			}
			return res
		}},
		chaosCase{name: "S3 503 past the retries", run: func(t *testing.T, s *chaosSuite) chaosResult {
			ds := s.nextDS()
			s.s3.mu.Lock()
			s.s3.failAll = true
			s.s3.mu.Unlock()
			defer func() { s.s3.mu.Lock(); s.s3.failAll = false; s.s3.mu.Unlock() }()
			return s.failsOnce(t, "S3 answers 503 to every upload", ds, s.request("orders", ds), "fetcher")
		}},
		chaosCase{name: "S3 503 to reads", run: func(t *testing.T, s *chaosSuite) chaosResult {
			return s.s3Faults(t, "S3 answers 503 to the first two reads of the raw file (validator's GET)", func(p *s3Proxy) { p.failGets = 2 }, 2)
		}},
		chaosCase{name: "S3 503 to HEAD", run: func(t *testing.T, s *chaosSuite) chaosResult {
			return s.s3Faults(t, "S3 answers 503 to the fetcher's HEAD of the landed object", func(p *s3Proxy) { p.failHeads = 1 }, 1)
		}},
		chaosCase{name: "S3 silent", run: silentS3},
		chaosCase{name: "PostgreSQL silent", run: silentPostgres},
		chaosCase{name: "Slack 429", fast: true, run: slackRateLimited},
		chaosCase{name: "Slack down", run: slackDown},
		chaosCase{name: "SLA missed", fast: true, run: slaMissed},
	)
	return cases
}

func TestChaos(t *testing.T) {
	mode := os.Getenv("SLUICE_CHAOS")
	if mode == "" {
		t.Skip("the fault-injection chaosSuite runs with SLUICE_CHAOS=fast (make test) or SLUICE_CHAOS=full (make chaos)")
	}
	if mode != "fast" && mode != "full" {
		t.Fatalf("SLUICE_CHAOS=%q: want fast or full", mode)
	}
	started := time.Now()
	s := &chaosSuite{chaosCluster: newCluster(t)}
	var results []chaosResult
	for _, c := range chaosCases() {
		if mode == "fast" && !c.fast {
			continue
		}
		var res chaosResult
		ok := t.Run(c.name, func(t *testing.T) {
			s.t = t
			res = c.run(t, s)
		})
		s.t = t
		if res.fault == "" {
			res = chaosResult{fault: c.name, failed: true}
		}
		res.failed = res.failed || !ok
		results = append(results, res)
		if !ok && mode == "fast" {
			break // the cluster may be in any state: later cases would only report noise
		}
	}

	// Every orders run that completed did so long before its deadline: its deadline was removed
	// and raised nothing.
	met := chaosResult{fault: "SLA met: every orders run above completed before its deadline", alerts: "0 (none due)", recheck: true}
	ok := t.Run("SLA met: no alert, deadline removed", func(t *testing.T) {
		s.t = t
		s.alerterIdle(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream, err := s.js.Stream(ctx, s.cfg.NATS.Stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, runID := range s.ended {
			met.runs++
			if n, m := s.alertsFor(runID); n+m != 0 {
				t.Errorf("run %s completed in time but has %d alert(s)", runID, n+m)
				met.duplicates += n + m
				continue
			}
			met.correct++
		}
		for _, l := range s.loaded {
			recs, err := s.runs.Runs(ctx, "orders", l.ds)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				_, err := stream.GetLastMsgForSubject(ctx, event.DeadlineSubject(s.cfg.NATS.SubjectPrefix, "orders", l.ds, r.RunID))
				if !errors.Is(err, jetstream.ErrMsgNotFound) {
					t.Errorf("run %s completed but its SLA deadline is still armed (%v)", r.RunID, err)
				}
			}
		}
	})
	s.t = t
	met.failed = !ok
	results = append(results, met)

	t.Run("no secret in any log line or alert", func(t *testing.T) {
		if hits := s.secretHits(); len(hits) > 0 {
			t.Errorf("secrets leaked: %s", strings.Join(hits, "; "))
		}
	})

	if path := os.Getenv("SLUICE_CHAOS_REPORT"); path != "" {
		dropped := 0
		for _, text := range s.logs() {
			dropped += strings.Count(text, "dropping a leftover delivery")
		}
		if err := writeReport(path, mode, results, time.Since(started), dropped); err != nil {
			t.Error(err)
		}
	}
}

// alerterAfterSend kills the alerter after the email of a failure went out and before its KV
// record (Slack, first, is recorded). The redelivered event finds Slack recorded and sends the
// email again: the one window the alerter leaves. The copy carries the same Message-ID, which
// mail systems show once, so the reader sees one Slack message and one email.
func alerterAfterSend(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	s.source.set(s.source.broken, ds, true)
	s.armCrash("alerter", crash.AfterSend+":2") // the second send: the email, after Slack
	runID := s.request("orders", ds)
	s.waitCrash("alerter", "orders", ds, runID)
	fault := "SIGKILL alerter after-send (the email accepted by SMTP, before its KV record)"
	res := chaosResult{fault: fault, runs: 1}
	rec := s.waitRun("orders", ds, runID, 3*time.Minute)
	s.poll("the email after the restart", 2*time.Minute, func() bool { _, m := s.alertsFor(runID); return m >= 2 })
	s.quiesce(t)
	n, m := s.alertsFor(runID)
	ids := map[string]bool{}
	for _, msg := range s.smtp.Messages() {
		if strings.Contains(string(msg.Data), runID) {
			ids[messageID(msg.Data)] = true
		}
	}
	res.alerts = fmt.Sprintf("%d Slack + %d email deliveries, %d distinct Message-ID (1 + 1 due)", n, m, len(ids))
	ev := s.events("orders", ds, runID)
	res.duplicates = eventDuplicates(ev) + max(n-1, 0) + max(len(ids)-1, 0)
	if rec.State != runstate.Failed || ev[event.KindFailed] != 1 || n != 1 || len(ids) != 1 || m > 2 {
		t.Errorf("run %s: state %s, %d failed event(s), %d Slack, %d email(s) with %d Message-ID(s); want failed, 1, 1, at most 2 with 1",
			runID, rec.State, ev[event.KindFailed], n, m, len(ids))
		res.failed = true
	} else {
		res.correct = 1
	}
	return res
}

// messageID is an email's Message-ID header.
func messageID(data []byte) string {
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Message-ID:"); ok {
			return strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Message-Id:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// s3Faults makes the S3 proxy refuse some raw-file requests (set, under its lock) and checks
// that the run completes anyway and that the proxy refused want of them.
func (s *chaosSuite) s3Faults(t *testing.T, fault string, set func(*s3Proxy), want int) chaosResult {
	ds := s.nextDS()
	s.s3.mu.Lock()
	s.s3.refused = 0
	set(s.s3)
	s.s3.mu.Unlock()
	res := s.completes(t, fault, ds, s.request("orders", ds), sourceOpts)
	s.s3.mu.Lock()
	refused := s.s3.refused
	s.s3.failGets, s.s3.failHeads = 0, 0
	s.s3.mu.Unlock()
	if refused != want {
		t.Errorf("the proxy refused %d requests, want %d", refused, want)
		res.failed, res.correct = true, 0
	}
	return res
}

// retried waits until the run's record shows a step cancelled at its deadline.
func (s *chaosSuite) retried(runID, ds, step string) {
	s.poll(step+" cancelled at its deadline", 3*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := s.runs.Get(ctx, "orders", ds, runID)
		return err == nil && r.Step == step && strings.Contains(r.Error, "and was cancelled")
	})
}

// silentS3 makes S3 accept the fetcher's requests for the raw file and never answer: the
// fetcher's step deadline (30s) cancels the upload, and the retry, with S3 answering again,
// completes the run.
func silentS3(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	speak := s.s3.silence()
	defer speak()
	runID := s.request("orders", ds)
	s.retried(runID, ds, "fetcher")
	speak()
	return s.completes(t, "S3 accepts connections and never answers (the fetcher's deadline cancels it; retried)", ds, runID, sourceOpts)
}

// silentPostgres makes PostgreSQL accept connections and never answer once the file has
// landed: the validator's statements hang until its step deadline (30s) cancels them, and the
// retry, with PostgreSQL answering again, completes the run.
func silentPostgres(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	s.s3.mu.Lock()
	s.s3.pauseGets = nil
	s.s3.mu.Unlock()
	paused, release := s.s3.holdDownloads() // hold the validator until PostgreSQL is silent
	defer release()
	runID := s.request("orders", ds)
	select {
	case <-paused:
	case <-time.After(3 * time.Minute):
		t.Fatal("the validator never downloaded the raw file")
	}
	s.pgP.freeze()
	defer s.pgP.thaw()
	release()
	s.retried(runID, ds, "validator")
	s.pgP.thaw()
	return s.completes(t, "PostgreSQL accepts connections and never answers (the validator's deadline cancels it; retried)", ds, runID, sourceOpts)
}

func natsRestart(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	runID := s.request("orders", ds)
	// Mid-run: once the file is validated, the broker dies without a chance to flush (its
	// store syncs every write), and comes back on the same port and store.
	s.poll("the run to reach validated", 3*time.Minute, func() bool {
		return s.events("orders", ds, runID)[event.KindValidated] > 0
	})
	s.stopNATS(syscall.SIGKILL)
	time.Sleep(time.Second) // the services see the broker gone, not a blip
	s.startNATS()
	return s.completes(t, "NATS server SIGKILLed after validated and restarted (file store, sync_interval: always)", ds, runID, sourceOpts)
}

// pgDuringCopy holds the validator's download of the raw file halfway, so its COPY is open with
// half the rows sent, then terminates that backend.
func pgDuringCopy(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	paused, release := s.s3.holdDownloads()
	defer release()
	runID := s.request("orders", ds)
	select {
	case <-paused:
	case <-time.After(3 * time.Minute):
		t.Fatal("the validator never downloaded the raw file")
	}
	pid := s.backend(t, "COPY%staging_orders%", 30*time.Second)
	s.terminate(t, pid)
	res := chaosResult{fault: "PostgreSQL backend terminated during the validator's COPY"}
	// The aborted load left nothing: the slice is empty until the retry loads all of it (the
	// retry waits at least a second, and its download is held until release()).
	if n := s.count("SELECT count(*) FROM staging_orders WHERE load_date = $1::date", ds); n != 0 {
		t.Errorf("staging holds %d rows of %s after the aborted COPY: a partial load", n, ds)
		res.failed = true
	}
	release()
	r := s.completes(t, res.fault, ds, runID, sourceOpts)
	r.failed = r.failed || res.failed
	if res.failed {
		r.correct = 0
	}
	return r
}

// pgDuringUpsert blocks writes to the ds partition's siblings while dbt upserts, so dbt's delete
// waits on the lock; terminating it then aborts the upsert mid-transaction.
func pgDuringUpsert(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	before, _ := s.table()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	runID := s.request("orders", ds)
	s.poll("the run to reach partitioned", 3*time.Minute, func() bool {
		return s.events("orders", ds, runID)[event.KindPartitioned] > 0
	})
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// EXCLUSIVE lets dbt read the table but not write it: the upsert's delete waits here.
	if _, err := tx.Exec(ctx, "LOCK TABLE orders IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	pid := s.backend(t, "%delete from%orders%", 3*time.Minute)
	s.terminate(t, pid)
	res := chaosResult{fault: "PostgreSQL backend terminated during the dbt upsert"}
	mid, _ := s.table()
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if len(mid) != len(before) || tableChecksum(mid) != tableChecksum(before) {
		t.Errorf("orders changed by the aborted upsert: %d rows -> %d", len(before), len(mid))
		res.failed = true
	}
	r := s.completes(t, res.fault, ds, runID, sourceOpts)
	r.failed = r.failed || res.failed
	if res.failed {
		r.correct = 0
	}
	return r
}

// dbtWorkerDuringUpsert SIGKILLs the dbt-runner's warm dbt worker (its Python child process)
// while the orders model's upsert waits for a lock inside its transaction: the transaction dies
// with the connection, orders is unchanged, the step fails as transient and the retry, in a fresh
// worker, completes the run.
func dbtWorkerDuringUpsert(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	before, _ := s.table()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	runID := s.request("orders", ds)
	s.poll("the run to reach partitioned", 3*time.Minute, func() bool {
		return s.events("orders", ds, runID)[event.KindPartitioned] > 0
	})
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE orders IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	s.poll("the orders model to wait for the lock", 3*time.Minute, func() bool {
		return s.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%node=model.sluice.orders%'`) > 0
	})
	res := chaosResult{fault: "SIGKILL the dbt-runner's dbt worker during the upsert (inside its transaction)"}
	worker := childWith(t, s.procs["dbtrunner"].cmd.Process.Pid, "worker.py")
	if err := syscall.Kill(worker, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Its backend still waits for the lock; once it has it, it finds its client gone and rolls
	// back (nothing else was sent). completes checks the table the retry leaves.
	mid, _ := s.table()
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if len(mid) != len(before) || tableChecksum(mid) != tableChecksum(before) {
		t.Errorf("orders changed by the killed upsert: %d rows -> %d", len(before), len(mid))
		res.failed = true
	}
	r := s.completes(t, res.fault, ds, runID, sourceOpts)
	r.failed = r.failed || res.failed
	if res.failed {
		r.correct = 0
	}
	return r
}

// childWith returns the pid of the child process of parent whose command line contains arg.
func childWith(t *testing.T, parent int, arg string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		if cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); strings.Contains(string(cmdline), arg) {
			return pid
		}
	}
	t.Fatalf("no child of process %d runs %s", parent, arg)
	return 0
}

// backend returns the pid of the test database's backend running a query like pattern.
func (s *chaosSuite) backend(t *testing.T, pattern string, within time.Duration) int64 {
	t.Helper()
	var pid int64
	s.poll("a backend running "+pattern, within, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.admin)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		err = conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND pid <> pg_backend_pid() AND state = 'active' AND query ILIKE $1 LIMIT 1`, pattern).Scan(&pid)
		return err == nil
	})
	return pid
}

func (s *chaosSuite) terminate(t *testing.T, pid int64) {
	t.Helper()
	if n := s.count("SELECT count(*) FROM (SELECT pg_terminate_backend($1::int)) AS x WHERE true", pid); n != 1 {
		t.Fatalf("terminate backend %d", pid)
	}
}

func slackRateLimited(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	s.source.set(s.source.broken, ds, true)
	s.slackP.rateLimit(1, 2)
	defer s.slackP.rateLimit(0, 0)
	runID := s.request("orders", ds)
	res := s.failsOnce(t, "Slack answers 429 with Retry-After: 2", ds, runID, "validator")
	limited, posted := s.slackP.times()
	if len(limited) != 1 || len(posted) != 1 {
		t.Errorf("Slack saw %d rate-limited and %d accepted posts, want 1 and 1", len(limited), len(posted))
		res.failed, res.correct = true, 0
	} else if gap := posted[0].Sub(limited[0]); gap < 2*time.Second {
		t.Errorf("the message was posted %s after the 429, before Retry-After (2s)", gap)
		res.failed, res.correct = true, 0
	} else {
		res.fault += fmt.Sprintf(" (posted %.1fs after the 429)", posted[0].Sub(limited[0]).Seconds())
	}
	return res
}

func slackDown(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	s.source.set(s.source.broken, ds, true)
	s.slack.Fail("503")
	defer s.slack.Fail("")
	runID := s.request("orders", ds)
	res := chaosResult{fault: "Slack answers 503 to every post", runs: 1}
	rec := s.waitRun("orders", ds, runID, 3*time.Minute)
	s.poll("the failure email", 2*time.Minute, func() bool { _, m := s.alertsFor(runID); return m >= 1 })
	s.alerterIdle(t) // the alerter retried Slack until its retries ran out
	n, m := s.alertsFor(runID)
	res.alerts = fmt.Sprintf("%d Slack + %d email (email due; Slack down)", n, m)
	if rec.State != runstate.Failed || m != 1 || n != 0 {
		t.Errorf("run %s: state %s, %d email(s), %d Slack message(s); want failed, 1 email, 0 Slack", runID, rec.State, m, n)
		res.failed = true
	} else {
		res.correct = 1
	}
	return res
}

// slaMissed holds a run of the late pipeline at its sensor past its deadline, restarting the
// broker and every service before the deadline: the deadline, a stored schedule, still fires,
// and exactly one SLA alert names the sensor.
func slaMissed(t *testing.T, s *chaosSuite) chaosResult {
	ds := s.nextDS()
	requested := time.Now()
	runID := s.request("late", ds)
	res := chaosResult{fault: "run held at the sensor past its SLA (broker and all services restarted before the deadline)", runs: 1}
	s.poll("the late run to wait at the sensor", time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := s.runs.Get(ctx, "late", ds, runID)
		return err == nil && r.Step == "sensor"
	})
	for _, svc := range chaosServices {
		_ = s.procs[svc].cmd.Process.Kill()
		<-s.procs[svc].done
	}
	s.stopNATS(syscall.SIGKILL)
	s.startNATS()
	for _, svc := range chaosServices {
		s.start(svc)
	}
	if time.Since(requested) > lateSLA {
		t.Logf("the restarts took %s, past the %s deadline: the deadline fired while nothing ran", time.Since(requested), lateSLA)
	}
	s.poll("the SLA alert", 2*time.Minute, func() bool { n, m := s.alertsFor(runID); return n >= 1 && m >= 1 })
	if elapsed := time.Since(requested); elapsed < lateSLA {
		t.Errorf("SLA alert after %s, before the %s deadline", elapsed, lateSLA)
	}
	s.alerterIdle(t)
	n, m := s.alertsFor(runID)
	res.alerts = fmt.Sprintf("%d Slack + %d email (1 + 1 due)", n, m)
	var stuck bool
	for _, p := range s.slack.Posts() {
		if strings.Contains(p.Text, runID) && strings.Contains(p.Text, "stuck in sensor") {
			stuck = true
		}
	}
	ev := s.events("late", ds, runID)
	res.duplicates = max(n-1, 0) + max(m-1, 0)
	if n != 1 || m != 1 || !stuck || ev[event.KindSLAMissed] != 1 {
		t.Errorf("run %s: %d Slack message(s) (naming the sensor: %v), %d email(s), %d sla_missed event(s); want one each",
			runID, n, stuck, m, ev[event.KindSLAMissed])
		res.failed = true
	} else {
		res.correct = 1
	}
	return res
}

func writeReport(path, mode string, results []chaosResult, took time.Duration, dropped int) error {
	var b strings.Builder
	b.WriteString(`# Reliability

Written by ` + "`make chaos`" + ` (cmd/sluice/chaos_test.go, SLUICE_CHAOS=` + mode + `): every case runs the six
services as separate processes built with ` + "`-tags chaos`" + ` against a nats-server process (file store,
` + "`sync_interval: always`" + `), PostgreSQL, versitygw (behind a fault proxy), dbt, slacktest (behind a
rate-limiting proxy) and an SMTP server, injects one fault, and checks the final database, stream
and alerts. "Completed correctly" means: the run ended as it must (completed, or failed once with
its alert), ` + "`orders`" + ` equals a clean run's (row count and checksum), each event is stored once, no
` + "`order_id`" + ` appears twice, and exactly the alerts due went out. Duplicates counts duplicate rows,
events stored twice and extra alerts; lost rows counts orders a clean run has and this one lacks.
How the guarantees are built is in the "How it holds" section below the table.

`)
	fmt.Fprintf(&b, "| fault | runs | completed correctly | duplicates | lost rows | alerts |\n|---|---|---|---|---|---|\n")
	var runs, correct, failed int
	for _, r := range results {
		alerts := r.alerts
		if alerts == "" {
			alerts = "—"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s |\n", r.fault, r.runs, r.correct, r.duplicates, r.lost, alerts)
		if !r.recheck {
			runs += r.runs
			correct += r.correct
		}
		if r.failed {
			failed++
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "\n%d runs, %d completed correctly, %d case(s) failed; the suite took %s on %d CPUs (load average at\n", runs, correct, failed, took.Round(time.Second), runtime.NumCPU())
	fmt.Fprintf(&b, "the end: %s). Leftover deliveries of runs that had already ended (a killed step's unacked\n", strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
	fmt.Fprintf(&b, "message coming back after the run completed) dropped by the router: %d. Also checked: no\n", dropped)
	b.WriteString("configured secret (DB password, S3 keys, Slack token, SMTP password) in any log line or alert;\nevery orders run that completed in time had its SLA deadline removed and raised no SLA alert.\nMost of a crash case's time is the consumers' 30 s ack wait before the killed step's message\ncomes back, and dbt.\n\n")
	// The cluster cases' section (TestChaosCluster) stays as that test last wrote it.
	old, _ := os.ReadFile(path)
	if section := clusterSection(string(old)); section != "" {
		b.WriteString(section + "\n")
	}
	b.WriteString(reliabilityNotes)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// reliabilityNotes is the part of docs/reliability.md that explains the mechanisms.
const reliabilityNotes = `## How it holds

- **Retries.** ` + "`pipelines[].retries`" + `: ` + "`max`" + ` retries (default 3), the n-th after ` + "`delay`·`backoff`^(n−1)" + `
  (default 10m, backoff 1), at most ` + "`max_delay`" + ` (default: ` + "`delay`" + `, or 10×` + "`delay`" + ` with a backoff),
  shortened by a random share of at most ` + "`jitter`" + ` (0 to <1; default none) so runs that failed
  together do not come back together. ` + "`retries.steps.<step>`" + ` overrides any of them for one step
  (sensor, fetcher, validator, partitioner, dbtrunner, alerter). The router classifies once: a
  ` + "`flow.Permanent`" + ` error (contract violation, a 4xx from the source other than "not yet", bad config)
  fails the run at once; a lost lease or fenced write fails it as ` + "`fenced`" + `; anything else is
  transient and retried. When the retries are spent the run is marked failed (the record keeps
  the ` + "`failed`" + ` event), its lease released, and only then is ` + "`failed`" + ` published, once (its message
  id is ` + "`<run id>.failed`" + `); ` + "`completed`" + ` likewise. Whoever hears of a run's end (` + "`sluice run`" + `, which
  then exits, a trigger of the same date) finds it recorded and the pipeline free; a step that
  died between the record and the publish publishes the recorded event when its message comes
  back. A run that took the lease and lost it without an end is shown as ` + "`lost`" + ` and its date can
  be requested again. A message whose
  handler never returns (its process dies or hangs every time) is given up by the broker after
  100 deliveries (the sensor's waits excepted); its max-deliveries advisory ends the run the same
  way. A long step (dbt) sends in-progress acks, so it is not redelivered while it runs.
- **Every wait ends.** Connecting to PostgreSQL and S3 at start is bounded by ` + "`connect_timeout`" + `
  (30s), NATS by its client's connect timeout: a dependency that accepts connections and never
  answers fails the start naming it. One delivery of a step is bounded by
  ` + "`pipelines[].deadlines.<step>`" + ` (default 10 × ` + "`lease.ttl`" + `, 30 × for the fetcher and the dbt-runner):
  past it the step is cancelled and retried as transient (class ` + "`timeout`" + ` once the retries are
  spent), so a hung statement or request cannot hold the pipeline.
- **Acknowledged means on disk.** The embedded server runs with ` + "`sync_interval: always`" + ` (every
  write is fsynced before it is acknowledged; the default syncs every two minutes, and Jepsen's
  2025 analysis of NATS 2.12.1 lost acknowledged writes to it) and locks its store directory,
  so a second ` + "`sluice up`" + ` on the same ` + "`nats.data_dir`" + ` refuses to start. On an external server set
  ` + "`jetstream { sync_interval: always }`" + ` in its config yourself, and on a cluster
  ` + "`nats.replicas: 3`" + `: the events stream, the log stream and every KV bucket are then provisioned
  with three replicas, so an acknowledged write is on a quorum's disks.
- **A node lost.** On a cluster (` + "`nats.replicas: 3`" + `, every process given every node's URL:
  ` + "`nats.url: nats://a:4222,nats://b:4222,nats://c:4222`" + `) a write is acknowledged once a quorum
  stored it, so the SIGKILL of any one node loses nothing acknowledged. The streams it led elect
  a new leader among the replicas (about 6 s here), and processes connected to it reconnect to
  another node (each logs its node: ` + "`nats_server`" + ` on start, ` + "`server`" + ` on reconnect). A
  request that went through the dead node, or reached a stream during its election, is never
  answered: every broker request of a step (lease, run state, publish, alert record, SLA
  deadline) is bounded by ` + "`bus.RequestTimeout`" + ` (10 s) instead of the step's deadline
  (minutes), fails as transient and is retried; the effects stay exactly-once as above. A node
  restarted with its store catches up the writes it missed; one whose store is gone rejoins empty
  and copies every stream from its peers (pkg/testkit/cluster, the cluster table above).
- **Fencing survives a lost store.** The fencing token is the lease's KV revision above the
  lease bucket's creation time (seconds since 2024, 31 bits of revision below). Revisions restart
  at 1 when the broker's store is lost and the buckets are recreated, but the new bucket is
  younger, so its tokens are still greater than every token ` + "`sluice_fences`" + ` recorded before the
  loss, and the next run is not refused as fenced. It relies on the clock moving forward between
  the loss and the recreation.
- **Exactly-once effects.** Delivery is at least once; every step is idempotent and keyed by run:
  the sensor re-confirms its own lease, the fetcher rewrites the same key, the validator replaces
  the ds slice in one transaction (delete + COPY), the partitioner creates if not exists, dbt
  deletes and inserts only strictly newer versions in one transaction, and the alerter records
  each (run, kind, channel) in KV. Republished events are dropped by the stream's duplicate window.
  Crash points ` + "`after-handle`" + ` (side effect done, next event not published) and ` + "`after-publish`" + `
  (published, not acked), and inside steps ` + "`mid-upload`" + ` (fetcher), ` + "`mid-copy`" + ` (validator) and
  ` + "`after-send`" + ` (alerter, a channel accepted the alert, not yet recorded) exist only in
  ` + "`-tags chaos`" + ` builds: ` + "`SLUICE_CRASH=<service>:<point>[:<nth>]`" + ` makes that service SIGKILL itself there.
- **Events are claims.** Before a step does or records anything for an event, the router checks
  it against the config: the pipeline is configured, the subject is the event's own, an event
  handled under the lease carries a fencing token (no fence, no write), and the step's own claims
  hold (the fetcher's URL is the configured source's, the validator's object is the landing key).
  A refused event is terminated with one log line and counted; see docs/security.md.
- **Alerts.** One per (run, kind): failed, sla_missed, and the optional success/recovery notices
  (` + "`pipelines[].notices: {success: true, recovery: true}`" + `), deduplicated in the ` + "`sluice_alerts`" + ` bucket
  across replicas and restarts. A Slack 429 parks the message for Retry-After without spending a
  retry; a channel that stays down does not hold back the others. The email's Message-ID is
  ` + "`<run id>.<kind>@sluice`" + `: the one window left (a crash between a channel's send and its KV record)
  can repeat a message, and mail systems show a repeated Message-ID once (an SNS FIFO topic
  deduplicates by ` + "`<run id>.<kind>`" + ` likewise). Channels: Slack, email, and optionally AWS SNS
  (` + "`alerts.sns.topic_arn`" + `). Links: ` + "`alerts.run_url`" + `
  and ` + "`alerts.trace_url`" + ` (` + "`{trace_id}`" + ` is the run's trace).
- **SLA.** ` + "`pipelines[].sla.within`" + `: when a run is requested, a one-shot broker schedule
  (` + "`Nats-Schedule: @at <deadline>`" + `) is stored on ` + "`<prefix>.<pipeline>.deadline.<ds>.<run id>`" + ` with the run's
  ` + "`sla_missed`" + ` subject as target. It is a stored message, so it fires after restarts of every process.
  The alerter removes it when the run completes; if it fires anyway, the alerter reads the run's
  state and alerts only for a run not completed by the deadline, naming the step it is stuck in.
`
