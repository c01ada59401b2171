package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/samplesource"
	"github.com/sluice-etl/sluice/pkg/testkit"
	"github.com/sluice-etl/sluice/services/fetcher"
	"github.com/sluice-etl/sluice/services/partitioner"
	"github.com/sluice-etl/sluice/services/validator"
)

// version is one row of a day's file, as the expected table sees it.
type version struct {
	id    int64
	cust  int32
	cents int64
	at    time.Time
	ds    string
}

// newer is the upsert rule, written out independently of the dbt model: a later updated_at wins;
// the same updated_at from two days belongs to the earlier day; within one day's file the
// greatest amount, then customer_id, wins.
func newer(a, b version) bool {
	switch {
	case !a.at.Equal(b.at):
		return a.at.After(b.at)
	case a.ds != b.ds:
		return a.ds < b.ds
	case a.cents != b.cents:
		return a.cents > b.cents
	}
	return a.cust > b.cust
}

// expectedOrders is the table after the given days were run, in any order, any number of times.
func expectedOrders(files map[string][]version, done map[string]bool) map[int64]version {
	out := map[int64]version{}
	for ds, rows := range files {
		if !done[ds] {
			continue
		}
		for _, v := range rows {
			if cur, ok := out[v.id]; !ok || newer(v, cur) {
				out[v.id] = v
			}
		}
	}
	return out
}

func cents(amount string) int64 {
	whole, frac, _ := strings.Cut(amount, ".")
	w, _ := strconv.ParseInt(whole, 10, 64)
	f, _ := strconv.ParseInt((frac + "00")[:2], 10, 64)
	return w*100 + f
}

func formatCents(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }

// genFiles builds the days' files from samplesource.Orders (new orders, and updates of the day
// before's) plus what real feeds also send: an older version of an order after its newer one in
// the same file, one version twice with different amounts, a version of an earlier day's order
// sent again unchanged or with another amount, a stale version, and an update to an order from
// several days back.
func genFiles(t *testing.T, rng *rand.Rand, dates []string, opts samplesource.Options) map[string][]version {
	t.Helper()
	originals := map[string][]version{}
	for _, ds := range dates {
		orders, err := samplesource.Orders(ds, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range orders {
			originals[ds] = append(originals[ds], version{id: o.OrderID, cust: o.CustomerID, cents: cents(o.Amount), at: o.UpdatedAt, ds: ds})
		}
	}
	pick := func(rows []version) version { return rows[rng.IntN(len(rows))] }
	files := map[string][]version{}
	for i, ds := range dates {
		day, _ := time.Parse(time.DateOnly, ds)
		rows := slices.Clone(originals[ds])
		own := originals[ds]
		for range 3 { // an older version later in the same file
			v := pick(own)
			v.cents = 100 + rng.Int64N(10000)
			v.at = v.at.Add(-time.Duration(1+rng.IntN(3600)) * time.Second)
			rows = append(rows, v)
		}
		v := pick(own) // the same version twice, with different amounts
		v.cents += 100
		rows = append(rows, v)
		if i >= 2 { // an earlier day's version sent again, unchanged and changed
			old := originals[dates[i-2]]
			for _, v := range []version{pick(old), pick(old)} {
				v.ds = ds
				rows = append(rows, v)
			}
			v := pick(old)
			v.ds, v.cents = ds, v.cents+1
			rows = append(rows, v)
		}
		if i >= 1 { // a stale version of yesterday's order
			v := pick(originals[dates[i-1]])
			v.ds, v.at = ds, v.at.Add(-24*time.Hour)
			rows = append(rows, v)
		}
		if i >= 5 { // a late update to an order from five days back
			v := pick(originals[dates[i-5]])
			v.ds, v.cents = ds, 100+rng.Int64N(10000)
			v.at = day.Add(time.Duration(rng.IntN(86400)) * time.Second)
			rows = append(rows, v)
		}
		files[ds] = rows
	}
	return files
}

// writeCSV writes a day's file with its columns in a random order and its timestamps in the
// formats and zones the contract accepts.
func writeCSV(t *testing.T, rng *rand.Rand, path string, rows []version) {
	t.Helper()
	cols := []string{"order_id", "customer_id", "amount", "updated_at"}
	rng.Shuffle(len(cols), func(i, j int) { cols[i], cols[j] = cols[j], cols[i] })
	plus2 := time.FixedZone("", 2*3600)
	var b strings.Builder
	b.WriteString(strings.Join(cols, ",") + "\n")
	for _, v := range rows {
		var at string
		switch rng.IntN(4) {
		case 0:
			at = v.at.UTC().Format(time.RFC3339)
		case 1:
			at = v.at.In(plus2).Format("2006-01-02 15:04:05-07:00")
		case 2:
			at = v.at.UTC().Format("2006-01-02 15:04:05") // no zone: read as UTC
		default:
			at = v.at.In(plus2).Format("2006-01-02T15:04:05-0700")
		}
		vals := map[string]string{"order_id": strconv.FormatInt(v.id, 10), "customer_id": strconv.Itoa(int(v.cust)),
			"amount": formatCents(v.cents), "updated_at": at}
		for i, c := range cols {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(vals[c])
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRandomizedDatesInAnyOrder runs 30 days of generated orders, with updates, through the real
// fetcher, validator, partitioner and dbt model, in a shuffled order with reruns, and after every
// run compares the orders table row by row with a table computed independently of sluice.
// SLUICE_TEST_SEED=<n> replays a run.
func TestRandomizedDatesInAnyOrder(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("SLUICE_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (SLUICE_TEST_SEED=%d replays this run)", seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	ctx := t.Context()

	days, reruns := 30, 6
	if testing.Short() {
		days, reruns = 6, 2
	}
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	var dates []string
	for i := range days {
		dates = append(dates, start.AddDate(0, 0, i).Format(time.DateOnly))
	}
	files := genFiles(t, rng, dates, samplesource.Options{Rows: 150, UpdateRatio: 0.3})
	dir := t.TempDir()
	for _, ds := range dates {
		writeCSV(t, rng, filepath.Join(dir, ds+".csv"), files[ds])
	}
	plan := slices.Clone(dates)
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	for range reruns { // a date again, somewhere after its first run
		i := rng.IntN(len(plan))
		at := i + 1 + rng.IntN(len(plan)-i)
		plan = slices.Insert(plan, at, plan[i])
	}
	t.Logf("order: %s", strings.Join(plan, " "))

	// The real components, on the test's PostgreSQL and S3, the source serving the files.
	pgURL := testkit.Postgres(t)
	s3cfg := testkit.S3(t)
	s3c, err := objstore.New(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	h, err := samplesource.Handler(samplesource.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	src := httptest.NewServer(h)
	defer src.Close()
	p := config.Pipeline{Name: "orders", Contract: "orders", StagingTable: "staging_orders",
		Landing: config.Landing{Key: "raw/{pipeline}/{ds}.csv"}, Source: config.Source{URL: src.URL + "/data/{ds}.csv", MaxBytes: config.DefaultMaxBytes},
		Target: config.Target{Schema: "public", Table: "orders", PartitionColumn: "load_date"}}
	contracts, err := contract.ForPipelines([]config.Pipeline{p}, "")
	if err != nil {
		t.Fatal(err)
	}
	fe, err := fetcher.New(&http.Client{Timeout: time.Minute}, s3c, s3cfg.Bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := validator.New(pool, s3c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Prepare(ctx, []config.Pipeline{p}, contracts); err != nil {
		t.Fatal(err)
	}
	if err := fence.Ensure(ctx, pool); err != nil {
		t.Fatal(err)
	}
	pt, err := partitioner.New(pool, nil, "", contracts, nil)
	if err != nil {
		t.Fatal(err)
	}
	dbt := startDBTSession(t, pgURL, map[string]contract.Spec{"orders": contracts["orders"].Spec(p.StagingTable)})

	done := map[string]bool{}
	var spent [3]time.Duration // sluice's steps, dbt, the comparison
	defer func() {
		t.Logf("%d runs: fetch+validate+partition %s, dbt %s, compare %s", len(plan), spent[0].Round(time.Millisecond),
			spent[1].Round(time.Millisecond), spent[2].Round(time.Millisecond))
	}()
	for i, ds := range plan {
		t0 := time.Now()
		what := fmt.Sprintf("run %d of %d (%s", i+1, len(plan), ds)
		if done[ds] {
			what += ", a rerun"
		}
		what += ")"
		run := event.Run{RunID: ulid.Make().String(), Pipeline: "orders", DS: ds, Fence: uint64(i + 1), RequestedAt: time.Now().UTC()}
		out, err := fe.Handle(ctx, &p, &event.Available{Run: run, URL: src.URL + "/data/" + ds + ".csv"})
		if err != nil {
			t.Fatalf("%s: fetch: %v", what, err)
		}
		val, err := v.Handle(ctx, p, contracts["orders"], out)
		if err != nil {
			t.Fatalf("%s: validate: %v", what, err)
		}
		if val.Rows != int64(len(files[ds])) {
			t.Fatalf("%s: staged %d rows, the file has %d", what, val.Rows, len(files[ds]))
		}
		if _, err := pt.Handle(ctx, &p, val); err != nil {
			t.Fatalf("%s: partition: %v", what, err)
		}
		t1 := time.Now()
		dbt.build(t, what, ds, run.RunID)
		t2 := time.Now()
		done[ds] = true
		compareOrders(t, what, pool, expectedOrders(files, done))
		spent[0] += t1.Sub(t0)
		spent[1] += t2.Sub(t1)
		spent[2] += time.Since(t2)
	}
	if len(done) != days {
		t.Fatalf("%d days run, want %d", len(done), days)
	}
}

// compareOrders checks the orders table against want, row by row: values, load_date, and the
// partition that holds the row.
func compareOrders(t *testing.T, what string, pool *pgxpool.Pool, want map[int64]version) {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT order_id, customer_id, amount::text, updated_at, load_date::text, tableoid::regclass::text FROM orders`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]version{}
	var problems []string
	for rows.Next() {
		var (
			g         version
			amount    string
			partition string
		)
		if err := rows.Scan(&g.id, &g.cust, &amount, &g.at, &g.ds, &partition); err != nil {
			t.Fatal(err)
		}
		g.cents = cents(amount)
		if _, dup := got[g.id]; dup {
			problems = append(problems, fmt.Sprintf("order %d is stored twice", g.id))
		}
		if want := "orders_p" + strings.ReplaceAll(g.ds, "-", ""); partition != want {
			problems = append(problems, fmt.Sprintf("order %d with load_date %s is in partition %s", g.id, g.ds, partition))
		}
		got[g.id] = g
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			problems = append(problems, fmt.Sprintf("order %d missing, want %+v", id, w))
		} else if g.cust != w.cust || g.cents != w.cents || !g.at.Equal(w.at) || g.ds != w.ds {
			problems = append(problems, fmt.Sprintf("order %d = %s %d %s %s, want %s %d %s %s", id,
				formatCents(g.cents), g.cust, g.at.UTC().Format(time.RFC3339), g.ds,
				formatCents(w.cents), w.cust, w.at.UTC().Format(time.RFC3339), w.ds))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			problems = append(problems, fmt.Sprintf("order %d should not be there", id))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Fatalf("after %s: %d rows wrong (table %d rows, expected %d):\n%s", what, len(problems), len(got), len(want),
			strings.Join(problems[:min(len(problems), 10)], "\n"))
	}
}

// dbtSession is dbt-core running testdata/dbt_session.py: one Python process for all the test's
// dbt commands, against the real project and database.
type dbtSession struct {
	dir     string
	project string
	specs   map[string]contract.Spec // var sluice_pipelines, as the dbt-runner passes it
	in      io.Writer
	out     *bufio.Scanner
	fence   int // the fencing token of the last command: the model refuses to run without one
}

func startDBTSession(t *testing.T, pgURL string, specs map[string]contract.Spec) *dbtSession {
	t.Helper()
	python := filepath.Join(filepath.Dir(testkit.DBT(t)), "python")
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("no python next to dbt (%v): run `make tools`", err)
	}
	pc, err := pgx.ParseConfig(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	profile := fmt.Sprintf("sluice:\n  target: test\n  outputs:\n    test:\n      type: postgres\n      host: %q\n      port: %d\n"+
		"      user: %q\n      password: %q\n      dbname: %q\n      schema: public\n      threads: 1\n",
		pc.Host, pc.Port, pc.User, pc.Password, pc.Database)
	if err := os.WriteFile(filepath.Join(dir, "profiles.yml"), []byte(profile), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, python, filepath.Join("testdata", "dbt_session.py"))
	cmd.Env = append(os.Environ(), "DBT_SEND_ANONYMOUS_USAGE_STATS=false")
	cmd.Stderr = t.Output()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait(); cancel() })
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	s := &dbtSession{dir: dir, project: filepath.Join(testkit.RepoRoot(t), "dbt_project"), specs: specs, in: in, out: sc}
	s.do(t, "parsing the dbt project", "parse", "2000-01-01", "parse")
	return s
}

// build runs `dbt build` (the upsert and its tests) for one ds and fails the test unless every
// node passed.
func (s *dbtSession) build(t *testing.T, what, ds, runID string) {
	t.Helper()
	nodes := s.do(t, what, "build", ds, runID)
	if len(nodes) == 0 {
		t.Fatalf("%s: dbt build ran no node", what)
	}
	for _, n := range nodes {
		if n.Status != "success" && n.Status != "pass" {
			t.Fatalf("%s: dbt node %s: %s %s", what, n.Node, n.Status, n.Message)
		}
	}
}

type dbtNode struct{ Node, Status, Message string }

// do runs one dbt command with the run's vars and returns its node results.
func (s *dbtSession) do(t *testing.T, what, command, ds, runID string) []dbtNode {
	t.Helper()
	s.fence++ // each upsert is a newer lease holder: the model refuses to run without a token
	vars, _ := json.Marshal(map[string]any{"ds": ds, "run_id": runID, "pipeline": "orders", "sluice_pipelines": s.specs, "fence": s.fence})
	args := []string{command}
	if command == "build" {
		args = append(args, "--select", "stg_orders", "orders")
	}
	line, _ := json.Marshal(append(args, "--vars", string(vars), "--project-dir", s.project, "--profiles-dir", s.dir,
		"--target-path", filepath.Join(s.dir, "target"), "--log-path", filepath.Join(s.dir, "logs"), "--no-use-colors"))
	if _, err := fmt.Fprintf(s.in, "%s\n", line); err != nil {
		t.Fatalf("%s: dbt: %v", what, err)
	}
	var log []string
	for s.out.Scan() {
		res, ok := strings.CutPrefix(s.out.Text(), "SLUICE-RESULT ")
		if !ok {
			log = append(log, s.out.Text())
			continue
		}
		var r struct {
			Success bool
			Error   string
			Nodes   []dbtNode
		}
		if err := json.Unmarshal([]byte(res), &r); err != nil {
			t.Fatal(err)
		}
		if !r.Success {
			t.Fatalf("%s: dbt %s failed: %s %+v\n%s", what, command, r.Error, r.Nodes, strings.Join(log, "\n"))
		}
		return r.Nodes
	}
	t.Fatalf("%s: the dbt session ended: %v\n%s", what, s.out.Err(), strings.Join(log, "\n"))
	return nil
}
