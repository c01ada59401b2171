package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/pkg/runstate"
	"github.com/sluice-etl/sluice/pkg/telemetry"
	"github.com/sluice-etl/sluice/pkg/trigger"
)

const (
	stream = "SLUICE"
	prefix = "etl"
)

// broker is an embedded JetStream server in the harness process (so the sensor's RSS is only
// the sensor's) and a connection to it.
type broker struct {
	ns  *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	req *trigger.Requester
}

func startBroker(dir string) (*broker, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, err
	}
	ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		return nil, fmt.Errorf("nats server not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := bus.Provision(context.Background(), js, bus.Options{Stream: stream, SubjectPrefix: prefix}); err != nil {
		return nil, err
	}
	runs, err := runstate.New(context.Background(), js)
	if err != nil {
		return nil, err
	}
	req := trigger.New(js, runs, telemetry.TracerProvider("bench"), bus.Options{Stream: stream, SubjectPrefix: prefix})
	return &broker{ns: ns, nc: nc, js: js, req: req}, nil
}

// request requests a run of pipeline for ds as every producer does, and returns its run id.
func (b *broker) request(ctx context.Context, pipeline, ds string) (string, error) {
	res, err := b.req.Request(ctx, trigger.Request{Pipeline: pipeline, DS: ds, Trigger: "bench"})
	return res.RunID, err
}

func (b *broker) close() {
	b.nc.Close()
	b.ns.Shutdown()
	b.ns.WaitForShutdown()
}

// storedAt returns when the broker stored the newest event of kind k for pipeline and ds, and
// that event's run id.
func (b *broker) storedAt(ctx context.Context, pipeline string, k event.Kind, ds string) (time.Time, string, error) {
	st, err := b.js.Stream(ctx, stream)
	if err != nil {
		return time.Time{}, "", err
	}
	m, err := st.GetLastMsgForSubject(ctx, event.Subject(prefix, pipeline, k, ds))
	if err != nil {
		return time.Time{}, "", err
	}
	var h struct {
		RunID string `json:"run_id"`
	}
	_ = json.Unmarshal(m.Data, &h)
	return m.Time, h.RunID, nil
}

// consumer returns the sensor consumer's pending (undelivered) and ack-pending counts.
func (b *broker) consumer(ctx context.Context, name string) (pending uint64, ackPending int, delivered uint64, err error) {
	c, err := b.js.Consumer(ctx, stream, name)
	if err != nil {
		return 0, 0, 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	return info.NumPending, info.NumAckPending, info.Delivered.Consumer, nil
}

// source is a local HTTP source: every path answers 404 until set ready; it counts requests.
type source struct {
	srv   *http.Server
	url   string
	mu    sync.Mutex
	ready map[string]time.Time // path → when it became ready
	hits  int64
}

func startSource() (*source, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &source{url: "http://" + ln.Addr().String(), ready: map[string]time.Time{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits++
		_, ok := s.ready[r.URL.Path]
		s.mu.Unlock()
		if ok {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// setReady makes path answer 200 from now on and returns the moment it did.
func (s *source) setReady(path string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.ready[path] = now
	return now
}

func (s *source) requests() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// sensorProc is the sluice-sensor binary running as its own process.
type sensorProc struct {
	cmd  *exec.Cmd
	addr string // its /metrics endpoint
	logs *os.File
}

func startSensor(bin, dir, config, natsURL string, env ...string) (*sensorProc, error) {
	logs, err := os.Create(filepath.Join(dir, "sensor.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", config, "--nats", natsURL, "--http", "127.0.0.1:0")
	cmd.Env = append(append(os.Environ(), "PG_URL=postgres://unused.invalid/db"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &sensorProc{cmd: cmd, logs: logs}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logs.Write(append(line, '\n'))
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &l) == nil && l.Msg == "http endpoint" {
				select {
				case addr <- l.Addr:
				default:
				}
			}
		}
	}()
	select {
	case p.addr = <-addr:
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, fmt.Errorf("sensor did not start; see %s", logs.Name())
	}
	return p, nil
}

func (p *sensorProc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.logs.Close()
}

// sample is one reading of the sensor process.
type sample struct {
	rssKB, hwmKB int64
	goroutines   int64
	openFDs      int64
	heapInuse    int64
	goSys        int64 // memory the Go runtime holds from the OS
}

func (p *sensorProc) sample() (sample, error) {
	var s sample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			s.rssKB, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			s.hwmKB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
		switch name {
		case "go_goroutines":
			s.goroutines = int64(v)
		case "process_open_fds":
			s.openFDs = int64(v)
		case "go_memstats_heap_inuse_bytes":
			s.heapInuse = int64(v)
		case "go_memstats_sys_bytes":
			s.goSys = int64(v)
		}
	}
	return s, nil
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sortedCopy(d []time.Duration) []time.Duration {
	out := slices.Clone(d)
	slices.Sort(out)
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// configHead is the part of a generated config every part shares; the sensor never connects to
// PostgreSQL or S3.
const configHead = `postgres:
  url: env:PG_URL
s3:
  bucket: unused
pipelines:
`

func writeConfig(dir, name, pipelines string) (string, error) {
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, []byte(configHead+pipelines), 0o600)
}

func dsOf(day int) string {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, day).Format(time.DateOnly)
}

// await polls cond every 100 ms until it holds or within passes.
func await(within time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting until %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
