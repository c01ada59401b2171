//go:build linux

package main

// The fault-injection suite on a three-node JetStream cluster (TestChaosCluster, SLUICE_CHAOS=full,
// `make chaos`): `sluice provision` creates the events stream, the log stream and every KV bucket
// at R3, two replicas of each service run on different nodes, and each case runs two dates of
// orders (the second queued behind the first's lease) interleaved with a date of events while a
// node dies: the events stream's leader, the lease bucket's leader, a node holding services'
// connections, a node restarted with its store, a node restarted with its store wiped. Every run
// must complete exactly once with the tables a clean run gives, no event stored twice, and the
// fencing tokens written to PostgreSQL strictly increasing from one run of a pipeline to the next.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/logstream"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/testkit/cluster"
)

// connect opens a connection to the test database as its admin.
func (c *chaosCluster) connect(t *testing.T, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, c.admin)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// clusterRun is one requested run.
type clusterRun struct{ pipeline, ds, runID string }

func TestChaosCluster(t *testing.T) {
	if os.Getenv("SLUICE_CHAOS") != "full" {
		t.Skip("the cluster cases of the fault-injection suite run with SLUICE_CHAOS=full (make chaos)")
	}
	started := time.Now()
	s := &chaosSuite{chaosCluster: newClusterOf(t, chaosTopology{nodes: 3, replicas: 2})}
	s.recordFences(t)
	if !t.Run("provisioned at R3", s.provisionedR3) {
		t.FailNow()
	}
	var results []chaosResult
	for _, c := range []struct {
		name string
		run  func(*testing.T, *chaosSuite) chaosResult
	}{
		{"clean runs", clusterClean},
		{"SIGKILL the stream leader", killStreamLeader},
		{"SIGKILL the lease bucket's leader", killLeaseLeader},
		{"SIGKILL a node holding services' connections", killServiceNode},
		{"node restarted with its store", func(t *testing.T, s *chaosSuite) chaosResult { return nodeDownAndBack(t, s, false) }},
		{"node restarted with its store wiped", func(t *testing.T, s *chaosSuite) chaosResult { return nodeDownAndBack(t, s, true) }},
	} {
		var res chaosResult
		ok := t.Run(c.name, func(t *testing.T) {
			s.t = t
			s.spread(t)
			res = c.run(t, s)
		})
		s.t = t
		if res.fault == "" {
			if ok {
				continue // not selected by -run
			}
			res = chaosResult{fault: c.name, failed: true}
		}
		res.failed = res.failed || !ok
		results = append(results, res)
		if !ok {
			break // a node may still be down: later cases would only report noise
		}
	}
	t.Run("no secret in any log line or alert", func(t *testing.T) {
		if hits := s.secretHits(); len(hits) > 0 {
			t.Errorf("secrets leaked: %s", strings.Join(hits, "; "))
		}
	})
	if path := os.Getenv("SLUICE_CHAOS_REPORT"); path != "" {
		if err := writeClusterReport(path, results, time.Since(started), s.fences); err != nil {
			t.Error(err)
		}
	}
}

// provisionedR3 checks what `sluice provision` made: every stream (events, logs, each KV
// bucket's) and every durable consumer on three nodes.
func (s *chaosSuite) provisionedR3(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	streams := []string{s.cfg.NATS.Stream, logstream.StreamName(s.cfg.NATS.Stream)}
	for _, b := range bus.Buckets() {
		streams = append(streams, "KV_"+b.Bucket)
	}
	for _, name := range streams {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			t.Errorf("stream %s: %v", name, err)
			continue
		}
		info := st.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 || info.Config.Storage.String() != "File" {
			t.Errorf("stream %s: %d replicas configured, cluster %+v, storage %s; want 3 on file", name, info.Config.Replicas, info.Cluster, info.Config.Storage)
		}
	}
	for _, c := range bus.Consumers(bus.Options{Stream: s.cfg.NATS.Stream, SubjectPrefix: s.cfg.NATS.SubjectPrefix}) {
		cons, err := s.js.Consumer(ctx, s.cfg.NATS.Stream, c.Config.Durable)
		if err != nil {
			t.Errorf("consumer %s: %v", c.Config.Durable, err)
			continue
		}
		if info := cons.CachedInfo(); info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("consumer %s: cluster %+v, want a leader and two replicas", c.Config.Durable, info.Cluster)
		}
	}
}

// nodeOf is the node a service instance talks to: the server of its start, or of its latest
// reconnect (pkg/app and pkg/bus log both).
func (c *chaosCluster) nodeOf(inst string) string {
	f, err := os.Open(c.procs[inst].log)
	if err != nil {
		return ""
	}
	defer f.Close()
	node := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg        string `json:"msg"`
			NATSServer string `json:"nats_server"`
			Server     string `json:"server"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch line.Msg {
		case "started":
			node = line.NATSServer
		case "nats reconnected":
			node = line.Server
		}
	}
	return node
}

// reconnects counts an instance's reconnects so far.
func (c *chaosCluster) reconnects(inst string) int {
	b, _ := os.ReadFile(c.procs[inst].log)
	return strings.Count(string(b), `"msg":"nats reconnected"`)
}

// spread puts the two replicas of every service on different nodes: a client picks a random
// server of its list, so a replica that landed on its sibling's node is started again.
func (s *chaosSuite) spread(t *testing.T) {
	t.Helper()
	for _, svc := range chaosServices {
		for try := 0; s.nodeOf(svc) == s.nodeOf(instance(svc, 2)); try++ {
			if try == 10 {
				t.Fatalf("the replicas of %s both connect to %s after 10 restarts", svc, s.nodeOf(svc))
			}
			s.stop(instance(svc, 2))
			s.start(instance(svc, 2))
		}
	}
	var placed []string
	for _, n := range s.nodes.Nodes {
		placed = append(placed, n.Name+": "+strings.Join(s.instancesOn(n), " "))
	}
	t.Logf("services by node: %s", strings.Join(placed, "; "))
}

// instancesOn lists the service instances connected to node n.
func (c *chaosCluster) instancesOn(n *cluster.Node) []string {
	var on []string
	for inst := range c.procs {
		if c.nodeOf(inst) == n.Name {
			on = append(on, inst)
		}
	}
	sort.Strings(on)
	return on
}

// requestRuns requests two dates of orders (the second waits for the first's lease) and one of
// events, at once.
func (s *chaosSuite) requestRuns() []clusterRun {
	d1, d2 := s.nextDS(), s.nextDS()
	var runs []clusterRun
	for _, r := range []clusterRun{{pipeline: "orders", ds: d1}, {pipeline: "events", ds: d1}, {pipeline: "orders", ds: d2}} {
		r.runID = s.request(r.pipeline, r.ds)
		runs = append(runs, r)
	}
	return runs
}

// reached waits until a run has stored an event of kind.
func (s *chaosSuite) reached(r clusterRun, kind event.Kind) {
	s.poll(fmt.Sprintf("%s %s to reach %s", r.pipeline, r.ds, kind), 4*time.Minute, func() bool {
		return s.events(r.pipeline, r.ds, r.runID)[kind] > 0
	})
}

// clusterCompletes checks that every run completed exactly once: its record completed (also
// once the leftover deliveries were dealt with), one event of each kind stored, none failed, no
// alert; that orders and events equal what clean runs of every date so far give; and that the
// fencing tokens PostgreSQL saw increase strictly from run to run. It returns the row and the
// longest run's time, request to completed.
func (s *chaosSuite) clusterCompletes(t *testing.T, fault string, runs []clusterRun) (chaosResult, time.Duration) {
	t.Helper()
	res := chaosResult{fault: fault, runs: len(runs), alerts: "0 (none due)"}
	var took time.Duration
	var orders []runstate.Record
	bad := map[string]bool{}
	for _, r := range runs {
		rec := s.waitRun(r.pipeline, r.ds, r.runID, 6*time.Minute)
		if rec.State != runstate.Completed {
			t.Errorf("%s run %s of %s ended %s at %s: %s", r.pipeline, r.runID, r.ds, rec.State, rec.Step, rec.Error)
			bad[r.runID] = true
			continue
		}
		took = max(took, rec.UpdatedAt.Sub(rec.RequestedAt))
		if r.pipeline == "orders" {
			orders = append(orders, rec)
		} else {
			s.eventsDates = append(s.eventsDates, r.ds)
		}
		s.ended = append(s.ended, r.runID)
	}
	// Runs of one pipeline end in the order they held the lease, which is the order they loaded.
	sort.Slice(orders, func(i, j int) bool { return orders[i].UpdatedAt.Before(orders[j].UpdatedAt) })
	for _, rec := range orders {
		s.loaded = append(s.loaded, loadedDS{rec.DS, sourceOpts})
	}
	s.quiesce(t)
	for _, r := range runs {
		if bad[r.runID] {
			continue
		}
		if rec, err := s.runs.Get(context.Background(), r.pipeline, r.ds, r.runID); err != nil || rec.State != runstate.Completed {
			t.Errorf("run %s: after the leftover deliveries its record says %s at %s (%v)", r.runID, rec.State, rec.Step, err)
			bad[r.runID] = true
		}
		ev := s.events(r.pipeline, r.ds, r.runID)
		if d := eventDuplicates(ev); d > 0 {
			t.Errorf("%s run %s: events stored more than once: %v", r.pipeline, r.runID, ev)
			res.duplicates += d
			bad[r.runID] = true
		}
		for _, k := range []event.Kind{event.KindRequested, event.KindAvailable, event.KindLanded, event.KindValidated, event.KindPartitioned, event.KindCompleted} {
			if ev[k] != 1 {
				t.Errorf("%s run %s: %d %s event(s) stored, want 1", r.pipeline, r.runID, ev[k], k)
				bad[r.runID] = true
			}
		}
		if ev[event.KindFailed] != 0 {
			t.Errorf("%s run %s completed but %d failed event(s) were published", r.pipeline, r.runID, ev[event.KindFailed])
			bad[r.runID] = true
		}
		if n, m := s.alertsFor(r.runID); n+m != 0 {
			t.Errorf("run %s completed but raised %d Slack message(s) and %d email(s)", r.runID, n, m)
			res.alerts = fmt.Sprintf("%d Slack + %d email (none due)", n, m)
			bad[r.runID] = true
		}
	}
	tables := true
	got, dups := s.table()
	want := s.expected(t)
	for id := range want {
		if _, ok := got[id]; !ok {
			res.lost++
		}
	}
	res.duplicates += dups
	if len(got) != len(want) || tableChecksum(got) != tableChecksum(want) || dups > 0 {
		t.Errorf("orders: %d rows (checksum %s, %d duplicate ids), clean runs give %d (checksum %s)", len(got), tableChecksum(got), dups, len(want), tableChecksum(want))
		tables = false
	}
	before := t.Failed()
	diffEvents(t, readEventsTable(t, s.admin), expectedEvents(t, sourceOpts, s.eventsDates))
	if !before && t.Failed() {
		tables = false
	}
	if !s.fencesIncrease(t) {
		tables = false
	}
	for _, r := range runs {
		if !bad[r.runID] && tables {
			res.correct++
		}
	}
	res.failed = res.correct != res.runs
	return res, took
}

// recordFences logs every write to sluice_fences (a trigger in the writer's own transaction), so
// the suite sees each token a step wrote under, in commit order, not only the latest.
func (s *chaosSuite) recordFences(t *testing.T) {
	t.Helper()
	s.poll("sluice_fences to exist", time.Minute, func() bool {
		return s.count("SELECT count(*) FROM pg_class WHERE oid = to_regclass('public.sluice_fences')") == 1
	})
	for _, stmt := range []string{
		`CREATE TABLE chaos_fence_log (seq bigserial PRIMARY KEY, pipeline text NOT NULL, token bigint NOT NULL, run_id text NOT NULL)`,
		`CREATE FUNCTION chaos_fence_log() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO chaos_fence_log (pipeline, token, run_id) VALUES (NEW.pipeline, NEW.token, NEW.run_id); RETURN NEW; END $$`,
		`CREATE TRIGGER chaos_fence_log AFTER INSERT OR UPDATE ON sluice_fences FOR EACH ROW EXECUTE FUNCTION chaos_fence_log()`,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn := s.connect(t, ctx)
		_, err := conn.Exec(ctx, stmt)
		conn.Close(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// fencesIncrease checks the fencing history of every pipeline: a run's writes are contiguous
// (once another run wrote, it never writes again) and each run's token is greater than the one
// before it. It reports false and the history when not.
func (s *chaosSuite) fencesIncrease(t *testing.T) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := s.connect(t, ctx)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT pipeline, token, run_id FROM chaos_fence_log ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type write struct {
		token int64
		run   string
	}
	history := map[string][]write{}
	for rows.Next() {
		var p string
		var w write
		if err := rows.Scan(&p, &w.token, &w.run); err != nil {
			t.Fatal(err)
		}
		history[p] = append(history[p], w)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ok := true
	for p, ws := range history {
		seen := map[string]bool{ws[0].run: true}
		for i := 1; i < len(ws); i++ {
			prev, cur := ws[i-1], ws[i]
			switch {
			case cur.run == prev.run && cur.token < prev.token:
				t.Errorf("pipeline %s: run %s wrote under token %d after %d", p, cur.run, cur.token, prev.token)
				ok = false
			case cur.run != prev.run && seen[cur.run]:
				t.Errorf("pipeline %s: run %s wrote again (token %d) after run %s (token %d): two runs active at once", p, cur.run, cur.token, prev.run, prev.token)
				ok = false
			case cur.run != prev.run && cur.token <= prev.token:
				t.Errorf("pipeline %s: run %s's token %d does not exceed run %s's %d", p, cur.run, cur.token, prev.run, prev.token)
				ok = false
			}
			seen[cur.run] = true
		}
	}
	if !ok {
		t.Logf("fencing history: %v", history)
	}
	s.fences = fenceSummary{}
	for _, ws := range history {
		s.fences.writes += len(ws)
		runs := map[string]bool{}
		for _, w := range ws {
			runs[w.run] = true
		}
		s.fences.runs += len(runs)
		s.fences.pipelines++
	}
	return ok
}

// rejoin starts a stopped node again (its store wiped first if wipe) and returns how long it
// took to be back and current: healthy, and every stream's replicas current.
func (s *chaosSuite) rejoin(t *testing.T, n *cluster.Node, wipe bool) time.Duration {
	t.Helper()
	if wipe {
		if err := n.Wipe(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	started := time.Now()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	s.allCurrent(t, ctx)
	return time.Since(started)
}

// allCurrent waits until every stream of the cluster has all its replicas current.
func (s *chaosSuite) allCurrent(t *testing.T, ctx context.Context) {
	t.Helper()
	names := s.js.StreamNames(ctx)
	var all []string
	for name := range names.Name() {
		all = append(all, name)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	for _, name := range all {
		if err := s.nodes.WaitCurrent(ctx, s.js, name); err != nil {
			t.Fatal(err)
		}
	}
}

// placeLeaders moves the events stream's and the lease bucket's leaders off node off.
func (s *chaosSuite) placeLeaders(t *testing.T, off *cluster.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var to *cluster.Node
	for _, n := range s.nodes.Nodes {
		if n != off {
			to = n
			break
		}
	}
	for _, stream := range []string{s.cfg.NATS.Stream, "KV_" + bus.LeaseBucket} {
		if l, err := s.nodes.WaitLeader(ctx, s.js, stream, nil); err != nil {
			t.Fatal(err)
		} else if l == off {
			if err := s.nodes.StepDown(ctx, s.nc, s.js, stream, to); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func clusterClean(t *testing.T, s *chaosSuite) chaosResult {
	res, took := s.clusterCompletes(t, "none: clean runs on the cluster (2 dates of orders, 1 of events, interleaved)", s.requestRuns())
	s.cleanTook = took
	res.recovery = "— (runs took " + secs(took) + ")"
	t.Logf("clean runs took %s", secs(took))
	return res
}

// killStreamLeader SIGKILLs the events stream's leader once the first orders run is validated,
// and restarts it with its store after the runs.
func killStreamLeader(t *testing.T, s *chaosSuite) chaosResult {
	return s.killLeader(t, s.cfg.NATS.Stream, "the events stream's leader", event.KindValidated)
}

// killLeaseLeader SIGKILLs the lease bucket's leader (placed away from the events stream's
// leader, so only the lease's raft group loses its leader) while the first orders run holds the
// lease and has landed its file.
func killLeaseLeader(t *testing.T, s *chaosSuite) chaosResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	streamLeader, err := s.nodes.WaitLeader(ctx, s.js, s.cfg.NATS.Stream, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := s.nodes.WaitLeader(ctx, s.js, "KV_"+bus.LeaseBucket, nil); err != nil {
		t.Fatal(err)
	} else if l == streamLeader {
		for _, n := range s.nodes.Nodes {
			if n != streamLeader {
				if err := s.nodes.StepDown(ctx, s.nc, s.js, "KV_"+bus.LeaseBucket, n); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	}
	return s.killLeader(t, "KV_"+bus.LeaseBucket, "the lease bucket's leader", event.KindLanded)
}

func (s *chaosSuite) killLeader(t *testing.T, stream, what string, at event.Kind) chaosResult {
	runs := s.requestRuns()
	s.reached(runs[0], at)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if stream == "KV_"+bus.LeaseBucket {
		if h, held, err := s.leases.Get(ctx, "orders"); err != nil || !held || h.RunID != runs[0].runID {
			t.Fatalf("the orders lease is not held by the running run %s: %+v held %v (%v)", runs[0].runID, h, held, err)
		}
	}
	leader, err := s.nodes.Leader(ctx, s.js, stream)
	if err != nil {
		t.Fatal(err)
	}
	on := s.instancesOn(leader)
	killed := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	next, err := s.nodes.WaitLeader(ctx, s.js, stream, leader)
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Since(killed)
	fault := fmt.Sprintf("SIGKILL %s (%s, also holding %s) after the first orders run's %s", what, leader.Name, instanceList(on), at)
	res, took := s.clusterCompletes(t, fault, runs)
	back := s.rejoin(t, leader, false)
	res.recovery = fmt.Sprintf("new leader (%s) in %s; runs took %s (clean %s); %s back with its store, current in %s",
		next.Name, secs(elected), secs(took), secs(s.cleanTook), leader.Name, secs(back))
	t.Logf("%s: %s", fault, res.recovery)
	return res
}

// killServiceNode SIGKILLs the node the first dbt-runner replica talks to (with the leaders of
// the events stream and the lease bucket moved elsewhere) while dbt runs the first orders run:
// every instance connected to it reconnects to another node.
func killServiceNode(t *testing.T, s *chaosSuite) chaosResult {
	n := s.nodes.Node(s.nodeOf("dbtrunner"))
	if n == nil {
		t.Fatalf("dbtrunner talks to no known node (%q)", s.nodeOf("dbtrunner"))
	}
	s.placeLeaders(t, n)
	runs := s.requestRuns()
	s.reached(runs[0], event.KindPartitioned)
	on := s.instancesOn(n)
	before := map[string]int{}
	for _, inst := range on {
		before[inst] = s.reconnects(inst)
	}
	killed := time.Now()
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	s.poll("the instances on "+n.Name+" to reconnect", 2*time.Minute, func() bool {
		for _, inst := range on {
			if s.reconnects(inst) == before[inst] {
				return false
			}
		}
		return true
	})
	reconnected := time.Since(killed)
	fault := fmt.Sprintf("SIGKILL the node holding services' connections (%s: %s; no stream or lease leader) while dbt runs the first orders run", n.Name, instanceList(on))
	res, took := s.clusterCompletes(t, fault, runs)
	back := s.rejoin(t, n, false)
	res.recovery = fmt.Sprintf("all %d instances reconnected in %s; runs took %s (clean %s); %s back with its store, current in %s",
		len(on), secs(reconnected), secs(took), secs(s.cleanTook), n.Name, secs(back))
	t.Logf("%s: %s", fault, res.recovery)
	return res
}

// nodeDownAndBack SIGKILLs a node that leads neither the events stream nor the lease bucket
// before the runs, so it misses their writes, and starts it again (with its store, or with it
// wiped: it must then catch up from its peers alone) once the first orders run is validated. A
// wiped node is then made the leader of the events stream and the run bucket, and must serve
// every message the others hold.
func nodeDownAndBack(t *testing.T, s *chaosSuite, wipe bool) chaosResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := s.nodes.Nodes[len(s.nodes.Nodes)-1]
	if wipe {
		n = s.nodes.Nodes[0]
	}
	s.placeLeaders(t, n)
	on := s.instancesOn(n)
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	runs := s.requestRuns()
	s.reached(runs[0], event.KindValidated)
	back := s.rejoin(t, n, wipe)
	how, fault := "with its store", fmt.Sprintf("a node (%s, holding %s) SIGKILLed before the runs, restarted with its store after the first orders run's validated", n.Name, instanceList(on))
	if wipe {
		how = "with its store wiped"
		fault = fmt.Sprintf("a node (%s, holding %s) SIGKILLed before the runs, its store wiped, restarted after the first orders run's validated: it catches up from its peers", n.Name, instanceList(on))
	}
	res, took := s.clusterCompletes(t, fault, runs)
	res.recovery = fmt.Sprintf("%s back %s, current in %s; runs took %s (clean %s)", n.Name, how, secs(back), secs(took), secs(s.cleanTook))
	if wipe {
		for _, stream := range []string{s.cfg.NATS.Stream, "KV_" + bus.RunBucket} {
			st, err := s.js.Stream(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			want := st.CachedInfo().State
			if err := s.nodes.StepDown(ctx, s.nc, s.js, stream, n); err != nil {
				t.Fatal(err)
			}
			st, err = s.js.Stream(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().State; got.Msgs != want.Msgs || got.LastSeq != want.LastSeq {
				t.Errorf("%s led by the wiped node %s: %d messages up to %d, its peers held %d up to %d", stream, n.Name, got.Msgs, got.LastSeq, want.Msgs, want.LastSeq)
				res.failed, res.correct = true, 0
			}
		}
		for _, r := range runs {
			if rec, err := s.runs.Get(ctx, r.pipeline, r.ds, r.runID); err != nil || rec.State != runstate.Completed {
				t.Errorf("run %s read from the wiped node's run bucket: %s (%v)", r.runID, rec.State, err)
				res.failed, res.correct = true, 0
			}
		}
		res.recovery += fmt.Sprintf("; then leading the events stream and the run bucket, %s serves every message its peers held", n.Name)
	}
	t.Logf("%s: %s", fault, res.recovery)
	return res
}

func instanceList(on []string) string {
	if len(on) == 0 {
		return "no service"
	}
	return strings.Join(on, ", ")
}

// writeClusterReport puts the cluster cases' table into the report, between markers, keeping
// the rest of the file (which TestChaos writes and keeps this section of).
// fenceSummary is what the fencing history held at the last check.
type fenceSummary struct{ writes, runs, pipelines int }

func writeClusterReport(path string, results []chaosResult, took time.Duration, fences fenceSummary) error {
	var b strings.Builder
	b.WriteString(clusterBegin + "\n## On a three-node cluster\n\n" + "Written by `make chaos` (cmd/sluice/chaos_nodes_test.go, `TestChaosCluster`): three nats-server\n" +
		"processes (pkg/testkit/cluster: file store, `sync_interval: always`, loopback routes) provisioned by\n" +
		"`sluice provision` with `nats.replicas: 3` (the events stream, the log stream, every KV bucket and\n" +
		"consumer at R3), two replicas of each service given every node's URL and placed on different nodes,\n" +
		"and in each case two dates of `orders` (the second queued behind the first's lease) interleaved\n" +
		"with one date of `events`. Leaders are found through the JetStream API (stream info; a KV bucket's\n" +
		"stream is `KV_<bucket>`) and placed with a leader step-down. \"Completed correctly\" is as above for\n" +
		"every run, plus `events` equal to a clean run's, and the fencing history (a trigger logs every\n" +
		"write to `sluice_fences`) showing each pipeline's runs writing one after another with strictly\n" +
		"increasing tokens. Recovery is measured from the SIGKILL (or the restart) by the test.\n\n")
	b.WriteString("| fault | runs | completed correctly | duplicates | lost rows | alerts | recovery |\n|---|---|---|---|---|---|---|\n")
	runs, correct, failed := 0, 0, 0
	for _, r := range results {
		alerts := r.alerts
		if alerts == "" {
			alerts = "—"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s |\n", r.fault, r.runs, r.correct, r.duplicates, r.lost, alerts, r.recovery)
		runs += r.runs
		correct += r.correct
		if r.failed {
			failed++
		}
	}
	fmt.Fprintf(&b, "\n%d runs, %d completed correctly, %d case(s) failed; the cluster cases took %s. Fencing history:\n", runs, correct, failed, took.Round(time.Second))
	fmt.Fprintf(&b, "%d writes to `sluice_fences` by %d runs of %d pipelines, each run's writes contiguous and its token\n", fences.writes, fences.runs, fences.pipelines)
	b.WriteString("greater than the run's before it. The clean case runs first on the cluster: its time includes\nthe dbt-runners' first (cold) builds, so a faulted case's runs can take less.\n" + clusterEnd + "\n")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(withClusterSection(string(old), b.String())), 0o644)
}

const (
	clusterBegin = "<!-- TestChaosCluster: begin -->"
	clusterEnd   = "<!-- TestChaosCluster: end -->"
)

// clusterSection is the cluster cases' section of a report, or "".
func clusterSection(doc string) string {
	i, j := strings.Index(doc, clusterBegin), strings.Index(doc, clusterEnd)
	if i < 0 || j < i {
		return ""
	}
	return doc[i:j+len(clusterEnd)] + "\n"
}

// withClusterSection replaces the cluster section of doc, or puts it before the notes.
func withClusterSection(doc, section string) string {
	if old := clusterSection(doc); old != "" {
		return strings.Replace(doc, old, section, 1)
	}
	if i := strings.Index(doc, "## How it holds"); i >= 0 {
		return doc[:i] + section + "\n" + doc[i:]
	}
	return doc + "\n" + section
}
