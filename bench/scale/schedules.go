package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// schedResult is the scheduling process and the broker holding n pipeline schedules.
type schedResult struct {
	schedules   int
	unscheduled bool          // the control: the same pipelines without a schedule
	installed   time.Duration // process start to every schedule stored and its first tick handled
	stored      uint64        // schedule messages the stream holds
	rssKB       int64         // the scheduling process, median over the window
	rssMaxKB    int64
	heapInuse   int64 // its Go heap in use, median
	goroutines  int64
	brokerKB    int64 // the broker's nodes together, median
	brokerMaxKB int64
	streamBytes uint64
	load        float64
}

// measureSchedules starts, for each count, a fresh broker and the scheduling process (the sensor
// service, whose start installs every configured pipeline's schedule in the broker as a JetStream
// message schedule and ticks each once) with that many scheduled pipelines, waits until every
// schedule is stored and every first tick handled, then samples both processes once a second
// for window.
func measureSchedules(ctx context.Context, e *env, bin string, counts []int, window time.Duration) ([]schedResult, error) {
	var out []schedResult
	for _, n := range counts {
		for _, unscheduled := range []bool{false, true} {
			r, err := measureSchedulesAt(ctx, e, bin, n, unscheduled, window)
			if err != nil {
				return nil, fmt.Errorf("%d schedules: %w", n, err)
			}
			log.Printf("pipelines %d (unscheduled %v): started in %s, process RSS %.1f MB, heap %.1f MB, broker RSS %.1f MB", n, unscheduled,
				r.installed.Round(time.Millisecond), float64(r.rssKB)/1024, float64(r.heapInuse)/(1<<20), float64(r.brokerKB)/1024)
			out = append(out, r)
		}
	}
	return out, nil
}

func measureSchedulesAt(ctx context.Context, e *env, bin string, n int, unscheduled bool, window time.Duration) (schedResult, error) {
	res := schedResult{schedules: n, unscheduled: unscheduled}
	dir := filepath.Join(e.dir, fmt.Sprintf("schedules-%d-%v", n, !unscheduled))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	replicas := 1
	if e.nodes >= 3 {
		replicas = 3
	}
	// The schedules never come due in the measurement: every interval before start_date is
	// skipped, so the first ticks request nothing and the process holds only the schedules. The
	// control has the same pipelines without a schedule: what the config alone costs.
	sched := "    schedule: \"@hourly\"\n    start_date: \"2099-01-01\"\n"
	if unscheduled {
		sched = ""
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "nats:\n  url: env:NATS_URL\n  replicas: %d\npostgres:\n  url: env:PG_URL\ns3:\n  bucket: unused\npipelines:\n", replicas)
	for i := range n {
		fmt.Fprintf(&cfg, "  - name: s%05d\n    contract: orders\n%s    source:\n      url: http://127.0.0.1:9/s%05d/{ds}.csv\n", i, sched, i)
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return res, err
	}
	b, err := startBroker(ctx, e.natsBin, dir, e.nodes)
	if err != nil {
		return res, err
	}
	defer b.stop()
	procEnv := append(os.Environ(), "NATS_URL="+b.url(), "PG_URL=postgres://unused.invalid/db")
	err = await(60*time.Second, "sluice provision", func() (bool, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "sluice"), "provision", "--config", cfgPath, "--no-postgres")
		cmd.Env = procEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			log.Printf("provision: %v: %s", err, strings.TrimSpace(tail(out, 500)))
			time.Sleep(time.Second)
		}
		return err == nil, nil
	})
	if err != nil {
		return res, err
	}
	nc, err := nats.Connect(b.url())
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	st, err := js.Stream(ctx, "SLUICE")
	if err != nil {
		return res, err
	}

	start := time.Now()
	p, err := spawn(dir, "scheduler", procEnv, bin, "--config", cfgPath, "--nats", b.urls[0], "--http", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer p.stop(30 * time.Second)
	if err := p.waitLog(`"msg":"started"`, 10*time.Minute); err != nil {
		return res, err
	}
	addr, err := httpAddr(p.log)
	if err != nil {
		return res, err
	}
	err = await(10*time.Minute, fmt.Sprintf("%d schedules stored and their first ticks handled", n), func() (bool, error) {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("etl.*.schedule"))
		if err != nil {
			return false, err
		}
		res.stored = uint64(len(info.State.Subjects))
		if unscheduled {
			return true, nil
		}
		if res.stored < uint64(n) {
			return false, nil
		}
		c, err := js.Consumer(ctx, "SLUICE", "scheduler")
		if err != nil {
			return false, err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return false, err
		}
		return ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Consumer >= uint64(n), nil
	})
	if err != nil {
		return res, err
	}
	res.installed = time.Since(start)

	// RSS once a second; /metrics only once, at the end: a scrape renders a series per pipeline
	// and state, and scraping every second would measure the scrapes.
	var rss, brk []int64
	for range int(window / time.Second) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(time.Second):
		}
		rss = append(rss, rssKB(p.cmd.Process.Pid))
		var bk int64
		for _, pid := range b.pids() {
			bk += rssKB(pid)
		}
		brk = append(brk, bk)
	}
	m, err := scrape(addr)
	if err != nil {
		return res, err
	}
	res.heapInuse, res.goroutines = int64(m["go_memstats_heap_inuse_bytes"]), int64(m["go_goroutines"])
	res.rssKB, res.rssMaxKB = median(rss), slices.Max(rss)
	res.brokerKB, res.brokerMaxKB = median(brk), slices.Max(brk)
	info, err := st.Info(ctx)
	if err != nil {
		return res, err
	}
	res.streamBytes = info.State.Bytes
	res.load = loadavg()
	return res, nil
}

// httpAddr is the address a service logged its HTTP endpoint at.
func httpAddr(logPath string) (string, error) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "http endpoint" {
			return l.Addr, nil
		}
	}
	return "", fmt.Errorf("no http endpoint in %s", logPath)
}

// scrape reads a service's /metrics, unlabelled series only.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		m[name], _ = strconv.ParseFloat(strings.TrimSpace(val), 64)
	}
	return m, nil
}

func median(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
