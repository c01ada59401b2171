package dbtrunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/contract"
	"github.com/sluice-etl/sluice/pkg/fence"
	"github.com/sluice-etl/sluice/pkg/flow"
)

// profileName is the profile and target the runner writes and selects with --profile/--target,
// so it does not depend on what dbt_project.yml calls its profile.
const profileName = "sluice"

// passwordVar carries the password. dbt scrubs DBT_ENV_SECRET_* values from its logs and refuses
// them outside profiles, so even a debug log of the run does not show it.
const passwordVar = "DBT_ENV_SECRET_SLUICE_PG_PASSWORD"

// profileYAML is written for every invocation. It holds only references to environment
// variables: no connection setting, above all no password, lands in a file or on a command line.
const profileYAML = `# written by sluice's dbt runner for one invocation; values come from its environment
` + profileName + `:
  target: ` + profileName + `
  outputs:
    ` + profileName + `:
      type: postgres
      host: "{{ env_var('SLUICE_PG_HOST') }}"
      port: "{{ env_var('SLUICE_PG_PORT') | as_number }}"
      user: "{{ env_var('SLUICE_PG_USER') }}"
      password: "{{ env_var('` + passwordVar + `') }}"
      dbname: "{{ env_var('SLUICE_PG_DBNAME') }}"
      schema: "{{ env_var('SLUICE_PG_SCHEMA') }}"
      sslmode: "{{ env_var('SLUICE_PG_SSLMODE') }}"
      threads: %d
`

// connEnv is the environment the profile reads, from a parsed connection. schema is where dbt
// builds its models (the pipeline's target schema).
func connEnv(c *pgconn.Config, schema string) []string {
	return []string{
		"SLUICE_PG_HOST=" + c.Host,
		"SLUICE_PG_PORT=" + strconv.Itoa(int(c.Port)),
		"SLUICE_PG_USER=" + c.User,
		passwordVar + "=" + c.Password,
		"SLUICE_PG_DBNAME=" + c.Database,
		"SLUICE_PG_SCHEMA=" + schema,
		"SLUICE_PG_SSLMODE=" + sslMode(c),
	}
}

// sslMode recovers libpq's sslmode from the TLS settings pgconn derived from it (pgconn keeps
// no copy of the text). Certificate files given in the URL are not carried over; set them with
// PGSSLROOTCERT, PGSSLCERT and PGSSLKEY, which both pgx and dbt's libpq read.
func sslMode(c *pgconn.Config) string {
	plainFallback, tlsFallback := false, false
	for _, f := range c.Fallbacks {
		if f.Host != c.Host || f.Port != c.Port {
			continue
		}
		if f.TLSConfig == nil {
			plainFallback = true
		} else {
			tlsFallback = true
		}
	}
	switch t := c.TLSConfig; {
	case t == nil && tlsFallback:
		return "allow"
	case t == nil:
		return "disable"
	case plainFallback:
		return "prefer"
	case !t.InsecureSkipVerify:
		return "verify-full"
	case t.VerifyPeerCertificate != nil:
		return "verify-ca"
	default:
		return "require"
	}
}

// sessionEnv sets the session settings of every connection dbt opens (libpq reads PGOPTIONS):
// work_mem (config dbt.work_mem), so a large date's de-duplication, key lookup and counts sort and
// hash in memory instead of spilling at the server's default 4MB; and JIT off: the upsert and the
// run-scoped tests touch every partition of the target, so their plans have hundreds of nodes, and
// compiling them took 0.6 s to over 10 s for a statement that runs in 0.1-0.3 s (bench/RESULTS.md,
// "End to end").
func sessionEnv(workMem string) string {
	opts := "-c jit=off"
	if workMem != "" {
		opts += " -c work_mem=" + workMem
	}
	return "PGOPTIONS=" + opts
}

// inherited are the variables dbt gets from the service's environment; everything else (the
// service's own secrets included) stays out of the subprocess.
var inherited = []string{"PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
	"PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "PGCONNECT_TIMEOUT"}

func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(inherited, k) || strings.HasPrefix(k, "LC_") || (strings.HasPrefix(k, "DBT_") && !strings.HasPrefix(k, "DBT_ENV_SECRET_")) {
			env = append(env, kv)
		}
	}
	return append(env, "DBT_SEND_ANONYMOUS_USAGE_STATS=false")
}

// invocation is one run's dbt call: in the warm worker (runEnv and workerVars), or as dbt
// subprocesses in a temp dir holding the profile, target and logs (vars).
type invocation struct {
	r        *Runner
	dir      string
	env      []string
	vars     string
	pipeline string
	ds       string
	runID    string
	password string
	// workerVars is --vars for the worker: only sluice_pipelines, which changes with the config,
	// so the worker's parse stays valid from run to run; runEnv carries the run's own values
	// (ds, run_id, pipeline, fence; read by the macro sluice_run_var) and the target schema.
	workerVars string
	runEnv     map[string]string
	// background runs the subprocess at the lowest CPU priority (docs).
	background bool
	// manifest is the checksum of the manifest the worker built with (worker.py), "" without one.
	manifest string
}

func (r *Runner) newInvocation(p config.Pipeline, ds, runID string, token uint64) (*invocation, error) {
	if _, err := r.contractFor(p); err != nil {
		return nil, err
	}
	specs := r.specs()
	vars, err := json.Marshal(map[string]any{"ds": ds, "run_id": runID, "pipeline": p.Name, "sluice_pipelines": specs, "fence": token})
	if err != nil {
		return nil, err
	}
	wvars, err := workerVars(specs)
	if err != nil {
		return nil, err
	}
	inv := &invocation{r: r, env: append(append(baseEnv(), connEnv(&r.pg.Config, p.Target.Schema)...), sessionEnv(r.WorkMem)),
		vars: string(vars), pipeline: p.Name, ds: ds, runID: runID, password: r.pg.Password,
		workerVars: wvars, runEnv: map[string]string{"SLUICE_PG_SCHEMA": p.Target.Schema, "SLUICE_DS": ds,
			"SLUICE_RUN_ID": runID, "SLUICE_PIPELINE": p.Name, "SLUICE_FENCE": strconv.FormatUint(token, 10)}}
	return inv, nil // its workspace is made by the first dbt subprocess (run)
}

// workerVars is the worker's --vars: the same JSON for every run of a config.
func workerVars(specs map[string]contract.Spec) (string, error) {
	b, err := json.Marshal(map[string]any{"sluice_pipelines": specs})
	return string(b), err
}

func (inv *invocation) close() {
	if inv.dir != "" {
		_ = os.RemoveAll(inv.dir)
	}
}

func (inv *invocation) target(name string) string { return filepath.Join(inv.dir, "target", name) }

// redact removes the password from text dbt printed, in case a driver message ever echoes it.
func (inv *invocation) redact(s string) string {
	if inv.password == "" {
		return s
	}
	return strings.ReplaceAll(s, inv.password, "xxxxx")
}

// run runs one dbt command. On ctx cancellation dbt is interrupted (it cancels its queries) and
// killed if it has not exited after CancelGrace.
func (inv *invocation) run(ctx context.Context, args ...string) (output string, err error) {
	if inv.dir == "" {
		dir, err := os.MkdirTemp("", "sluice-dbt-"+inv.pipeline+"-")
		if err != nil {
			return "", fmt.Errorf("dbt workspace: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "profiles.yml"), fmt.Appendf(nil, profileYAML, inv.r.threads), 0o600); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("dbt profile: %w", err)
		}
		inv.dir = dir
	}
	args = append(args,
		"--vars", inv.vars,
		"--project-dir", inv.r.projectDir,
		"--profiles-dir", inv.dir,
		"--profile", profileName,
		"--target", profileName,
		"--target-path", filepath.Join(inv.dir, "target"),
		"--log-path", filepath.Join(inv.dir, "logs"),
		"--no-use-colors")
	cmd := exec.CommandContext(ctx, inv.r.dbt, args...)
	cmd.Dir = inv.dir
	cmd.Env = inv.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = inv.r.CancelGrace
	if err = cmd.Start(); err == nil {
		if inv.background {
			// Lowest CPU priority: on a busy machine the runs' own work goes first.
			_ = syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, 19)
		}
		err = cmd.Wait()
	}
	if ctx.Err() != nil {
		return inv.redact(out.String()), fmt.Errorf("stopped: %w", context.Cause(ctx))
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return "", fmt.Errorf("start dbt: %w", err)
	}
	return inv.redact(out.String()), err
}

// build runs `dbt build` on the selection and returns its node results; the error is classified
// for the router (permanent, fenced, or transient).
func (inv *invocation) build(ctx context.Context, log *slog.Logger, selection string) ([]nodeResult, error) {
	sel := strings.Fields(selection)
	if len(sel) == 0 {
		return nil, flow.Permanentf("pipeline %s has an empty dbt selection", inv.pipeline)
	}
	ctx, span := tracer(ctx).Start(ctx, "dbt build", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("dbt.select", selection)))
	defer span.End()

	var (
		out             string
		results         []nodeResult
		deps            map[string][]string
		runErr, readErr error
		parsed          = true // whether dbt parsed the project for this build
	)
	if w := inv.r.worker; w != nil {
		resp, err := w.do(ctx, workerRequest{Cmd: "build", Args: append([]string{"--select"}, sel...), Vars: inv.workerVars, Env: inv.runEnv})
		if err != nil && ctx.Err() != nil {
			span.SetStatus(codes.Error, err.Error())
			return nil, err
		}
		if err != nil {
			// The worker died or could not start: transient (a retry gets a fresh worker; a
			// transaction the dead worker had open never commits).
			err = fmt.Errorf("dbt worker: %s", inv.redact(err.Error()))
			span.SetStatus(codes.Error, err.Error())
			log.Warn("dbt build failed", "err", err)
			return nil, err
		}
		parsed, inv.manifest = resp.Parsed, resp.Checksum
		out = inv.redact(resp.Output)
		if resp.Error != "" {
			out += "\nEncountered an error:\n" + inv.redact(resp.Error)
		}
		if !resp.OK {
			runErr = errors.New("dbt build failed")
		}
		deps = make(map[string][]string, len(resp.Results))
		for _, r := range resp.Results {
			r.Message = inv.redact(r.Message)
			results = append(results, r.nodeResult)
			deps[r.UniqueID] = r.DependsOn
		}
		nodeSpans(ctx, results, deps)
	} else {
		out, runErr = inv.run(ctx, append([]string{"build", "--select"}, sel...)...)
		if ctx.Err() != nil {
			span.SetStatus(codes.Error, runErr.Error())
			return nil, runErr
		}
		results, readErr = readRunResults(inv.target("run_results.json"))
		if readErr == nil {
			for i := range results {
				results[i].Message = inv.redact(results[i].Message)
			}
			nodeSpans(ctx, results, upstream(inv.target("manifest.json")))
		}
	}
	err := classify(results, readErr, runErr, out)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		log.Warn("dbt build failed", "err", err, "output", tail(out, 4000))
		return results, err
	}
	if len(results) == 0 {
		return nil, flow.Permanentf("dbt selection %q matched no nodes", selection)
	}
	log.Debug("dbt build output", "output", tail(out, 4000), "parsed", parsed)
	return results, nil
}

// failed are the statuses of nodes that did not succeed (run and test statuses both).
var failed = map[string]bool{"error": true, "fail": true, "runtime error": true, "partial success": true}

// classify turns a dbt outcome into the router's error classes: a failing model, test or compile
// step can never succeed on retry (permanent); a lost lease is fenced; a database that could not
// be reached, or a failure dbt gave no reason for, is transient.
func classify(results []nodeResult, readErr, runErr error, out string) error {
	var bad []nodeResult
	for _, r := range results {
		if failed[r.Status] {
			bad = append(bad, r)
		}
	}
	if len(bad) > 0 {
		msg := describe(bad)
		transientOnly := true
		for _, r := range bad {
			if strings.Contains(r.Message, "fenced:") {
				return fmt.Errorf("%s: %w", msg, fence.ErrFenced)
			}
			transientOnly = transientOnly && isTransient(r.Message)
		}
		if transientOnly {
			return errors.New(msg)
		}
		return flow.Permanent(errors.New(msg))
	}
	if runErr != nil {
		cause := dbtError(out)
		switch {
		case isTransient(cause):
			return fmt.Errorf("%v: %s", runErr, cause)
		case isDeterministic(cause):
			return flow.Permanent(fmt.Errorf("%v: %s", runErr, cause))
		default:
			return fmt.Errorf("%v: %s", runErr, cause)
		}
	}
	if readErr != nil {
		return readErr
	}
	return nil
}

// describe names the failing nodes and why, on one line.
func describe(bad []nodeResult) string {
	const show = 5
	parts := make([]string, 0, show+1)
	for i, r := range bad {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(bad)-show))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s: %s", r.UniqueID, r.Status, oneLine(r.Message, 600)))
	}
	noun := "nodes"
	if len(bad) == 1 {
		noun = "node"
	}
	return fmt.Sprintf("%d %s failed: %s", len(bad), noun, strings.Join(parts, "; "))
}

// oneLine flattens a dbt message, dropping the lines that only point at local files.
func oneLine(msg string, limit int) string {
	var keep []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "compiled code at ") || strings.HasPrefix(l, "> ") {
			continue
		}
		keep = append(keep, l)
	}
	s := strings.Join(keep, " ")
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// dbtError is what dbt said after "Encountered an error:" (how it reports failures outside any
// node, such as a connection refused while it reads the catalog), or the end of its output.
func dbtError(out string) string {
	if i := strings.LastIndex(out, "Encountered an error:"); i >= 0 {
		return oneLine(out[i+len("Encountered an error:"):], 1000)
	}
	return oneLine(tail(out, 1000), 1000)
}

// transientMarkers are libpq/PostgreSQL messages for conditions that pass: the server is
// unreachable, restarting or overloaded, or the transaction lost a race.
var transientMarkers = []string{
	"could not connect", "connection refused", "connection to server", "could not translate host name",
	"timeout expired", "timed out", "server closed the connection", "terminating connection",
	"the database system is starting up", "the database system is shutting down",
	"the database system is in recovery mode", "too many clients", "remaining connection slots",
	"ssl syscall error", "connection already closed", "could not receive data from server",
	"could not send data to server", "no connection to the server", "network is unreachable",
	"no route to host", "deadlock detected", "could not serialize access",
	"canceling statement due to conflict with recovery", "canceling statement due to lock timeout",
	"could not obtain lock",
}

func isTransient(msg string) bool {
	msg = strings.ToLower(msg)
	for _, m := range transientMarkers {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// isDeterministic recognises dbt's own error classes for a broken project, profile or database
// object, which the same input reproduces.
func isDeterministic(msg string) bool {
	for _, m := range []string{"Parsing Error", "Compilation Error", "Runtime Error", "Database Error", "Dependency Error", "Could not find profile"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
