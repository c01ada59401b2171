// Command benchdatapath is the harness of the data-path benchmark (bench/datapath/run.sh, `make
// bench-datapath`): it generates orders files, runs the fetcher's and the validator's handlers on
// them, one stage per process so that each stage's peak RSS is its own, and renders the "Data
// path" section of bench/RESULTS.md from what the stages measured. It is a benchmark tool, not
// part of sluice; each stage prints one JSON result line on stdout.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/objstore"
	"github.com/sluice-etl/sluice/pkg/secret"
	"github.com/sluice-etl/sluice/services/fetcher"
	"github.com/sluice-etl/sluice/services/validator"
)

const usage = `usage: benchdatapath COMMAND [flags]
  gen      -rows N -start DS -out FILE      write an orders CSV of N rows
  prepare  -db URL -bucket B                create the staging table and the bucket
  fetch    -url URL -ds DS -landed FILE     fetcher.Handle: source -> S3; writes the landed event
  validate -landed FILE                     validator.Handle: S3 -> contract -> COPY into staging
  e2e      -url URL -ds DS                  fetch then validate in one process
  exec     -name N -- COMMAND...            run and measure a baseline command (psql, the seed)
  report   -results FILE -out RESULTS.md    render the "Data path" section
S3 and PostgreSQL come from the variables scripts/with-infra.sh sets.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "benchdatapath:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "gen":
		return cmdGen(args[1:])
	case "report":
		return cmdReport(args[1:])
	case "exec":
		return cmdExec(args[1:])
	case "prepare", "fetch", "validate", "e2e":
		return cmdStage(ctx, args[0], args[1:])
	}
	fmt.Fprintln(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// result is one measurement, one JSON line of the results file that run.sh collects.
type result struct {
	Name    string  `json:"name"` // psql_copy, fetch, validate, e2e, seed_pandas
	Size    string  `json:"size"` // file label: 1M, 10M
	Rep     int     `json:"rep"`  // 0 for setup or single runs
	Rows    int64   `json:"rows,omitempty"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// FetchSeconds and ValidateSeconds split an e2e run.
	FetchSeconds    float64 `json:"fetch_seconds,omitempty"`
	ValidateSeconds float64 `json:"validate_seconds,omitempty"`
	// MaxRSSKB is the process's peak resident set (getrusage ru_maxrss).
	MaxRSSKB int64 `json:"maxrss_kb,omitempty"`
	// ClientCPU is the CPU seconds (user + system) of the client: the stage's handler, or the
	// whole process that exec ran. PGCPU and S3CPU are what the servers used meanwhile.
	ClientCPU float64 `json:"client_cpu"`
	PGCPU     float64 `json:"pg_cpu"`
	S3CPU     float64 `json:"s3_cpu"`
	// Load1 is the machine's one-minute load average at the end.
	Load1 float64 `json:"load1"`
	// TotalAllocMB is what the Go heap allocated over the whole process (GC churn).
	TotalAllocMB float64 `json:"total_alloc_mb,omitempty"`
}

// orders is the pipeline the stages run: the demo's orders pipeline (sluice.yaml).
func orders() config.Pipeline {
	return config.Pipeline{
		Name:         "orders",
		Contract:     "orders",
		Landing:      config.Landing{Key: "raw/{pipeline}/{ds}.csv"},
		StagingTable: "staging_orders",
		Target:       config.Target{Schema: "public", Table: "orders"},
	}
}

type stageFlags struct {
	db, bucket, url, ds, landed, size, cpuprofile, memprofile string
	rep                                                       int
}

func cmdStage(ctx context.Context, name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var f stageFlags
	fs.StringVar(&f.db, "db", os.Getenv("SLUICE_TEST_DATABASE_URL"), "PostgreSQL URL")
	fs.StringVar(&f.bucket, "bucket", "bench-datapath", "landing bucket")
	fs.StringVar(&f.url, "url", "", "source URL of the file (fetch, e2e)")
	fs.StringVar(&f.ds, "ds", "", "execution date (fetch, e2e)")
	fs.StringVar(&f.landed, "landed", "", "landed event JSON: written by fetch, read by validate")
	fs.StringVar(&f.size, "size", "", "label of the file in the results (1M, 10M)")
	fs.IntVar(&f.rep, "rep", 0, "repetition number in the results")
	fs.StringVar(&f.cpuprofile, "cpuprofile", "", "write a CPU profile of the handler(s) here")
	fs.StringVar(&f.memprofile, "memprofile", "", "write an allocation profile of the handler(s) here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s3c, err := s3Client(ctx)
	if err != nil {
		return err
	}
	var pool *pgxpool.Pool
	if name != "fetch" {
		if pool, err = pgxpool.New(ctx, f.db); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		defer pool.Close()
	}
	p := orders()
	c, err := contract.Load(p.Contract, "")
	if err != nil {
		return err
	}
	var v *validator.Validator
	if pool != nil {
		// Prepare is what the service does at start; it is idempotent and outside the timing.
		if v, err = validator.New(pool, s3c, nil); err != nil {
			return err
		}
		if err := v.Prepare(ctx, []config.Pipeline{p}, map[string]*contract.Contract{p.Name: c}); err != nil {
			return err
		}
	}
	if name == "prepare" {
		return objstore.EnsureBucket(ctx, s3c, f.bucket)
	}

	if f.cpuprofile != "" {
		out, err := os.Create(f.cpuprofile)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if name == "fetch" || name == "e2e" {
		if err := clearLanding(ctx, s3c, p, f); err != nil {
			return err
		}
	}
	r := result{Name: name, Size: f.size, Rep: f.rep}
	servers, cpu0 := sampleServers(), selfCPU()
	start := time.Now()
	switch name {
	case "fetch":
		landed, err := fetch(ctx, s3c, p, f)
		if err != nil {
			return err
		}
		r.Bytes = landed.Object.Size
		if err := writeJSON(f.landed, landed); err != nil {
			return err
		}
	case "validate":
		var in event.Landed
		b, err := os.ReadFile(f.landed)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return fmt.Errorf("%s: %w", f.landed, err)
		}
		out, err := v.Handle(ctx, p, c, &in)
		if err != nil {
			return fmt.Errorf("validate: %w", err)
		}
		r.Rows, r.Bytes = out.Rows, in.Object.Size
	case "e2e":
		landed, err := fetch(ctx, s3c, p, f)
		if err != nil {
			return err
		}
		r.FetchSeconds = time.Since(start).Seconds()
		mid := time.Now()
		out, err := v.Handle(ctx, p, c, landed)
		if err != nil {
			return fmt.Errorf("validate: %w", err)
		}
		r.ValidateSeconds = time.Since(mid).Seconds()
		r.Rows, r.Bytes = out.Rows, landed.Object.Size
	}
	r.Seconds = time.Since(start).Seconds()
	r.ClientCPU = selfCPU() - cpu0
	servers.since(&r)
	r.Load1 = load1()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.TotalAllocMB = float64(ms.TotalAlloc) / (1 << 20)
	r.MaxRSSKB = maxRSSKB()
	if f.memprofile != "" {
		out, err := os.Create(f.memprofile)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.Lookup("allocs").WriteTo(out, 0); err != nil {
			return err
		}
	}
	return printResult(r)
}

func printResult(r result) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(line))
	return err
}

// cmdExec runs a baseline command and measures it like a stage: wall time, its CPU, its peak
// RSS and the servers' CPU. Output "COPY n" (psql) gives the rows; a JSON object (the seed's
// script) gives its fields, its own timing included.
func cmdExec(args []string) error {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	var r result
	fs.StringVar(&r.Name, "name", "", "name of the measurement")
	fs.StringVar(&r.Size, "size", "", "label of the file")
	fs.IntVar(&r.Rep, "rep", 0, "repetition number")
	file := fs.String("file", "", "the loaded file, for its size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 || r.Name == "" {
		return errors.New("exec needs -name and a command")
	}
	if fi, err := os.Stat(*file); err == nil {
		r.Bytes = fi.Size()
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stderr = os.Stderr
	servers := sampleServers()
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	seconds := time.Since(start).Seconds()
	// The command's PostgreSQL backend has exited; give the postmaster a moment to reap it, so
	// its CPU time shows in the postmaster's children's total.
	time.Sleep(500 * time.Millisecond)
	out = bytes.TrimSpace(out)
	switch {
	case bytes.HasPrefix(out, []byte("{")):
		if err := json.Unmarshal(out, &r); err != nil {
			return fmt.Errorf("%s printed %q: %w", fs.Arg(0), out, err)
		}
	case bytes.HasPrefix(out, []byte("COPY ")):
		r.Rows, _ = strconv.ParseInt(string(out[len("COPY "):]), 10, 64)
	}
	if r.Seconds == 0 {
		r.Seconds = seconds
	}
	ps := cmd.ProcessState
	r.ClientCPU = (ps.UserTime() + ps.SystemTime()).Seconds()
	r.MaxRSSKB = childMaxRSSKB(ps)
	servers.since(&r)
	r.Load1 = load1()
	return printResult(r)
}

// clearLanding makes the bucket and removes the ds's landed object: a fetcher skips the upload
// when the landed object already holds what the source serves (a conditional GET answered 304),
// and each run here measures a first landing.
func clearLanding(ctx context.Context, s3c *s3.Client, p config.Pipeline, f stageFlags) error {
	if f.url == "" || f.ds == "" {
		return errors.New("fetch needs -url and -ds")
	}
	if err := objstore.EnsureBucket(ctx, s3c, f.bucket); err != nil {
		return err
	}
	key := config.Expand(p.Landing.Key, p.Name, f.ds, "")
	if _, err := s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("delete s3://%s/%s: %w", f.bucket, key, err)
	}
	return nil
}

// fetch runs fetcher.Handle for f.url exactly as the fetcher service builds it.
func fetch(ctx context.Context, s3c *s3.Client, p config.Pipeline, f stageFlags) (*event.Landed, error) {
	fe, err := fetcher.New(&http.Client{Timeout: 30 * time.Minute}, s3c, f.bucket, nil)
	if err != nil {
		return nil, err
	}
	run := event.Run{RunID: fmt.Sprintf("bench-%s-%d", f.ds, f.rep), Pipeline: p.Name, DS: f.ds, Fence: 1,
		RequestedAt: time.Now().UTC()}
	out, err := fe.Handle(ctx, &p, &event.Available{Run: run, URL: f.url})
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return out, nil
}

// s3Client builds the client from the variables scripts/with-infra.sh exports.
func s3Client(ctx context.Context) (*s3.Client, error) {
	cfg := config.S3{
		Endpoint:  secret.New("env:SLUICE_TEST_S3_ENDPOINT"),
		Region:    "us-east-1",
		AccessKey: secret.New("env:SLUICE_S3_ACCESS_KEY"),
		SecretKey: secret.New("env:SLUICE_S3_SECRET_KEY"),
		PathStyle: true,
	}
	for _, v := range []*secret.Value{&cfg.Endpoint, &cfg.AccessKey, &cfg.SecretKey} {
		if err := v.Resolve(os.LookupEnv); err != nil {
			return nil, fmt.Errorf("%w (run under scripts/with-infra.sh)", err)
		}
	}
	return objstore.New(ctx, cfg)
}

func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
