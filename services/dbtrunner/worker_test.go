package dbtrunner_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
	"github.com/sluice-etl/sluice/services/dbtrunner"
)

// TestWorkerStaysWarm: runs go through one long-lived dbt worker that parses the project once:
// the second and third runs (other dates, run ids and fencing tokens) neither start a process nor
// parse, and a worker past its max_runs is replaced by a fresh one before the next run.
func TestWorkerStaysWarm(t *testing.T) {
	t.Parallel()
	f := setupWorker(t, schemaSQL, dbtrunner.WorkerOptions{MaxRuns: 3})
	ctx := t.Context()
	first := f.handle(t, ctx, partitioned(ds1, f.stage(t, ds1, order{1, 10, "10.00", ds1 + "T10:00:00Z"})))
	pid := f.runner.WorkerPID()
	if pid == 0 {
		t.Fatal("no dbt worker runs after a run")
	}
	second := f.handle(t, ctx, partitioned(ds2, f.stage(t, ds2, order{1, 10, "11.00", ds2 + "T10:00:00Z"}, order{2, 20, "20.00", ds2 + "T10:00:00Z"})))
	wantCounts(t, second, 1, 1, 0)
	if got := f.runner.WorkerPID(); got != pid {
		t.Fatalf("the second run used worker %d, the first %d: the worker was not kept", got, pid)
	}
	got := f.orders(t)
	wantRow(t, got, 1, "orders_p20261125", "11.00")
	wantRow(t, got, 2, "orders_p20261125", "20.00")
	if first.DocsKey == second.DocsKey {
		t.Fatal("two runs share a docs key")
	}
	// The builds after the first did not parse: the run's values reached dbt without --vars.
	if n := strings.Count(f.logs.String(), `"parsed":true`); n != 1 {
		t.Fatalf("%d builds parsed the project, want only the first (or the warm-up): logs:\n%s", n, f.logs.String())
	}
	third := f.handle(t, ctx, partitioned(ds2, f.stage(t, ds2, order{1, 10, "11.00", ds2 + "T10:00:00Z"}, order{2, 20, "20.00", ds2 + "T10:00:00Z"})))
	wantCounts(t, third, 0, 0, 2)
	fresh := 0
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && (fresh == 0 || fresh == pid); time.Sleep(50 * time.Millisecond) {
		fresh = f.runner.WorkerPID()
	}
	if fresh == pid || fresh == 0 || !pidGone(pid) {
		t.Fatalf("after max_runs (3) builds the worker is %d, want a fresh one (was %d)", fresh, pid)
	}
	f.wantDocs(t, second)
}

// TestWorkerKilledMidUpsert: the dbt worker SIGKILLed while the upsert waits inside its
// transaction leaves the table as it was; the run fails with a transient error (the router
// retries it), and the retry, in a fresh worker, upserts the day. Cancelling a run in the middle
// of the upsert stops the worker the same way.
func TestWorkerKilledMidUpsert(t *testing.T) {
	t.Parallel()
	f := setup(t, schemaSQL)
	ctx := t.Context()
	f.handle(t, ctx, partitioned(ds1, f.stage(t, ds1, order{1, 10, "10.00", ds1 + "T10:00:00Z"})))
	before := f.orders(t)
	staged := f.stage(t, ds2, order{1, 10, "11.00", ds2 + "T10:00:00Z"}, order{2, 20, "20.00", ds2 + "T10:00:00Z"})

	for _, how := range []string{"SIGKILL", "cancel"} {
		lock := holdOrders(t, f.url)
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := f.runner.Handle(runCtx, pipeline, partitioned(ds2, staged))
			done <- err
		}()
		waitUpsertBlocked(t, f.db)
		pid := f.runner.WorkerPID()
		if how == "SIGKILL" {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		} else {
			cancel()
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: Handle still running a minute after the worker was stopped", how)
		}
		cancel()
		if err == nil || flow.IsPermanent(err) || errors.Is(err, fence.ErrFenced) {
			t.Fatalf("%s: err = %v, want a transient error", how, err)
		}
		if how == "cancel" && !errors.Is(err, context.Canceled) {
			t.Fatalf("cancel: err = %v, want it to wrap context.Canceled", err)
		}
		if strings.Contains(err.Error(), password) {
			t.Fatal("the error holds the password")
		}
		if !pidGone(pid) {
			t.Fatalf("%s: worker %d still runs", how, pid)
		}
		lock.Rollback(context.Background())
		if after := f.orders(t); !mapsEqual(after, before) {
			t.Fatalf("%s: the killed upsert changed orders:\nbefore %v\nafter  %v", how, before, after)
		}
	}
	c := f.handle(t, ctx, partitioned(ds2, staged))
	wantCounts(t, c, 1, 1, 0)
	got := f.orders(t)
	wantRow(t, got, 1, "orders_p20261125", "11.00")
	wantRow(t, got, 2, "orders_p20261125", "20.00")
}

// holdOrders locks orders so dbt may read it but its upsert waits for the lock.
func holdOrders(t *testing.T, url string) pgx.Tx {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "LOCK TABLE orders IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitUpsertBlocked waits until a statement of the orders model waits for a lock.
func waitUpsertBlocked(t *testing.T, db *pgx.Conn) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var n int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%node=model.sluice.orders%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("the orders model never waited for the lock")
}

// pidGone reports whether process pid has exited (polling briefly).
func pidGone(pid int) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			return true
		}
	}
	return false
}
