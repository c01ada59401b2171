//go:build compose

package main

// TestCompose is `make compose-test`: the docker compose stack (docker-compose.yml with the local
// override deploy/compose/local.yml) on a real Docker engine, driven from outside as a user
// would: runs requested through the CLI container, results read from the published ports.
// It needs the images (`make images`) and DOCKER_HOST (scripts/docker.sh start); the make target
// provides both.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/secret"
)

const (
	composeRows = 50000 // new orders per date: enough that a step is still running when it is killed
	stream      = "SLUICE"
)

// goServiceImages must each stay under 40 MB, run as non-root and have no shell.
var goServiceImages = []string{"sensor", "fetcher", "validator", "partitioner", "alerter", "console"}

type composeStack struct {
	t       *testing.T
	root    string
	envFile string
	env     map[string]string
}

func (s *composeStack) compose(args ...string) (string, error) {
	full := append([]string{"compose", "-p", "sluicetest", "--env-file", s.envFile,
		"-f", filepath.Join(s.root, "docker-compose.yml"), "-f", filepath.Join(s.root, "deploy/compose/local.yml")}, args...)
	cmd := exec.Command("docker", full...)
	cmd.Dir = s.root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *composeStack) must(args ...string) string {
	s.t.Helper()
	start := time.Now()
	out, err := s.compose(args...)
	if err != nil {
		s.dump()
		s.t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	s.t.Logf("docker compose %s (%.1fs)", strings.Join(args, " "), time.Since(start).Seconds())
	return out
}

// dump logs what each container said, for a failure's diagnosis.
func (s *composeStack) dump() {
	out, _ := s.compose("ps", "-a")
	s.t.Logf("docker compose ps -a:\n%s", out)
	out, _ = s.compose("logs", "--no-color", "--tail", "30")
	s.t.Logf("docker compose logs --tail 30:\n%s", out)
}

// port is the host address of a service's published port.
func (s *composeStack) port(service string, port int) string {
	s.t.Helper()
	out := strings.TrimSpace(s.must("port", service, strconv.Itoa(port)))
	if out == "" {
		s.t.Fatalf("%s:%d is not published", service, port)
	}
	return strings.Split(out, "\n")[0]
}

// cli runs the sluice command line in its container, as the admin user.
func (s *composeStack) cli(command string, args ...string) string {
	s.t.Helper()
	return s.must(append([]string{"run", "--rm", "-T", "sluice", command, "--config", "/etc/sluice/sluice.yaml"}, args...)...)
}

func secretHex(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func TestCompose(t *testing.T) {
	root := os.Getenv("SLUICE_ROOT")
	if root == "" {
		t.Fatal("SLUICE_ROOT is not set: run `make compose-test`")
	}
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("no Docker engine (DOCKER_HOST=%q): %v %s; `make compose-test` starts one", os.Getenv("DOCKER_HOST"), err, out)
	}
	dir := t.TempDir()
	s := &composeStack{t: t, root: root, envFile: filepath.Join(dir, ".env"), env: map[string]string{
		// Generated, like a user's .env: nothing secret is in the compose file.
		"SLUICE_PG_ADMIN_PASSWORD":       secretHex(t),
		"SLUICE_PG_LOADER_PASSWORD":      secretHex(t),
		"SLUICE_PG_PARTITIONER_PASSWORD": secretHex(t),
		"SLUICE_PG_DBT_PASSWORD":         secretHex(t),
		"SLUICE_PG_READER_PASSWORD":      secretHex(t),
		"SLUICE_S3_ACCESS_KEY":           "sluice",
		"SLUICE_S3_SECRET_KEY":           secretHex(t),
		"SLUICE_GRAFANA_ADMIN_PASSWORD":  secretHex(t),
		"SLUICE_CONSOLE_PASSWORD":        secretHex(t),
		"SLUICE_SAMPLE_ROWS":             strconv.Itoa(composeRows),
		// Empty host ports: Docker picks free ones on 127.0.0.1 (another stack may hold 4222).
		"SLUICE_NATS_PORT": "", "SLUICE_PG_PORT": "", "SLUICE_S3_PORT": "", "SLUICE_PROMETHEUS_PORT": "",
		"SLUICE_JAEGER_PORT": "", "SLUICE_GRAFANA_PORT": "", "SLUICE_CONSOLE_PORT": "",
	}}
	for _, u := range []string{"ADMIN", "SENSOR", "FETCHER", "VALIDATOR", "PARTITIONER", "DBTRUNNER", "ALERTER", "CONSOLE"} {
		s.env["SLUICE_NATS_"+u+"_PASSWORD"] = secretHex(t)
	}
	var env strings.Builder
	for k, v := range s.env {
		fmt.Fprintf(&env, "%s=%s\n", k, v)
	}
	if err := os.WriteFile(s.envFile, []byte(env.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _ = s.compose("down", "-v", "--remove-orphans") // a previous run's leftovers
	t.Cleanup(func() {
		if t.Failed() {
			s.dump()
		}
		if os.Getenv("SLUICE_COMPOSE_KEEP") != "" {
			t.Logf("SLUICE_COMPOSE_KEEP: the stack stays up (project sluicetest, env file %s)", s.envFile)
			return
		}
		if out, err := s.compose("down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("docker compose down -v: %v\n%s", err, out)
		}
	})

	checkImages(t)

	start := time.Now()
	s.must("up", "-d", "--no-build", "--wait", "--wait-timeout", "300")
	t.Logf("stack up and healthy in %.1fs", time.Since(start).Seconds())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	js, nc := s.natsAdmin(t)
	defer nc.Close()
	db := s.postgres(ctx, t)
	defer db.Close(context.Background())
	objects := s.s3(ctx, t)

	// One date end to end, requested through the CLI container, which follows it to the end.
	out := s.cli("trigger", "--pipeline", "orders", "--date", "2026-11-24", "--timeout", "5m")
	t.Logf("sluice trigger:\n%s", out)
	s.expectCompleted(ctx, t, js, "2026-11-24")
	want := expectedRows(t, "2026-11-24")
	if n := count(ctx, t, db, "SELECT count(*) FROM orders WHERE load_date = '2026-11-24'"); n != want["2026-11-24"] {
		t.Fatalf("orders for 2026-11-24: %d rows, want %d", n, want["2026-11-24"])
	}
	head, err := objects.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sluice"), Key: aws.String("raw/orders/2026-11-24.csv")})
	if err != nil {
		t.Fatalf("landed object raw/orders/2026-11-24.csv: %v", err)
	}
	t.Logf("2026-11-24: %d rows in orders, s3://sluice/raw/orders/2026-11-24.csv is %d bytes, one completed event", want["2026-11-24"], aws.ToInt64(head.ContentLength))

	// Three validators share the one durable consumer: each replica keeps its own pull requests
	// waiting on it, so three replicas keep three times as many as one.
	before := consumerInfo(ctx, t, js, "validator").NumWaiting
	s.must("up", "-d", "--no-build", "--wait", "--wait-timeout", "300", "--scale", "validator=3")
	target := max(3*before, 3)
	waiting := composeWait(t, 30*time.Second, fmt.Sprintf("%d pull requests waiting on the validator consumer", target), func() (int, bool) {
		n := consumerInfo(ctx, t, js, "validator").NumWaiting
		return n, n >= target
	})
	if out := strings.TrimSpace(s.must("ps", "-q", "validator")); len(strings.Fields(out)) != 3 {
		t.Fatalf("validator containers: %q, want 3", out)
	}
	t.Logf("validator consumer: %d pull request(s) waiting with one replica, %d with three", before, waiting)

	// Three more dates, with NATS restarted and every validator SIGKILLed while they run.
	s.cli("backfill", "--pipeline", "orders", "--from", "2026-11-25", "--to", "2026-11-27", "--detach")
	composeWait(t, 3*time.Minute, "2026-11-25 landed", func() (int, bool) {
		n := subjectCount(ctx, t, js, "etl.orders.landed.2026-11-25")
		return n, n > 0
	})
	s.must("restart", "nats")
	nc.Close()
	js, nc = s.natsAdmin(t)
	defer nc.Close()
	// Kill every validator while one holds a landed date it has not validated yet (its message
	// delivered, unacked): the broker redelivers it after the ack wait to a new replica, under the
	// same lease. 2026-11-27 is the second chance if 2026-11-26 was validated between two polls.
	killed := ""
	for _, ds := range []string{"2026-11-26", "2026-11-27"} {
		composeWait(t, 3*time.Minute, ds+" landed", func() (int, bool) {
			n := subjectCount(ctx, t, js, "etl.orders.landed."+ds)
			return n, n > 0
		})
		if subjectCount(ctx, t, js, "etl.orders.validated."+ds) == 0 {
			s.must("kill", "-s", "SIGKILL", "validator")
			killed = ds
			break
		}
	}
	if killed == "" {
		t.Fatal("both dates were validated before the validators could be killed: no SIGKILL mid-step")
	}
	t.Logf("validators SIGKILLed with %s landed and not yet validated", killed)
	s.must("up", "-d", "--no-build", "--wait", "--wait-timeout", "300", "--scale", "validator=3")
	for _, ds := range []string{"2026-11-25", "2026-11-26", "2026-11-27"} {
		s.expectCompleted(ctx, t, js, ds)
	}
	// Every run completed once, and nothing was loaded twice.
	for _, ds := range []string{"2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"} {
		if n := subjectCount(ctx, t, js, "etl.orders.completed."+ds); n != 1 {
			t.Errorf("%s: %d completed events, want 1", ds, n)
		}
	}
	want = expectedRows(t, "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27")
	got := map[string]int{}
	rows, err := db.Query(ctx, "SELECT load_date::text, count(*) FROM orders GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ds string
		var n int
		if err := rows.Scan(&ds, &n); err != nil {
			t.Fatal(err)
		}
		got[ds] = n
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	total, distinct := count(ctx, t, db, "SELECT count(*) FROM orders"), count(ctx, t, db, "SELECT count(DISTINCT order_id) FROM orders")
	if fmt.Sprint(got) != fmt.Sprint(want) || total != distinct {
		t.Errorf("orders per load_date %v (%d rows, %d distinct ids), want %v", got, total, distinct, want)
	}
	t.Logf("4 dates completed once each; orders per load_date %v, %d rows, all distinct", got, total)
	s.logHandlers(t)
	s.checkScrapes(t)
}

// checkScrapes asks Prometheus which targets it scrapes: every replica of every service, up.
func (s *composeStack) checkScrapes(t *testing.T) {
	t.Helper()
	api := "http://" + s.port("prometheus", 9090) + "/api/v1/query?query=" + url.QueryEscape(`up{job="sluice"}`)
	want := map[string]int{"sensor": 1, "fetcher": 1, "validator": 3, "partitioner": 1, "dbtrunner": 1, "alerter": 1}
	var got map[string]int
	composeWait(t, 90*time.Second, "Prometheus scraping every replica", func() (int, bool) {
		resp, err := http.Get(api)
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil {
			return 0, false
		}
		got = map[string]int{}
		for _, res := range r.Data.Result {
			if res.Value[1] == "1" {
				got[res.Metric["service"]]++
			}
		}
		return len(r.Data.Result), fmt.Sprint(got) == fmt.Sprint(want)
	})
	t.Logf("Prometheus scrapes, up, per service: %v", got)
}

// expectedRows is what orders must hold after loading dates in order: each order id in the
// partition of the last date that carried it (the sample source's updates move rows forward).
func expectedRows(t *testing.T, dates ...string) map[string]int {
	t.Helper()
	last := map[int64]string{}
	for _, ds := range dates {
		orders, err := samplesource.Orders(ds, samplesource.Options{Rows: composeRows})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range orders {
			last[o.OrderID] = ds
		}
	}
	n := map[string]int{}
	for _, ds := range last {
		n[ds]++
	}
	return n
}

// checkImages prints the images' sizes and checks the Go service images: under 40 MB, a
// non-root user, and no shell.
func checkImages(t *testing.T) {
	type image struct {
		Size   int64
		Config struct{ User string }
	}
	names := []string{"sluice/sluice", "sluice/sensor", "sluice/fetcher", "sluice/validator", "sluice/partitioner", "sluice/dbtrunner", "sluice/alerter", "sluice/console",
		"sluice-local/nats:v2.15.2", "sluice-local/versitygw:v1.8.0", "sluice-local/postgres:15-bookworm", "sluice-local/prometheus:bookworm"}
	var table strings.Builder
	fmt.Fprintf(&table, "%-36s %10s  %s\n", "image", "size (MB)", "user")
	for _, n := range names {
		if !strings.Contains(n, ":") {
			n += ":" + tagOr("dev")
		}
		out, err := exec.Command("docker", "image", "inspect", n).Output()
		if err != nil {
			t.Fatalf("image %s is missing: run `make images`", n)
		}
		var imgs []image
		if err := json.Unmarshal(out, &imgs); err != nil || len(imgs) != 1 {
			t.Fatalf("docker image inspect %s: %v", n, err)
		}
		img := imgs[0]
		fmt.Fprintf(&table, "%-36s %10.1f  %s\n", n, float64(img.Size)/1e6, img.Config.User)
		if !strings.HasPrefix(n, "sluice/") {
			continue
		}
		if u := img.Config.User; u == "" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root") {
			t.Errorf("%s runs as root (USER %q)", n, u)
		}
		svc := strings.TrimPrefix(strings.Split(n, ":")[0], "sluice/")
		if !contains(goServiceImages, svc) {
			continue
		}
		if img.Size >= 40e6 {
			t.Errorf("%s is %.1f MB, over 40 MB", n, float64(img.Size)/1e6)
		}
		if out, err := exec.Command("docker", "run", "--rm", "--entrypoint", "/bin/sh", n, "-c", "true").CombinedOutput(); err == nil {
			t.Errorf("%s has a shell (/bin/sh ran): %s", n, out)
		}
	}
	t.Logf("image sizes:\n%s", table.String())
	fmt.Print("image sizes:\n" + table.String())
}

func tagOr(def string) string {
	if v := os.Getenv("SLUICE_TAG"); v != "" {
		return v
	}
	return def
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *composeStack) natsAdmin(t *testing.T) (jetstream.JetStream, *nats.Conn) {
	t.Helper()
	url := "nats://" + s.port("nats", 4222)
	// RetryOnFailedConnect: right after `docker compose restart nats` the server may not answer yet.
	nc, err := nats.Connect(url, nats.Name("compose-test"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.UserInfo("admin", s.env["SLUICE_NATS_ADMIN_PASSWORD"]))
	if err != nil {
		t.Fatalf("nats %s: %v", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js, nc
}

func (s *composeStack) postgres(ctx context.Context, t *testing.T) *pgx.Conn {
	t.Helper()
	dsn := fmt.Sprintf("postgres://sluice_admin:%s@%s/sluice", s.env["SLUICE_PG_ADMIN_PASSWORD"], s.port("postgres", 5432))
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	return c
}

func (s *composeStack) s3(ctx context.Context, t *testing.T) *s3.Client {
	t.Helper()
	lookup := func(name string) (string, bool) { v, ok := s.env[name]; return v, ok }
	cfg := config.S3{Endpoint: secret.New("http://" + s.port("s3", 7070)), Region: "us-east-1", Bucket: "sluice",
		AccessKey: secret.New("env:SLUICE_S3_ACCESS_KEY"), SecretKey: secret.New("env:SLUICE_S3_SECRET_KEY"), PathStyle: true}
	for _, v := range []*secret.Value{&cfg.Endpoint, &cfg.AccessKey, &cfg.SecretKey} {
		if err := v.Resolve(lookup); err != nil {
			t.Fatal(err)
		}
	}
	c, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func count(ctx context.Context, t *testing.T, db *pgx.Conn, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(ctx, q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func consumerInfo(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatalf("consumer %s: %v", name, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("consumer %s: %v", name, err)
	}
	return ci
}

// subjectCount is the number of messages on one subject of the events stream.
func subjectCount(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string) int {
	t.Helper()
	for {
		st, err := js.Stream(ctx, stream)
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = st.Info(ctx, jetstream.WithSubjectFilter(subject)); err == nil {
				return int(info.State.Subjects[subject])
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream %s: %v", stream, err)
		}
		time.Sleep(time.Second) // NATS restarting: the client reconnects
	}
}

func (s *composeStack) expectCompleted(ctx context.Context, t *testing.T, js jetstream.JetStream, ds string) {
	t.Helper()
	composeWait(t, 5*time.Minute, ds+" completed", func() (int, bool) {
		if n := subjectCount(ctx, t, js, "etl.orders.failed."+ds); n > 0 {
			t.Fatalf("%s failed", ds)
		}
		n := subjectCount(ctx, t, js, "etl.orders.completed."+ds)
		return n, n > 0
	})
}

// composeWait polls until ok or fails the test after d.
func composeWait(t *testing.T, d time.Duration, what string, f func() (int, bool)) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n, ok := f()
		if ok {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s (last value %d)", d, what, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logHandlers prints which validator replica handled which date, from the containers' logs.
func (s *composeStack) logHandlers(t *testing.T) {
	out, err := s.compose("logs", "--no-color", "validator")
	if err != nil {
		t.Logf("docker compose logs validator: %v", err)
		return
	}
	handled := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		prefix, line, ok := strings.Cut(sc.Text(), "|")
		if !ok {
			continue
		}
		var rec struct {
			Msg string `json:"msg"`
			DS  string `json:"ds"`
		}
		if json.Unmarshal([]byte(strings.TrimSpace(line)), &rec) != nil || rec.DS == "" {
			continue
		}
		replica := strings.TrimSpace(prefix)
		if !contains(handled[replica], rec.DS) {
			handled[replica] = append(handled[replica], rec.DS)
		}
	}
	var lines []string
	for r, dss := range handled {
		sort.Strings(dss)
		lines = append(lines, fmt.Sprintf("  %s: %s", r, strings.Join(dss, " ")))
	}
	sort.Strings(lines)
	t.Logf("dates in each validator replica's log:\n%s", strings.Join(lines, "\n"))
}
