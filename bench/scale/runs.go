package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/event"
)

// services are the six steps' binaries (cmd/sluice-<name>, `make build`), in flow order.
var services = []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter"}

// steps are the steps whose durations a completed run's event carries, in flow order.
var steps = []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner"}

// env is what the harness was given: scripts/with-infra.sh's servers and the binaries.
type env struct {
	root, dir, bin string // repository, work directory, .sluice/bin
	natsBin        string
	dbt            string
	pgAdmin        string // SLUICE_TEST_DATABASE_URL
	s3Endpoint     string
	source         string // the sample source's base URL
	nodes          int
	leaseTTL       time.Duration
}

// runsResult is one measurement: every pipeline's dates through the services at one replica
// count.
type runsResult struct {
	replicas, pipelines, dates  int
	wall                        time.Duration // first request to last run's end
	ended                       []endedRun
	failed                      int
	cpu                         map[string]time.Duration // per service (all replicas, children included), "broker", "postgres"
	writes                      map[string]uint64        // messages each stream took (its last sequence), KV buckets' streams included
	loadStart, loadEnd, loadMax float64
}

// endedRun is one run's end event, as the broker stored it.
type endedRun struct {
	pipeline, ds string
	requested    time.Time
	stored       time.Time
	failed       bool
	steps        []event.StepResult
}

func pipelineName(i int) string { return fmt.Sprintf("p%03d", i+1) }

func dateOf(i int) string {
	return time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i).Format(time.DateOnly)
}

// writeProject copies the repository's dbt project into dir and adds each generated pipeline's
// models, as `sluice new-pipeline` writes them (the staging view and the upsert are one macro
// call each; key, version and columns come from the contract).
func writeProject(root, dir string, pipelines int) error {
	src := filepath.Join(root, "dbt_project")
	out, err := exec.Command("cp", "-r", src, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy dbt project: %v: %s", err, out)
	}
	for _, junk := range []string{"target", "logs", "dbt_packages"} {
		_ = os.RemoveAll(filepath.Join(dir, junk))
	}
	for i := range pipelines {
		name := pipelineName(i)
		models := filepath.Join(dir, "models", name)
		if err := os.MkdirAll(models, 0o755); err != nil {
			return err
		}
		files := map[string]string{
			"stg_" + name + ".sql": "{{ sluice_staged('" + name + "') }}\n",
			name + ".sql":          "{{ sluice_upsert('" + name + "') }}\n",
			name + ".yml":          fmt.Sprintf(modelsYAML, name),
		}
		for f, text := range files {
			if err := os.WriteFile(filepath.Join(models, f), []byte(text), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// modelsYAML is the models file `sluice new-pipeline` writes.
const modelsYAML = `version: 2

sources:
  - name: sluice
    schema: "{{ var('staging_schema', target.schema) }}"
    tables:
      - name: staging_%[1]s

models:
  - name: stg_%[1]s
    description: The validated rows of one execution date (var ds).
  - name: %[1]s
    description: One row per key, the newest version, partitioned by the contract's partition column.
    data_tests:
      - sluice_unique_key:
          arguments:
            pipeline: %[1]s
`

// writeConfig writes the generated config: pipelines p001... reading the sample source's orders
// files with the built-in orders contract, each into its own staging and target table.
func writeConfig(e *env, path, bucket string, replicas, pipelines int) error {
	var b strings.Builder
	fmt.Fprintf(&b, `nats:
  url: env:NATS_URL
  replicas: %d
postgres:
  url: env:DATABASE_URL
s3:
  endpoint: env:SLUICE_S3_ENDPOINT
  bucket: %s
  access_key: env:SLUICE_S3_ACCESS_KEY
  secret_key: env:SLUICE_S3_SECRET_KEY
  path_style: true
dbt:
  executable: %s
  project_dir: %s
pipelines:
`, replicas, bucket, e.dbt, filepath.Join(e.dir, "dbt_project"))
	for i := range pipelines {
		fmt.Fprintf(&b, `  - name: %s
    contract: orders
    source:
      url: %s/data/{ds}.csv
    sensor:
      poke_interval: 1s
      timeout: 10m
    lease:
      ttl: %s
    retries:
      max: 2
      delay: 5s
`, pipelineName(i), e.source, e.leaseTTL)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// measureRuns runs every pipeline for every date with replicas copies of each service, on a
// fresh broker, database and bucket, and collects each run's end event.
func measureRuns(ctx context.Context, e *env, replicas, pipelines, dates int, timeout time.Duration) (*runsResult, error) {
	dir := filepath.Join(e.dir, fmt.Sprintf("r%d", replicas))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	db := fmt.Sprintf("scale_r%d", replicas)
	if err := adminExec(ctx, e.pgAdmin, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)", "CREATE DATABASE "+db); err != nil {
		return nil, err
	}
	dbURL := strings.Replace(e.pgAdmin, "/postgres?", "/"+db+"?", 1)
	streamReplicas := 1
	if e.nodes >= 3 {
		streamReplicas = 3
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := writeConfig(e, cfgPath, fmt.Sprintf("scale-r%d", replicas), streamReplicas, pipelines); err != nil {
		return nil, err
	}

	b, err := startBroker(ctx, e.natsBin, dir, e.nodes)
	if err != nil {
		return nil, err
	}
	defer b.stop()
	procEnv := append(os.Environ(), "NATS_URL="+b.url(), "DATABASE_URL="+dbURL, "SLUICE_S3_ENDPOINT="+e.s3Endpoint)

	// The stream, the KV buckets, the consumers and the tables; the cluster may still be
	// electing its meta leader, so provisioning is retried for a while.
	err = await(60*time.Second, "sluice provision", func() (bool, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "sluice"), "provision", "--config", cfgPath)
		cmd.Env = procEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			log.Printf("provision: %v: %s", err, strings.TrimSpace(tail(out, 500)))
			time.Sleep(time.Second)
		}
		return err == nil, nil
	})
	if err != nil {
		return nil, err
	}

	var procs []*proc
	byService := map[string][]int{}
	defer func() {
		for _, p := range procs {
			p.stop(45 * time.Second)
		}
	}()
	for _, svc := range services {
		for r := range replicas {
			// Each replica connects to its own node of the cluster (and learns the others).
			url := b.urls[r%len(b.urls)]
			p, err := spawn(dir, fmt.Sprintf("%s-%d", svc, r+1), append(slices.Clone(procEnv), "GOTRACEBACK=none"),
				filepath.Join(e.bin, "sluice-"+svc), "--config", cfgPath, "--nats", url, "--http", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			procs = append(procs, p)
			byService[svc] = append(byService[svc], p.cmd.Process.Pid)
		}
	}
	for _, p := range procs {
		if err := p.waitLog(`"msg":"started"`, 2*time.Minute); err != nil {
			return nil, err
		}
	}

	nc, err := nats.Connect(b.url(), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	want := pipelines * dates
	ends, err := followEnds(ctx, js, want)
	if err != nil {
		return nil, err
	}

	pgPid, err := postmasterPID(ctx, e.pgAdmin)
	if err != nil {
		return nil, err
	}
	cpu0 := map[string]time.Duration{"broker": treeCPU(b.pids()...), "postgres": treeCPU(pgPid)}
	for svc, pids := range byService {
		cpu0[svc] = treeCPU(pids...)
	}
	res := &runsResult{replicas: replicas, pipelines: pipelines, dates: dates, loadStart: loadavg(), loadMax: loadavg()}
	start := time.Now()

	// Each pipeline's dates as one backfill, as a user queues them; a few at once.
	log.Printf("replicas %d: requesting %d pipelines x %d dates", replicas, pipelines, dates)
	errs := make(chan error, pipelines)
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range pipelines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// A backfill that failed part-way is run again: dates already queued are not queued
			// twice. (Under a heavy load at R3, a request's run-state write can lose its
			// compare-and-set race with the steps too often and give up.)
			var err error
			for attempt := range 5 {
				cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "sluice"), "backfill", "--config", cfgPath,
					"--pipeline", pipelineName(i), "--from", dateOf(0), "--to", dateOf(dates-1), "--detach")
				cmd.Env = procEnv
				out, cerr := cmd.CombinedOutput()
				if cerr == nil {
					return
				}
				err = fmt.Errorf("backfill %s: %v: %s", pipelineName(i), cerr, tail(out, 1000))
				log.Printf("attempt %d: %v", attempt+1, err)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	log.Printf("replicas %d: requested in %s; waiting for %d runs", replicas, time.Since(start).Round(time.Millisecond), want)

	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for len(res.ended) < want {
		select {
		case r := <-ends:
			res.ended = append(res.ended, r)
			if r.failed {
				res.failed++
			}
		case <-tick.C:
			res.loadMax = max(res.loadMax, loadavg())
			log.Printf("replicas %d: %d/%d runs ended (%d failed), load %.2f", replicas, len(res.ended), want, res.failed, loadavg())
		case <-deadline:
			return nil, fmt.Errorf("replicas %d: only %d of %d runs ended within %s; logs in %s", replicas, len(res.ended), want, timeout, dir)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	res.loadEnd = loadavg()
	res.cpu = map[string]time.Duration{"broker": treeCPU(b.pids()...) - cpu0["broker"], "postgres": treeCPU(pgPid) - cpu0["postgres"]}
	for svc, pids := range byService {
		res.cpu[svc] = treeCPU(pids...) - cpu0[svc]
	}
	res.writes = map[string]uint64{}
	for name := range js.StreamNames(ctx).Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return nil, err
		}
		res.writes[name] = st.CachedInfo().State.LastSeq
	}
	first := res.ended[0].requested
	last := res.ended[0].stored
	for _, r := range res.ended {
		first = minTime(first, r.requested)
		last = maxTime(last, r.stored)
	}
	res.wall = last.Sub(first)
	if err := checkLoaded(ctx, dbURL, pipelines, dates); err != nil && res.failed == 0 {
		return nil, err
	}
	return res, nil
}

// followEnds delivers every completed and failed event the stream stores from now on.
func followEnds(ctx context.Context, js jetstream.JetStream, want int) (<-chan endedRun, error) {
	cons, err := js.OrderedConsumer(ctx, "SLUICE", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{event.Filter("etl", event.KindCompleted), event.Filter("etl", event.KindFailed)},
	})
	if err != nil {
		return nil, fmt.Errorf("follow run ends: %w", err)
	}
	out := make(chan endedRun, want)
	_, err = cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		var run event.Run
		if err := json.Unmarshal(m.Data(), &run); err != nil {
			return
		}
		out <- endedRun{pipeline: run.Pipeline, ds: run.DS, requested: run.RequestedAt, stored: meta.Timestamp,
			failed: strings.Contains(m.Subject(), "."+string(event.KindFailed)+"."), steps: run.Steps}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// checkLoaded makes sure the runs did their work: every pipeline's target holds rows for every
// date.
func checkLoaded(ctx context.Context, dbURL string, pipelines, dates int) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for i := range pipelines {
		var n int
		q := fmt.Sprintf("SELECT count(DISTINCT load_date) FROM public.%s", pipelineName(i))
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		if n != dates {
			return fmt.Errorf("%s holds rows of %d dates, want %d", pipelineName(i), n, dates)
		}
	}
	return nil
}

func adminExec(ctx context.Context, url string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// postmasterPID is the PostgreSQL server's main process (its backends are its children).
func postmasterPID(ctx context.Context, url string) (int, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	var pid int
	_, err = fmt.Sscan(strings.SplitN(string(b), "\n", 2)[0], &pid)
	return pid, err
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
