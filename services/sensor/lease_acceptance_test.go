package sensor_test

// Acceptance tests of the lease with real processes: the sensor, fetcher and validator binaries
// built from this tree, each its own process on one embedded JetStream server, against the test
// PostgreSQL and S3 servers `make test` starts. Processes are killed and paused with real signals.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/lease"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// TestMain removes the binaries built for the package's tests (binaries) when they end.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds the service binaries once per test run; TestMain removes them.
func binaries(t *testing.T) string {
	t.Helper()
	root := testkit.RepoRoot(t)
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sluice-lease-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/",
			"./services/sensor/cmd/sluice-sensor", "./services/fetcher/cmd/sluice-fetcher", "./services/validator/cmd/sluice-validator")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// procEnv is a config file, its secrets and the broker the service processes share.
type procEnv struct {
	t      *testing.T
	bin    string
	config string
	vars   []string
	nats   string
	js     jetstream.JetStream
	pg     string
}

const procConfig = `postgres:
  url: env:PG_URL
s3:
  endpoint: env:S3_ENDPOINT
  bucket: %s
  access_key: env:S3_ACCESS_KEY
  secret_key: env:S3_SECRET_KEY
  path_style: true
pipelines:
  - name: orders
    source:
      url: %s/data/{ds}.csv
      method: HEAD
    sensor:
      poke_interval: %s
      timeout: 10m
    lease:
      ttl: %s
      on_busy: queue
    retries:
      max: 0
`

func newProcEnv(t *testing.T, sourceURL string, poke, ttl time.Duration) *procEnv {
	t.Helper()
	bin := binaries(t)
	s3 := testkit.S3(t)
	e := &procEnv{t: t, bin: bin, pg: testkit.Postgres(t)}
	ns := testkit.NATS(t)
	e.nats = ns.ClientURL()
	_, e.js = testkit.Connect(t, ns)
	if err := bus.Provision(context.Background(), e.js, bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}); err != nil {
		t.Fatal(err)
	}
	e.config = filepath.Join(t.TempDir(), "sluice.yaml")
	text := fmt.Sprintf(procConfig, s3.Bucket, sourceURL, poke, ttl)
	if err := os.WriteFile(e.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	e.vars = append(os.Environ(), "PG_URL="+e.pg, "S3_ENDPOINT="+s3.Endpoint.Reveal(),
		"S3_ACCESS_KEY="+s3.AccessKey.Reveal(), "S3_SECRET_KEY="+s3.SecretKey.Reveal())
	return e
}

// proc is one service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// start runs service (sensor, fetcher, validator) as its own process. Its PostgreSQL sessions
// carry name as their application_name, so the test can tell them apart in pg_stat_activity.
func (e *procEnv) start(service, name string) *proc {
	e.t.Helper()
	p := &proc{name: name, out: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(filepath.Join(e.bin, "sluice-"+service), "--config", e.config, "--nats", e.nats, "--http", "127.0.0.1:0")
	sep := "?"
	if strings.Contains(e.pg, "?") {
		sep = "&"
	}
	p.cmd.Env = append(e.vars[:len(e.vars):len(e.vars)], "PG_URL="+e.pg+sep+"application_name="+name)
	p.cmd.Stdout = lockedWriter{p.mu, p.out}
	p.cmd.Stderr = lockedWriter{p.mu, p.out}
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if e.t.Failed() {
			e.t.Logf("%s output:\n%s", p.name, p.output())
		}
	})
	testkit.Eventually(e.t, 60*time.Second, name+" starts", func() bool { return strings.Contains(p.output(), `"msg":"started"`) })
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *proc) signal(t *testing.T, s syscall.Signal) time.Time {
	t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		t.Fatalf("signal %s to %s: %v", s, p.name, err)
	}
	return time.Now()
}

func (e *procEnv) request(ds string) string {
	e.t.Helper()
	res, err := trigger.RequestRun(context.Background(), e.js, telemetry.TracerProvider("test"), bus.Options{Stream: "SLUICE", SubjectPrefix: "etl"}, "orders", ds, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return res.RunID
}

// published returns runID's event of kind k and when the broker stored it, once it exists.
func (e *procEnv) published(runID string, k event.Kind, ds string, within time.Duration) (event.Event, time.Time) {
	e.t.Helper()
	st, err := e.js.Stream(context.Background(), "SLUICE")
	if err != nil {
		e.t.Fatal(err)
	}
	var ev event.Event
	var at time.Time
	testkit.Eventually(e.t, within, fmt.Sprintf("run %s publishes %s", runID, k), func() bool {
		m, err := st.GetLastMsgForSubject(context.Background(), event.Subject("etl", "orders", k, ds))
		if err != nil {
			return false
		}
		got, err := event.Decode(k, m.Data)
		if err != nil || got.Header().RunID != runID {
			return false
		}
		ev, at = got, m.Time
		return true
	})
	return ev, at
}

func (e *procEnv) leases() *lease.Leases {
	e.t.Helper()
	l, err := lease.New(context.Background(), e.js)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// A holder that dies (SIGKILL, so nothing is released) blocks the pipeline only until its lease
// expires: the run queued behind it starts within the lease time plus one poke.
func TestKilledHolderIsReplacedWithinLeaseTimePlusOnePoke(t *testing.T) {
	const poke, ttl = 500 * time.Millisecond, 3 * time.Second
	dsA, dsB := "2026-11-24", "2026-11-25"
	fetching := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	// The source has both files (HEAD answers 200); the download of A's hangs, so the fetcher
	// holds A's lease, renewing it, until it is killed.
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, dsA) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("order_id,customer_id,amount,updated_at\n"))
			w.(http.Flusher).Flush()
			select {
			case fetching <- struct{}{}:
			default:
			}
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(src.Close)
	e := newProcEnv(t, src.URL, poke, ttl)
	e.start("sensor", "sensor")
	fetcher := e.start("fetcher", "fetcher")

	runA := e.request(dsA)
	select {
	case <-fetching:
	case <-time.After(30 * time.Second):
		t.Fatal("the fetcher never started downloading run A's file")
	}
	runB := e.request(dsB)
	runs, err := runstate.New(context.Background(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "run B is queued behind run A", func() bool {
		rec, err := runs.Get(context.Background(), "orders", dsB, runB)
		return err == nil && rec.State == runstate.Queued && strings.Contains(rec.Detail, "behind run "+runA)
	})
	l := e.leases()
	// Kill mid-way between two heartbeats (they run every ttl/3 from the handler's start), so
	// the measurement is not skewed by a renewal in flight at the kill.
	time.Sleep(ttl / 6)
	killed := fetcher.signal(t, syscall.SIGKILL)
	_, started := e.published(runB, event.KindAvailable, dsB, ttl+poke+10*time.Second)
	took := started.Sub(killed)
	t.Logf("run B started %s after the holder was killed (lease time %s + one poke %s = %s)", took, ttl, poke, ttl+poke)
	if took > ttl+poke {
		t.Errorf("run B started %s after the kill, want within lease time + one poke (%s)", took, ttl+poke)
	}
	if took < ttl-ttl/3 {
		t.Errorf("run B started %s after the kill, before run A's lease could have expired", took)
	}
	h, held, err := l.Get(context.Background(), "orders")
	if err != nil || !held || h.RunID != runB {
		t.Errorf("lease after takeover: %+v (held %v, err %v), want run B", h, held, err)
	}
}

// A holder paused (SIGSTOP) inside its write transaction past its lease time cannot commit
// after it resumes: the run that took over recorded a greater fencing token first, so the
// paused run's fence check fails in the same transaction as its write, and the staging table
// holds only the new run's rows.
//
// The pause is placed deterministically: the test locks the staging table, so run A's validator
// blocks inside its transaction at its DELETE (seen in pg_stat_activity); the test stops the
// validator there and releases its lock. Run B is another date, so it needs none of A's row
// or slice locks, and it is requested only after A's lease expired and the stopped validator's
// pull requests (5 s) lapsed, so B's landed event goes to the other validator process. Both
// validators start first: a validator starting while A's transaction is open would block in
// its own start-up DDL on the staging table.
func TestPausedHolderCannotCommitAfterLosingItsLease(t *testing.T) {
	const poke, ttl = 200 * time.Millisecond, 3 * time.Second
	dsA, dsB := "2026-11-24", "2026-11-25"
	opts := samplesource.Options{Rows: 50}
	h, err := samplesource.Handler(opts)
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	t.Cleanup(src.Close)
	e := newProcEnv(t, src.URL, poke, ttl)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, e.pg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	e.start("sensor", "sensor")
	e.start("fetcher", "fetcher")
	validators := map[string]*proc{}
	for _, name := range []string{"validator-1", "validator-2"} {
		validators[name] = e.start("validator", name)
	}

	blocker, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, "LOCK TABLE public.staging_orders IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	runA := e.request(dsA)
	admin, err := pgx.Connect(ctx, e.pg)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var holder string
	testkit.Eventually(t, 30*time.Second, "run A's validator waits inside its transaction", func() bool {
		err := admin.QueryRow(ctx, `SELECT application_name FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND state = 'active' AND query LIKE 'DELETE FROM "public"."staging_orders"%'`).Scan(&holder)
		return err == nil
	})
	v1 := validators[holder]
	if v1 == nil {
		t.Fatalf("the blocked DELETE comes from %q, not a validator of this test", holder)
	}
	stopped := v1.signal(t, syscall.SIGSTOP)
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	l := e.leases()
	testkit.Eventually(t, ttl+5*time.Second, "run A's lease expires while its validator is paused", func() bool {
		h, held, err := l.Get(ctx, "orders")
		return err == nil && (!held || h.RunID != runA)
	})
	for time.Since(stopped) < 6*time.Second {
		time.Sleep(100 * time.Millisecond) // the paused validator's pull requests lapse (5 s)
	}
	runB := e.request(dsB)
	vb, _ := e.published(runB, event.KindValidated, dsB, 60*time.Second)
	if err := v1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	fe, _ := e.published(runA, event.KindFailed, dsA, 30*time.Second)
	failed := fe.(*event.Failed)
	if failed.Class != "fenced" || failed.Step != "validator" || !strings.Contains(failed.Error, "fenced: a newer run") {
		t.Errorf("run A failed with %+v, want its validator's write refused by the fence check", failed)
	}
	if !strings.Contains(v1.output(), "fenced: a newer run") {
		t.Errorf("the resumed validator did not report the fence check refusing its commit")
	}

	rows, err := db.Query(ctx, "SELECT load_date::text, run_id, count(*) FROM public.staging_orders GROUP BY 1, 2")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var ds, run string
		var n int
		if err := rows.Scan(&ds, &run, &n); err != nil {
			t.Fatal(err)
		}
		got[ds+" "+run] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{dsB + " " + runB: int(vb.(*event.Validated).Rows)}
	if fmt.Sprint(got) != fmt.Sprint(want) || vb.(*event.Validated).Rows < int64(opts.Rows) {
		t.Errorf("staging_orders holds %v (ds run_id: rows), want only run B's rows: %v", got, want)
	}
	var token int64
	if err := db.QueryRow(ctx, "SELECT token, run_id FROM sluice_fences WHERE pipeline = 'orders'").Scan(&token, &holder); err != nil {
		t.Fatal(err)
	}
	if holder != runB || uint64(token) != vb.Header().Fence || vb.Header().Fence <= failed.Fence {
		t.Errorf("sluice_fences holds token %d of run %s; run B's token is %d, run A's %d", token, holder, vb.Header().Fence, failed.Fence)
	}
}
