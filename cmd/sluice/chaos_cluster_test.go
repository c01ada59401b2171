//go:build linux

package main

// The fault-injection suite's cluster: a nats-server process with a file store (or three of
// them forming a JetStream cluster, pkg/testkit/cluster), the six service binaries built with
// -tags chaos (so SLUICE_CRASH can stop them at a crash point), each its own process (or two
// replicas of each, on different nodes), and the real PostgreSQL, S3 (behind a fault proxy), dbt,
// Slack (slacktest behind a rate-limiting proxy) and SMTP servers the tests use everywhere else.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-etl/sluice/pkg/app"
	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/testkit/cluster"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

// chaosServices are the six services, in flow order; each is a binary cmd/sluice-<name>.
var chaosServices = []string{"sensor", "fetcher", "validator", "partitioner", "dbtrunner", "alerter"}

// Secrets of the suite: every one is configured and used, and none may appear in any log line or
// alert. The database runs with trust authentication, so its password is checked by nobody but
// still travels in the connection URL like a real one.
const (
	chaosDBPassword   = "chaos-db-pw-5f3c1a"
	chaosSlackToken   = "xoxb-chaos-slack-token-9d2e"
	chaosSMTPPassword = "chaos-smtp-pw-77b1"
)

const chaosConfig = `pipelines:
  - name: orders
    source:
      url: %s/orders/data/{ds}.csv
    sensor:
      poke_interval: 200ms
      timeout: 10m
    # Longer than the consumers' ack wait (30s) plus a restart: a run whose service was killed
    # keeps its lease until the message comes back.
    lease:
      ttl: 2m
    retries:
      max: 3
      delay: 1s
      backoff: 2
      max_delay: 4s
      jitter: 0.2
      steps:
        alerter: {max: 5, delay: 500ms}
    # A step that hangs on a silent PostgreSQL or S3 is cancelled after this and retried.
    deadlines: {fetcher: 30s, validator: 30s, partitioner: 30s}
    sla:
      within: 10m
    dbt:
      select: stg_orders orders
  # Held at the sensor past its deadline: it never reaches dbt, which models orders only.
  - name: late
    contract: orders
    staging_table: staging_late
    target: {table: late_orders}
    source:
      url: %s/late/data/{ds}.csv
    sensor: {poke_interval: 200ms, timeout: 10m}
    lease: {ttl: 2m}
    sla: {within: %s}
`

// lateSLA is the late pipeline's deadline: long enough to restart every process before it.
const lateSLA = 12 * time.Second

// buildChaosBinaries builds the six services with crash points, and nats-server, into a
// directory removed when the test ends.
func buildChaosBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := func() error {
		root := testkit.RepoRoot(t)
		pkgs := make([]string, 0, len(chaosServices))
		for _, s := range chaosServices {
			pkgs = append(pkgs, "github.com/sluice-etl/sluice/services/"+s+"/cmd/sluice-"+s)
		}
		run := func(args ...string) error {
			cmd := exec.Command("go", args...)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return nil
		}
		if err := run(append([]string{"build", "-tags", "chaos", "-o", dir + "/"}, pkgs...)...); err != nil {
			return err
		}
		// The broker is a process of its own, so it can be killed and restarted mid-run; it is
		// the server module the embedded broker already uses.
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2")
		cmd.Dir = filepath.Join(root, "pkg")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
		return nil
	}()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// chaosProc is one running service or broker process.
type chaosProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (p *chaosProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// killedByCrashPoint reports whether the process died by SIGKILL after announcing a crash point.
func (p *chaosProc) killedByCrashPoint() bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return false
	}
	b, _ := os.ReadFile(p.log)
	return strings.Contains(string(b), "sluice crash point")
}

// chaosCluster is the system under test.
type chaosCluster struct {
	t      *testing.T
	dir    string
	bins   string
	cfg    *config.Config
	cfgTxt string
	env    map[string]string
	pg     string
	admin  string // the same database, with the password, for the test's own queries

	natsPort int
	natsConf string
	nats     *chaosProc
	nc       *nats.Conn
	js       jetstream.JetStream
	runs     *runstate.Store
	leases   *lease.Leases

	// nodes is the JetStream cluster of a clustered suite (nil: the one nats-server above).
	nodes *cluster.Cluster
	// procs are the services' processes by instance: "fetcher", and "fetcher#2" for a second
	// replica.
	procs    map[string]*chaosProc
	replicas int
	gen      int // process generation, for log names

	source *chaosSource
	s3     *s3Proxy
	pgP    *tcpProxy
	slack  *testkit.SlackRecorder
	slackP *slackProxy
	smtp   *testkit.SMTPServer

	day time.Time // the next execution date to use
}

// chaosTopology is how the suite runs NATS and the services: the zero value is one nats-server
// and one process per service.
type chaosTopology struct {
	// nodes > 0 runs a JetStream cluster of that many nats-server processes; the config asks for
	// nats.replicas: nodes, and every process is given every node's URL.
	nodes int
	// replicas is how many processes run each service (0 is 1).
	replicas int
}

// newCluster starts one broker and the six services.
func newCluster(t *testing.T) *chaosCluster { return newClusterOf(t, chaosTopology{}) }

// newClusterOf starts the broker (or the cluster of brokers) and the services.
func newClusterOf(t *testing.T, top chaosTopology) *chaosCluster {
	t.Helper()
	c := &chaosCluster{t: t, bins: buildChaosBinaries(t), procs: map[string]*chaosProc{}, replicas: max(top.replicas, 1),
		day: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	var err error
	if c.dir, err = os.MkdirTemp("", "sluice-chaos-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(c.dir)
		} else {
			t.Logf("chaos logs kept in %s", c.dir)
		}
	})

	// PostgreSQL: a fresh database; the URL gets a password the server never asks for (trust).
	pgURL := testkit.Postgres(t)
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), chaosDBPassword)
	c.pgP = startTCPProxy(t, u.Host) // the services reach PostgreSQL through it; the test does not
	u.Host = c.pgP.addr
	c.pg, c.admin = u.String(), pgURL

	s3cfg := testkit.S3(t)
	c.s3 = startS3Proxy(t, s3cfg.Endpoint.Reveal())
	c.source = startChaosSource(t)
	ts, rec := testkit.Slack(t)
	c.slack = rec
	c.slackP = startSlackProxy(t, ts.GetAPIURL())
	c.smtp = testkit.SMTP(t)

	natsURL := ""
	if top.nodes > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var err error
		c.nodes, err = cluster.Start(ctx, cluster.Options{Bin: filepath.Join(c.bins, "nats-server"), Dir: filepath.Join(c.dir, "nats"), Nodes: top.nodes})
		if err != nil {
			t.Fatal(err)
		}
		natsURL = c.nodes.URLs()
	} else {
		c.natsPort = chaosFreePort(t)
		c.natsConf = filepath.Join(c.dir, "nats.conf")
		conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  sync_interval: always\n}\n", c.natsPort, filepath.Join(c.dir, "nats-store"))
		if err := os.WriteFile(c.natsConf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.startNATS()
		natsURL = fmt.Sprintf("nats://127.0.0.1:%d", c.natsPort)
	}

	cc := testConfig{bucket: s3cfg.Bucket, dbt: true, slack: c.slackP.URL(), smtp: c.smtp, smtpAuth: true,
		alerts: "  run_url: http://sluice.test/runs/{pipeline}/{ds}/{run_id}\n  trace_url: http://jaeger.test/trace/{trace_id}\n",
		rest:   fmt.Sprintf(chaosConfig, c.source.URL, c.source.URL, lateSLA)}
	if top.nodes > 0 {
		cc.rest += fmt.Sprintf(chaosEventsPipeline, c.source.URL)
	}
	c.cfgTxt = cc.text(t)
	if top.nodes > 0 {
		c.cfgTxt = strings.Replace(c.cfgTxt, "  url: env:NATS_URL\n", fmt.Sprintf("  url: env:NATS_URL\n  replicas: %d\n", top.nodes), 1)
	}
	path := filepath.Join(c.dir, "sluice.yaml")
	writeFile(t, path, c.cfgTxt)
	c.env = testSecrets(natsURL, c.pg, s3cfg)
	c.env["SLACK_TOKEN"], c.env["SMTP_PASSWORD"] = chaosSlackToken, chaosSMTPPassword
	c.cfg = loadConfig(t, path, c.env)

	c.nc, err = nats.Connect(c.env["NATS_URL"], nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if c.nodes == nil {
		if err := bus.Provision(ctx, c.js, bus.Options{Stream: c.cfg.NATS.Stream, SubjectPrefix: c.cfg.NATS.SubjectPrefix}); err != nil {
			t.Fatal(err)
		}
	} else {
		// As an operator would: `sluice provision` with the config, against every node.
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		var out, errOut strings.Builder
		if err := run(ctx, []string{"provision", "--config", path, "--no-postgres"}, &out, &errOut); err != nil {
			t.Fatalf("sluice provision: %v\n%s", err, errOut.String())
		}
		t.Logf("sluice provision: %s", strings.TrimSpace(out.String()))
	}
	if c.runs, err = runstate.New(ctx, c.js); err != nil {
		t.Fatal(err)
	}
	if c.leases, err = lease.New(ctx, c.js); err != nil {
		t.Fatal(err)
	}
	for _, s := range chaosServices {
		for i := 1; i <= c.replicas; i++ {
			c.start(instance(s, i))
		}
	}
	t.Cleanup(func() {
		for name := range c.procs {
			c.stop(name)
		}
		c.stopNATS(syscall.SIGTERM)
		if c.nodes != nil {
			c.nodes.Stop()
		}
	})
	return c
}

// instance names the i-th replica of a service: "fetcher", "fetcher#2".
func instance(svc string, i int) string {
	if i == 1 {
		return svc
	}
	return fmt.Sprintf("%s#%d", svc, i)
}

// chaosEventsPipeline is the second pipeline of a clustered suite, interleaved with orders.
const chaosEventsPipeline = `  - name: events
    contract: events
    source:
      url: %s/events/{ds}.csv
    sensor: {poke_interval: 200ms, timeout: 10m}
    lease: {ttl: 2m}
    retries: {max: 3, delay: 1s, backoff: 2, max_delay: 4s, jitter: 0.2}
    deadlines: {fetcher: 30s, validator: 30s, partitioner: 30s}
    sla: {within: 10m}
`

func chaosFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// spawn starts a process whose output goes to a log file in the cluster's directory.
func (c *chaosCluster) spawn(name string, env []string, bin string, args ...string) *chaosProc {
	c.t.Helper()
	c.gen++
	logPath := filepath.Join(c.dir, fmt.Sprintf("%03d-%s.log", c.gen, name))
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr, cmd.Dir = env, f, f, c.dir
	// A test binary killed by its timeout takes the cluster with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &chaosProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

func (c *chaosCluster) startNATS() {
	c.t.Helper()
	c.nats = c.spawn("nats-server", os.Environ(), filepath.Join(c.bins, "nats-server"), "-c", c.natsConf)
	addr := fmt.Sprintf("127.0.0.1:%d", c.natsPort)
	c.poll("nats-server to listen", 30*time.Second, func() bool {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

func (c *chaosCluster) stopNATS(sig syscall.Signal) {
	if c.nats == nil || c.nats.exited() {
		return
	}
	_ = c.nats.cmd.Process.Signal(sig)
	select {
	case <-c.nats.done:
	case <-time.After(20 * time.Second):
		_ = c.nats.cmd.Process.Kill()
		<-c.nats.done
	}
}

// start runs a service instance (svc, or svc#i for its i-th replica); extra holds additional
// environment (SLUICE_CRASH, S3_ENDPOINT).
func (c *chaosCluster) start(name string, extra ...string) {
	c.t.Helper()
	svc, _, _ := strings.Cut(name, "#")
	env := append(os.Environ(), "GOTRACEBACK=none")
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "SLUICE_CRASH=") })
	for k, v := range c.env {
		if svc == "fetcher" || svc == "validator" || k != "S3_ENDPOINT" {
			env = append(env, k+"="+v)
		}
	}
	if svc == "fetcher" || svc == "validator" {
		// The steps that move the raw file reach S3 through the fault proxy.
		env = append(env, "S3_ENDPOINT="+c.s3.URL())
	} else {
		env = append(env, "S3_ENDPOINT="+c.env["S3_ENDPOINT"])
	}
	env = append(env, extra...)
	c.procs[name] = c.spawn(name, env, filepath.Join(c.bins, "sluice-"+svc),
		"--config", filepath.Join(c.dir, "sluice.yaml"), "--nats", c.env["NATS_URL"], "--http", "127.0.0.1:0")
	p := c.procs[name]
	c.poll(name+" to start", 60*time.Second, func() bool {
		if p.exited() {
			b, _ := os.ReadFile(p.log)
			c.t.Fatalf("%s exited at start:\n%s", name, b)
		}
		b, _ := os.ReadFile(p.log)
		return strings.Contains(string(b), `"msg":"started"`)
	})
}

// stop ends a service gracefully (it drains its in-flight message).
func (c *chaosCluster) stop(svc string) {
	p := c.procs[svc]
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// armCrash restarts svc so that it kills itself at point.
func (c *chaosCluster) armCrash(svc, point string) {
	c.t.Helper()
	c.stop(svc)
	c.start(svc, "SLUICE_CRASH="+svc+":"+point)
}

// waitCrash waits for svc to die at its crash point while it handles the run, then starts it
// again without one.
func (c *chaosCluster) waitCrash(svc, pipeline, ds, runID string) {
	c.t.Helper()
	p := c.procs[svc]
	deadline := time.After(4 * time.Minute)
	var endedAt time.Time // a run's end is recorded before it is announced: allow the crash a moment
	for !p.exited() {
		select {
		case <-p.done:
		case <-deadline:
			c.t.Fatalf("%s did not reach its crash point within 4m", svc)
		case <-time.After(200 * time.Millisecond):
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rec, err := c.runs.Get(ctx, pipeline, ds, runID)
			cancel()
			if err == nil && rec.State.Final() && endedAt.IsZero() {
				endedAt = time.Now()
			}
			if !endedAt.IsZero() && time.Since(endedAt) > 5*time.Second && !p.exited() && svc != "alerter" {
				c.t.Fatalf("run %s ended %s but %s never reached its crash point: does the router call crash.Point?", runID, rec.State, svc)
			}
		}
	}
	if !p.killedByCrashPoint() {
		b, _ := os.ReadFile(p.log)
		c.t.Fatalf("%s died, but not at its crash point:\n%s", svc, b)
	}
	c.start(svc)
}

func (c *chaosCluster) poll(what string, within time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nextDS returns a new execution date.
func (c *chaosCluster) nextDS() string {
	c.day = c.day.AddDate(0, 0, 1)
	return c.day.Format(time.DateOnly)
}

// request asks for a run the way `sluice run` does, with the pipeline's SLA armed.
func (c *chaosCluster) request(pipeline, ds string) string {
	c.t.Helper()
	p, _ := c.cfg.Pipeline(pipeline)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := trigger.New(c.js, c.runs, noop.NewTracerProvider(), app.BusOptions(c.cfg)).Request(ctx, trigger.Request{Pipeline: pipeline, DS: ds, Trigger: "chaos", SLA: p.SLA})
	if err != nil {
		c.t.Fatal(err)
	}
	return req.RunID
}

// waitRun waits until the run's record is final and returns it.
func (c *chaosCluster) waitRun(pipeline, ds, runID string, within time.Duration) runstate.Record {
	c.t.Helper()
	var rec runstate.Record
	c.poll("run "+runID+" of "+ds+" to end", within, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.runs.Get(ctx, pipeline, ds, runID)
		if err != nil {
			return false
		}
		rec = r
		return r.State.Final()
	})
	return rec
}

// events counts the run's events in the stream by kind: what the broker stored and
// acknowledged, whoever was listening. A read cut short by a node lost (the test's own
// connection to it, or the ordered consumer's) is read again.
func (c *chaosCluster) events(pipeline, ds, runID string) map[event.Kind]int {
	c.t.Helper()
	var err error
	for try := 0; try < 5; try++ {
		var out map[event.Kind]int
		if out, err = c.readEvents(pipeline, ds, runID); err == nil {
			return out
		}
		time.Sleep(time.Second)
	}
	c.t.Fatalf("read the events of run %s: %v", runID, err)
	return nil
}

func (c *chaosCluster) readEvents(pipeline, ds, runID string) (map[event.Kind]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// An ephemeral consumer, not an ordered one: an ordered consumer that loses its server
	// recreates itself forever, deaf to ctx.
	stream, err := c.js.Stream(ctx, c.cfg.NATS.Stream)
	if err != nil {
		return nil, err
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: fmt.Sprintf("%s.%s.*.%s", c.cfg.NATS.SubjectPrefix, pipeline, ds),
		AckPolicy:     jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1})
	if err != nil {
		return nil, err
	}
	defer func() { _ = stream.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	out := map[event.Kind]int{}
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		if info.NumPending == 0 {
			return out, nil
		}
		batch, err := cons.Fetch(int(min(info.NumPending, 100)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			var h event.Run
			if json.Unmarshal(m.Data(), &h) == nil && h.RunID == runID {
				out[event.Kind(strings.Split(m.Subject(), ".")[2])]++
			}
		}
	}
}

// eventDuplicates counts events stored more than once for the run.
func eventDuplicates(ev map[event.Kind]int) int {
	n := 0
	for _, v := range ev {
		if v > 1 {
			n += v - 1
		}
	}
	return n
}

// alertsFor counts the Slack messages and emails that name a run.
func (c *chaosCluster) alertsFor(runID string) (slack, email int) {
	for _, p := range c.slack.Posts() {
		if strings.Contains(p.Text, runID) {
			slack++
		}
	}
	for _, m := range c.smtp.Messages() {
		if strings.Contains(string(m.Data), runID) {
			email++
		}
	}
	return slack, email
}

// table is the orders table as rows, and how many order ids it holds more than once.
func (c *chaosCluster) table() (map[int64]row, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.admin)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	out, dups := map[int64]row{}, 0
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('public.orders') IS NOT NULL").Scan(&exists); err != nil || !exists {
		return out, 0
	}
	rows, err := conn.Query(ctx, "SELECT order_id, customer_id, amount::text, updated_at, load_date::text FROM orders")
	if err != nil {
		c.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var r row
		if err := rows.Scan(&id, &r.customer, &r.amount, &r.updated, &r.loadDate); err != nil {
			c.t.Fatal(err)
		}
		if _, dup := out[id]; dup {
			dups++
		}
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	return out, dups
}

// query runs one scalar query on the test database.
func (c *chaosCluster) count(query string, args ...any) int64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.admin)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		c.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// checksum is a digest of a table's rows in order_id order: equal tables, equal checksums.
func tableChecksum(rows map[int64]row) string {
	ids := make([]int64, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	h := sha256.New()
	for _, id := range ids {
		r := rows[id]
		fmt.Fprintf(h, "%d|%d|%s|%s|%s\n", id, r.customer, r.amount, r.updated.UTC().Format(time.RFC3339Nano), r.loadDate)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// logs returns every process log of the suite.
func (c *chaosCluster) logs() map[string]string {
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		out[filepath.Base(f)] = string(b)
	}
	return out
}

// chaosSource serves the orders pipeline's files from the sample source, with per-date faults:
// a date can be held (404, not there yet) or broken (a file that breaks the contract). The late
// pipeline's files are never there.
type chaosSource struct {
	*httptest.Server
	mu     sync.Mutex
	held   map[string]bool
	broken map[string]bool
}

var sourceOpts = samplesource.Options{Rows: 300, UpdateRatio: 0.2}

func startChaosSource(t *testing.T) *chaosSource {
	t.Helper()
	files, err := samplesource.Handler(sourceOpts)
	if err != nil {
		t.Fatal(err)
	}
	s := &chaosSource{held: map[string]bool{}, broken: map[string]bool{}}
	mux := http.NewServeMux()
	// The events pipeline of a clustered suite: the sample source's events, never held or broken.
	mux.Handle("/events/{file}", files)
	mux.HandleFunc("/{pipeline}/data/{file}", func(w http.ResponseWriter, r *http.Request) {
		ds := strings.TrimSuffix(r.PathValue("file"), ".csv")
		s.mu.Lock()
		held, broken := s.held[ds] || r.PathValue("pipeline") == "late", s.broken[ds]
		s.mu.Unlock()
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/data/" + r.PathValue("file")
		switch {
		case held:
			http.NotFound(w, r)
		case broken:
			_, _ = io.WriteString(w, "order_id,customer_id,updated_at\n1,2,2026-01-01T00:00:00Z\n")
		default:
			files.ServeHTTP(w, r2)
		}
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *chaosSource) set(m map[string]bool, ds string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m[ds] = on
}

// s3Proxy stands in front of the S3 server: it can answer 503 to uploads of raw files, and hold
// a download of a raw file halfway so a COPY fed from it is caught in the act.
type s3Proxy struct {
	srv       *httptest.Server
	mu        sync.Mutex
	fail503   int  // raw-file PUTs still to refuse
	failAll   bool // refuse every raw-file PUT
	failGets  int  // raw-file GETs still to refuse
	failHeads int  // raw-file HEADs still to refuse
	refused   int
	silent    chan struct{} // non-nil: raw-file requests get no answer until it is closed
	held      int           // requests silence held
	pauseGets chan struct{} // non-nil: raw-file GETs stop after half the body until closed
	paused    chan struct{} // closed when the first GET reached the pause
	once      *sync.Once
}

// holdDownloads makes raw-file downloads stop halfway until the returned release is called;
// paused is closed when the first one stops.
func (p *s3Proxy) holdDownloads() (paused <-chan struct{}, release func()) {
	pause, ch := make(chan struct{}), make(chan struct{})
	p.mu.Lock()
	p.pauseGets, p.paused, p.once = pause, ch, &sync.Once{}
	p.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			p.mu.Lock()
			p.pauseGets = nil
			p.mu.Unlock()
			close(pause)
		})
	}
}

func startS3Proxy(t *testing.T, endpoint string) *s3Proxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &s3Proxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	// The request's Host stays the proxy's: the SDK signed it for that host.
	rp.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		pause, paused, once := p.pauseGets, p.paused, p.once
		p.mu.Unlock()
		if pause != nil && resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/raw/") && resp.ContentLength > 1 {
			resp.Body = &pausingBody{r: resp.Body, left: resp.ContentLength / 2, pause: pause, paused: paused, once: once}
		}
		return nil
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/raw/") {
			p.mu.Lock()
			silent := p.silent
			if silent != nil {
				p.held++
			}
			refuse := false
			switch {
			case r.Method == http.MethodGet && p.failGets > 0:
				p.failGets--
				p.refused++
				refuse = true
			case r.Method == http.MethodHead && p.failHeads > 0:
				p.failHeads--
				p.refused++
				refuse = true
			}
			p.mu.Unlock()
			if silent != nil {
				// Accepted, never answered: the client's own deadline must end the wait.
				select {
				case <-silent:
				case <-r.Context().Done():
					return
				}
			}
			if refuse {
				w.WriteHeader(http.StatusServiceUnavailable) // a HEAD answer has no body
				if r.Method != http.MethodHead {
					_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>chaos: S3 unavailable</Message></Error>`)
				}
				return
			}
		}
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/raw/") {
			p.mu.Lock()
			refuse := p.failAll || p.fail503 > 0
			if refuse {
				p.refused++
				if p.fail503 > 0 {
					p.fail503--
				}
			}
			p.mu.Unlock()
			if refuse {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>chaos: S3 unavailable</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *s3Proxy) URL() string { return p.srv.URL }

// silence makes raw-file requests get no answer until the returned speak is called.
func (p *s3Proxy) silence() (speak func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.silent, p.held = ch, 0
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.silent = nil
			p.mu.Unlock()
			close(ch)
		})
	}
}

// tcpProxy forwards TCP connections (the services' to PostgreSQL) and can go silent: it keeps
// accepting connections and stops forwarding bytes, as a server that hangs does.
type tcpProxy struct {
	addr   string
	mu     sync.Mutex
	cond   *sync.Cond
	frozen bool
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: ln.Addr().String()}
	p.cond = sync.NewCond(&p.mu)
	var conns []net.Conn
	var connsMu sync.Mutex
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, in, out)
			connsMu.Unlock()
			go p.pump(out, in)
			go p.pump(in, out)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.thaw()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
	})
	return p
}

// pump copies from src to dst, holding every chunk while the proxy is frozen.
func (p *tcpProxy) pump(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for p.frozen {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *tcpProxy) freeze() { p.mu.Lock(); p.frozen = true; p.mu.Unlock() }
func (p *tcpProxy) thaw()   { p.mu.Lock(); p.frozen = false; p.cond.Broadcast(); p.mu.Unlock() }

// pausingBody passes left bytes, then waits for pause to close.
type pausingBody struct {
	r      io.ReadCloser
	left   int64
	pause  chan struct{}
	paused chan struct{}
	once   *sync.Once
}

func (b *pausingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.once.Do(func() { close(b.paused) })
		<-b.pause
		return b.r.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *pausingBody) Close() error { return b.r.Close() }

// slackProxy stands in front of the Slack test server and can answer 429 with Retry-After.
type slackProxy struct {
	srv        *httptest.Server
	mu         sync.Mutex
	limit      int // postMessage calls still to answer 429
	retryAfter int
	limitedAt  []time.Time
	postedAt   []time.Time
}

func startSlackProxy(t *testing.T, apiURL string) *slackProxy {
	t.Helper()
	target, err := url.Parse(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &slackProxy{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: target.Scheme, Host: target.Host})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/chat.postMessage") {
			p.mu.Lock()
			if p.limit > 0 {
				p.limit--
				p.limitedAt = append(p.limitedAt, time.Now())
				p.mu.Unlock()
				w.Header().Set("Retry-After", fmt.Sprint(p.retryAfter))
				http.Error(w, "ratelimited", http.StatusTooManyRequests)
				return
			}
			p.postedAt = append(p.postedAt, time.Now())
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// URL is the Slack API base URL through the proxy.
func (p *slackProxy) URL() string { return p.srv.URL + "/" }

func (p *slackProxy) rateLimit(n, retryAfter int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limit, p.retryAfter = n, retryAfter
	p.limitedAt, p.postedAt = nil, nil
}

func (p *slackProxy) times() (limited, posted []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.limitedAt), slices.Clone(p.postedAt)
}

// secretHits lists where a configured secret appears in the suite's logs and alerts.
func (c *chaosCluster) secretHits() []string {
	secrets := map[string]string{
		"DB password": chaosDBPassword, "S3 access key": c.env["S3_ACCESS_KEY"], "S3 secret key": c.env["S3_SECRET_KEY"],
		"Slack token": chaosSlackToken, "SMTP password": chaosSMTPPassword,
	}
	var hits []string
	check := func(where, text string) {
		for name, v := range secrets {
			if v != "" && strings.Contains(text, v) {
				hits = append(hits, fmt.Sprintf("%s in %s", name, where))
			}
		}
	}
	for name, text := range c.logs() {
		sc := bufio.NewScanner(strings.NewReader(text))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for i := 1; sc.Scan(); i++ {
			check(fmt.Sprintf("%s line %d", name, i), sc.Text())
		}
	}
	for i, p := range c.slack.Posts() {
		check(fmt.Sprintf("slack message %d", i), p.Text+p.Blocks)
	}
	for i, m := range c.smtp.Messages() {
		check(fmt.Sprintf("email %d", i), string(m.Data))
	}
	return hits
}
