package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit"
)

const loopConfig = `pipelines:
  - name: orders
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 1s
    lease:
      ttl: 2m
    retries:
      max: 0
`

// A run's end is recorded before it is announced and before `sluice run` exits: a loop of
// failing runs of one date (each `sluice run` its own embedded broker and services, on one
// store) leaves no run in a non-final state and no lease behind, so no run waits behind a dead
// one. Before, `sluice run` could exit between the failed event and the run-state write and
// lease release: the run stayed "queued" and the next one waited out the lease's TTL.
func TestLoopOfFailingRunsLeavesNoRunOpen(t *testing.T) {
	const runs = 50 // about 15 s: each run fails at the validator
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "order_id,customer_id,amount,updated_at\n1,10,12a,2026-11-25T10:00:00Z\n") // a contract violation
	}))
	defer src.Close()
	path, dir := loopSetup(t, src.URL)
	ctx := context.Background()
	for i := 0; i < runs; i++ {
		var out bytes.Buffer
		started := time.Now()
		err := run(ctx, []string{"run", "--config", path, "--pipeline", "orders", "--date", "2026-11-25", "--timeout", "2m"}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "validator failed") {
			t.Fatalf("run %d: err = %v, want the validator's failure\n%s", i+1, err, out.String())
		}
		if strings.Contains(out.String(), "queued behind") {
			t.Fatalf("run %d waited behind an earlier run's lease (after %s):\n%s", i+1, time.Since(started).Round(time.Millisecond), out.String())
		}
	}
	ns := testkit.NATSAt(t, filepath.Join(dir, "nats"), -1)
	nc, js := testkit.Connect(t, ns)
	defer nc.Close()
	store, err := runstate.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := store.Runs(ctx, "orders", "2026-11-25")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != runs {
		t.Fatalf("%d run records for %d runs", len(recs), runs)
	}
	for _, r := range recs {
		if r.State != runstate.Failed {
			t.Errorf("run %s is %s (%s), want failed", r.RunID, r.State, r.Detail)
		}
	}
	leases, err := lease.New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if h, held, err := leases.Get(ctx, "orders"); err != nil || held {
		t.Fatalf("lease still held by %+v (%v)", h, err)
	}
}

// Fencing survives a lost broker store: tokens are KV revisions above the lease bucket's
// creation time, so after the NATS data directory is wiped (every revision restarts at 1) the
// next run's token is still greater than those PostgreSQL recorded, and the run completes
// instead of being refused as fenced.
func TestRunCompletesAfterTheBrokerStoreIsLost(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "order_id,customer_id,amount,updated_at\n1,10,5.00,2026-11-25T10:00:00Z\n2,11,7.50,2026-11-25T11:00:00Z\n")
	}))
	defer src.Close()
	path, dir := loopSetup(t, src.URL)
	ctx := context.Background()
	// Two runs before the loss record a token above the first one's; after the loss the
	// revisions start over, as for the first run.
	for i, ds := range []string{"2026-11-23", "2026-11-24", "2026-11-25"} {
		if i == 2 {
			time.Sleep(1100 * time.Millisecond) // the recreated bucket is created in a later second
			if err := os.RemoveAll(filepath.Join(dir, "nats")); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		if err := run(ctx, []string{"run", "--config", path, "--pipeline", "orders", "--date", ds, "--timeout", "3m"}, &out, &out); err != nil {
			t.Fatalf("run %d (%s): %v\n%s", i+1, ds, err, out.String())
		}
	}
}

// loopSetup writes a config for `sluice run` with its own embedded broker (store in dir/nats)
// against the test's PostgreSQL, S3 and dbt, reading source.
func loopSetup(t *testing.T, source string) (path, dir string) {
	t.Helper()
	s3cfg := testkit.S3(t)
	secrets := testSecrets("", testkit.Postgres(t), s3cfg)
	delete(secrets, "NATS_URL") // sluice run starts its own broker
	setenv(t, secrets)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	dir = t.TempDir()
	c := testConfig{natsListen: listen, natsDir: "nats", bucket: s3cfg.Bucket, dbt: true, rest: fmt.Sprintf(loopConfig, source)}
	return c.writeIn(t, dir), dir
}
