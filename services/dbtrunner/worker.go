package dbtrunner

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// workerPy is the warm dbt worker (worker.py): it ships inside the dbt-runner's binary and is
// written into the worker's directory when the worker starts, so the image and a checkout run
// the same script and nothing has to find it on disk.
//
//go:embed worker.py
var workerPy []byte

// WorkerOptions configure the warm dbt worker (config dbt.worker).
type WorkerOptions struct {
	// Python runs worker.py; it must import dbt. Empty: the interpreter of the dbt executable
	// (its #! line), or a python3 next to it.
	Python string
	// MaxRuns recycles the worker (a fresh process, started at once) after this many builds;
	// MaxRSSMB after a build leaves it above this resident size. 0: no limit.
	MaxRuns  int
	MaxRSSMB int
}

// worker supervises one long-lived Python process running dbt's programmatic invocation
// (dbtRunner) for this runner. Requests go one at a time (dbt-core is not safe to invoke
// concurrently in one process); the process keeps dbt imported and the project parsed between
// them. If it dies it is started again; a build it was running fails with a transient error,
// and the fence keeps the retry safe (the killed transaction never commits).
type worker struct {
	r    *Runner
	opts WorkerOptions
	dir  string // profiles.yml, worker.py, target/<schema>/, logs/
	log  *slog.Logger

	sem    chan struct{} // held while a request (or a start) is in flight
	proc   *workerProc   // nil when none is running; guarded by sem
	runs   int           // builds served by proc
	last   workerRequest // the last request served (its vars and schema warm a replacement)
	pidNow atomic.Int64  // proc's pid, 0 when none (read without sem)

	closeOnce sync.Once
	closed    chan struct{}
}

type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *tailWriter
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited
}

// workerRequest is one line to the worker; workerResponse one line back (see worker.py).
type workerRequest struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Vars string            `json:"vars"`
	Env  map[string]string `json:"env"`
}

type workerResponse struct {
	Ready    bool           `json:"ready"`
	PID      int            `json:"pid"`
	OK       bool           `json:"ok"`
	Results  []workerResult `json:"results"`
	Error    string         `json:"error"`
	Output   string         `json:"output"`
	Checksum string         `json:"checksum"`
	Parsed   bool           `json:"parsed"`
	RSSMB    int            `json:"rss_mb"`
}

type workerResult struct {
	nodeResult
	DependsOn []string `json:"depends_on"`
}

func newWorker(r *Runner, opts WorkerOptions) (*worker, error) {
	if opts.Python == "" {
		py, err := interpreterOf(r.dbt)
		if err != nil {
			return nil, err
		}
		opts.Python = py
	} else {
		py, err := exec.LookPath(opts.Python)
		if err != nil {
			return nil, fmt.Errorf("dbt worker python %q: %w", opts.Python, err)
		}
		opts.Python = py
	}
	dir, err := os.MkdirTemp("", "sluice-dbt-worker-")
	if err != nil {
		return nil, fmt.Errorf("dbt worker directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "profiles.yml"), fmt.Appendf(nil, profileYAML, r.threads), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("dbt profile: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "worker.py"), workerPy, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("dbt worker script: %w", err)
	}
	return &worker{r: r, opts: opts, dir: dir, log: r.log.With("dbt_worker", dir),
		sem: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

// interpreterOf finds the Python that runs the dbt executable: its #! line (a virtualenv's
// bin/dbt names the venv's python), or else a python3 beside it.
func interpreterOf(dbt string) (string, error) {
	if b, err := os.ReadFile(dbt); err == nil && bytes.HasPrefix(b, []byte("#!")) {
		line, _, _ := bytes.Cut(b[2:], []byte("\n"))
		f := strings.Fields(string(line))
		if len(f) > 0 && filepath.Base(f[0]) == "env" && len(f) > 1 {
			f = f[1:]
		}
		if len(f) > 0 && strings.HasPrefix(filepath.Base(f[0]), "python") {
			if py, err := exec.LookPath(f[0]); err == nil {
				return py, nil
			}
		}
	}
	for _, name := range []string{"python3", "python"} {
		if py := filepath.Join(filepath.Dir(dbt), name); isExecutable(py) {
			return py, nil
		}
	}
	return "", fmt.Errorf("dbt worker: no Python interpreter for %s (not a Python script, no python3 beside it); set dbt.worker.python, or dbt.mode: subprocess", dbt)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// acquire takes the worker for one request, or gives up with ctx.
func (w *worker) acquire(ctx context.Context) error {
	select {
	case w.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the dbt worker: %w", context.Cause(ctx))
	case <-w.closed:
		return errors.New("the dbt worker is shut down")
	}
}

func (w *worker) release() { <-w.sem }

// start runs a fresh worker process and waits for it to have imported dbt. Called holding sem.
func (w *worker) start(ctx context.Context) error {
	cmd := exec.Command(w.opts.Python, filepath.Join(w.dir, "worker.py"))
	cmd.Dir = w.dir
	// The connection settings, password included, are set once here, in the environment
	// (connEnv); requests only carry the schema and the run's values.
	cmd.Env = append(append(baseEnv(), connEnv(&w.r.pg.Config, "public")...), sessionEnv(w.r.WorkMem),
		"SLUICE_DBT_PROJECT_DIR="+w.r.projectDir, "SLUICE_DBT_WORKER_DIR="+w.dir, "PYTHONDONTWRITEBYTECODE=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr := &tailWriter{max: 64 << 10}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dbt worker %s: %w", w.opts.Python, err)
	}
	p := &workerProc{cmd: cmd, stdin: stdin, out: bufio.NewReaderSize(stdout, 1<<20), stderr: stderr, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	started := time.Now()
	var hello workerResponse
	if err := w.read(ctx, p, &hello); err != nil || !hello.Ready {
		w.kill(p)
		if err == nil {
			err = errors.New("it did not say ready")
		}
		return fmt.Errorf("dbt worker did not start: %w", err)
	}
	w.setProc(p)
	w.log.Info("dbt worker started", "pid", cmd.Process.Pid, "python", w.opts.Python, "start_ms", time.Since(started).Milliseconds())
	go w.watch(p)
	return nil
}

// watch replaces this worker at once when it dies between requests, so the next run finds a
// warm one. (A death during a request is reported by that request.)
func (w *worker) watch(p *workerProc) {
	select {
	case <-p.exited:
	case <-w.closed:
		return
	}
	select {
	case w.sem <- struct{}{}:
	case <-w.closed:
		return
	}
	replace := w.proc == p // not already replaced (recycled, or by the request that saw it die)
	if replace {
		w.log.Warn("dbt worker exited; starting another", "pid", p.cmd.Process.Pid, "err", p.err, "stderr", w.r.redact(p.stderr.tail(2000)))
		w.setProc(nil)
	}
	last := w.last
	w.release()
	if replace && last.Vars != "" {
		w.warm(last.Vars, last.Env["SLUICE_PG_SCHEMA"])
	}
}

// read reads one response line from p, giving up with ctx or when p exits.
func (w *worker) read(ctx context.Context, p *workerProc, into *workerResponse) error {
	type line struct {
		b   []byte
		err error
	}
	ch := make(chan line, 1)
	go func() {
		b, err := p.out.ReadBytes('\n')
		ch <- line{b, err}
	}()
	select {
	case l := <-ch:
		if l.err != nil {
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second): // stdout closed, the process not gone yet
				_ = p.cmd.Process.Signal(syscall.SIGKILL)
				<-p.exited
			}
			return fmt.Errorf("dbt worker (pid %d) exited: %v: %s", p.cmd.Process.Pid, p.err, w.r.redact(oneLine(p.stderr.tail(1500), 1500)))
		}
		if err := json.Unmarshal(l.b, into); err != nil {
			return fmt.Errorf("dbt worker answered %q: %w", tail(string(l.b), 200), err)
		}
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// kill stops p: an interrupt (dbt cancels its queries), then a kill after CancelGrace.
func (w *worker) kill(p *workerProc) {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(w.r.CancelGrace):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// do sends one request and returns the worker's answer. On ctx cancellation the worker is
// stopped (it may be in the middle of a statement) and replaced by the next request.
func (w *worker) do(ctx context.Context, req workerRequest) (workerResponse, error) {
	if err := w.acquire(ctx); err != nil {
		return workerResponse{}, err
	}
	defer w.release()
	if w.proc != nil {
		select {
		case <-w.proc.exited:
			w.setProc(nil)
		default:
		}
	}
	if w.proc == nil {
		if err := w.start(ctx); err != nil {
			return workerResponse{}, err
		}
	}
	p := w.proc
	b, err := json.Marshal(req)
	if err != nil {
		return workerResponse{}, err
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		w.setProc(nil)
		w.kill(p)
		return workerResponse{}, fmt.Errorf("dbt worker (pid %d) is gone: %w", p.cmd.Process.Pid, err)
	}
	var resp workerResponse
	if err := w.read(ctx, p, &resp); err != nil {
		w.setProc(nil)
		w.kill(p)
		// A fresh worker starts and parses now (after this request), so the retry finds it warm.
		w.warm(req.Vars, req.Env["SLUICE_PG_SCHEMA"])
		if ctx.Err() != nil {
			return resp, fmt.Errorf("stopped: %w", context.Cause(ctx))
		}
		return resp, err
	}
	w.last = req
	if req.Cmd == "build" {
		w.runs++
	}
	if (w.opts.MaxRuns > 0 && w.runs >= w.opts.MaxRuns) || (w.opts.MaxRSSMB > 0 && resp.RSSMB >= w.opts.MaxRSSMB) {
		w.log.Info("dbt worker recycled", "pid", p.cmd.Process.Pid, "builds", w.runs, "rss_mb", resp.RSSMB,
			"max_runs", w.opts.MaxRuns, "max_rss_mb", w.opts.MaxRSSMB)
		w.setProc(nil)
		go w.kill(p) // it exits on the closed stdin
		// A fresh one starts and parses now, in the background (after this request).
		w.warm(req.Vars, req.Env["SLUICE_PG_SCHEMA"])
	}
	return resp, nil
}

// warm starts the worker and parses the project in the background, so the first run is warm.
func (w *worker) warm(vars string, schema string) {
	go func() {
		ctx, cancel := w.lifetime(5 * time.Minute)
		defer cancel()
		resp, err := w.do(ctx, workerRequest{Cmd: "parse", Vars: vars, Env: map[string]string{"SLUICE_PG_SCHEMA": schema}})
		switch {
		case err != nil:
			w.log.Warn("dbt worker warm-up failed; the first run starts it", "err", err)
		case !resp.OK:
			w.log.Warn("dbt worker warm-up: parse failed", "err", w.r.redact(resp.Error), "output", w.r.redact(tail(resp.Output, 4000)))
		default:
			w.log.Info("dbt worker warm", "rss_mb", resp.RSSMB)
		}
	}()
}

// lifetime is a context for work of the worker's own (starting, warming): it ends after d or
// when the worker is closed.
func (w *worker) lifetime(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-w.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// close stops the worker process and removes its directory.
func (w *worker) close() {
	w.closeOnce.Do(func() {
		close(w.closed)
		w.sem <- struct{}{} // wait for a request in flight
		if w.proc != nil {
			w.kill(w.proc)
			w.setProc(nil)
		}
		_ = os.RemoveAll(w.dir)
	})
}

// setProc makes p the worker's process (nil: none), with a fresh count of builds. Holding sem.
func (w *worker) setProc(p *workerProc) {
	w.proc, w.runs = p, 0
	if p == nil {
		w.pidNow.Store(0)
	} else {
		w.pidNow.Store(int64(p.cmd.Process.Pid))
	}
}

// pid is the running worker's process id (0 if none).
func (w *worker) pid() int { return int(w.pidNow.Load()) }

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tail(string(t.b), n)
}
