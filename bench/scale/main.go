// Command scale-bench measures sluice spread over a JetStream cluster (bench/RESULTS.md, section
// "Scale"): many generated pipelines × dates of small files through nats-server nodes and the six
// service binaries, with one and then two replicas of every service, measured in the same run;
// and the scheduling process and the broker holding 100 to 10,000 pipeline schedules. Run it with
// `make bench-scale` (it needs scripts/with-infra.sh's PostgreSQL and S3 and `make build`).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-etl/sluice/pkg/testkit/cluster"
)

func main() {
	root := flag.String("root", os.Getenv("SLUICE_ROOT"), "the repository (scripts/with-infra.sh exports SLUICE_ROOT)")
	dir := flag.String("dir", "", "work directory (default <root>/.sluice/bench/scale)")
	pipelines := flag.Int("pipelines", 100, "generated pipelines")
	dates := flag.Int("dates", 5, "dates per pipeline")
	rows := flag.Int("rows", 100, "rows of each date's file (the sample source's orders)")
	replicaList := flag.String("replicas", "1,2", "replicas of every service, one measurement each, in this order")
	nodes := flag.Int("nodes", 3, "nats-server nodes (3: a cluster, streams and KV at R3)")
	schedList := flag.String("schedules", "100,1000,10000", "scheduled pipelines, one measurement each; empty: skip")
	schedBin := flag.String("scheduler", "", "the process that installs and serves the schedules (default <root>/.sluice/bin/sluice-sensor)")
	window := flag.Duration("window", 20*time.Second, "sampling window of each schedules measurement")
	timeout := flag.Duration("timeout", 90*time.Minute, "bound on each runs measurement")
	leaseTTL := flag.Duration("lease-ttl", 30*time.Minute, "the pipelines' lease.ttl: a run queued behind a step's backlog keeps its lease only this long (docs/scaling.md)")
	only := flag.String("only", "", "runs or schedules: measure one part")
	results := flag.String("results", "", "replace the \"Scale\" section of this markdown file")
	flag.Parse()
	if *root == "" {
		log.Fatal("-root or SLUICE_ROOT is required (run it through make bench-scale)")
	}
	e := &env{root: *root, dir: *dir, bin: filepath.Join(*root, ".sluice", "bin"), nodes: *nodes, leaseTTL: *leaseTTL,
		dbt: os.Getenv("SLUICE_TEST_DBT"), pgAdmin: os.Getenv("SLUICE_TEST_DATABASE_URL"), s3Endpoint: os.Getenv("SLUICE_TEST_S3_ENDPOINT")}
	if e.dir == "" {
		e.dir = filepath.Join(*root, ".sluice", "bench", "scale")
	}
	if e.pgAdmin == "" || e.s3Endpoint == "" || e.dbt == "" {
		log.Fatal("SLUICE_TEST_DATABASE_URL, SLUICE_TEST_S3_ENDPOINT and SLUICE_TEST_DBT are unset: run it through make bench-scale (scripts/with-infra.sh)")
	}
	if *schedBin == "" {
		*schedBin = filepath.Join(e.bin, "sluice-sensor")
	}
	for _, b := range append([]string{"sluice", *schedBin}, prefixed("sluice-", services)...) {
		if !filepath.IsAbs(b) {
			b = filepath.Join(e.bin, b)
		}
		if _, err := os.Stat(b); err != nil {
			log.Fatalf("%v (run make build)", err)
		}
	}
	replicas, err := ints(*replicaList)
	if err != nil {
		log.Fatalf("-replicas: %v", err)
	}
	counts, err := ints(*schedList)
	if err != nil {
		log.Fatalf("-schedules: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := os.MkdirAll(filepath.Join(e.dir, "bin"), 0o755); err != nil {
		log.Fatal(err)
	}
	// The broker is the server module sluice embeds, built as a binary of its own.
	if e.natsBin, err = cluster.Build(filepath.Join(*root, "pkg"), filepath.Join(e.dir, "bin")); err != nil {
		log.Fatal(err)
	}

	started := time.Now()
	rep := &report{started: started, args: os.Args[1:], nodes: *nodes, leaseTTL: *leaseTTL, rows: *rows, loadStart: loadavg(), rev: revision(*root), window: *window}
	if *only != "schedules" {
		port, err := freePort()
		if err != nil {
			log.Fatal(err)
		}
		src, err := spawn(e.dir, "sample-source", os.Environ(), filepath.Join(e.bin, "sluice"), "sample-source",
			"--addr", fmt.Sprintf("127.0.0.1:%d", port), "--rows", strconv.Itoa(*rows))
		if err != nil {
			log.Fatal(err)
		}
		defer src.stop(5 * time.Second)
		e.source = fmt.Sprintf("http://127.0.0.1:%d", port)
		project := filepath.Join(e.dir, "dbt_project")
		_ = os.RemoveAll(project)
		if err := writeProject(*root, project, *pipelines); err != nil {
			log.Fatal(err)
		}
		for _, r := range replicas {
			res, err := measureRuns(ctx, e, r, *pipelines, *dates, *timeout)
			if err != nil {
				log.Fatal(err)
			}
			log.Printf("replicas %d: %d runs in %s, %.1f runs/min", r, len(res.ended), res.wall.Round(time.Second), res.perMinute())
			rep.runs = append(rep.runs, res)
		}
	}
	if *only != "runs" && len(counts) > 0 {
		rep.scheds, err = measureSchedules(ctx, e, *schedBin, counts, *window)
		if err != nil {
			log.Fatal(err)
		}
	}
	rep.loadEnd = loadavg()
	fmt.Print(rep.String())
	if *results != "" {
		if err := writeResults(*results, rep); err != nil {
			log.Fatal(err)
		}
		log.Printf("updated %s", *results)
	}
}

func prefixed(p string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = p + n
	}
	return out
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// revision is the commit measured, with a note when the code differs from it.
func revision(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--", "pkg", "services", "cmd", "dbt_project", "schemas").Output(); len(st) > 0 {
		rev += " with uncommitted changes"
	}
	return rev
}

// writeResults puts the report in the "Scale" section of the markdown file at path: the whole
// section when the file has none, otherwise only the parts measured, each replacing its own
// subsection (up to the next heading of its level or above); other sections stay as they are.
func writeResults(path string, rep *report) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	start := strings.Index(text, "## Scale\n")
	if start < 0 {
		if !strings.HasSuffix(text, "\n\n") {
			text = strings.TrimRight(text, "\n") + "\n\n"
		}
		return os.WriteFile(path, []byte(text+rep.String()), 0o644)
	}
	for _, part := range []struct{ heading, text string }{{runsHeading, rep.runsPart()}, {schedHeading, rep.schedPart()}} {
		if part.text == "" {
			continue
		}
		end := sectionEnd(text, start+1, "\n## ")
		if i := strings.Index(text[start:end], part.heading+"\n"); i >= 0 {
			from := start + i
			to := min(sectionEnd(text, from+1, "\n### "), sectionEnd(text, from+1, "\n## "))
			text = text[:from] + part.text + text[to:]
		} else {
			text = text[:end] + part.text + text[end:]
		}
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// sectionEnd is where the next heading marked by next starts after from (just after its
// newline), or the end of text.
func sectionEnd(text string, from int, next string) int {
	if i := strings.Index(text[from:], next); i >= 0 {
		return from + i + 1
	}
	return len(text)
}
