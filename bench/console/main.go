// Command console measures the web console: the grid of a pipeline with 1,000 runs and a run
// page, each against serving a static file of the same size from the same kind of server in the
// same run (the ratio is the console's own cost), and the memory of one console holding 100 live
// SSE clients while runs change. It writes the "Console" section of bench/RESULTS.md.
//
//	make bench-console     (cd bench/console && GOWORK=off go run . -results ../RESULTS.md)
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-etl/sluice/pkg/bus"
	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/services/console"
	"github.com/sluice-etl/sluice/services/console/consoletest"
)

const cfgText = `postgres:
  url: env:PG_URL
s3:
  bucket: sluice
pipelines:
  - name: orders
    schedule: "0 6 * * *"
    source:
      url: http://127.0.0.1:1/data/{ds}.csv
`

func main() {
	results := flag.String("results", "", "write the Console section into this RESULTS.md")
	runs := flag.Int("runs", 1000, "runs of the pipeline")
	n := flag.Int("n", 200, "requests per page measured")
	clients := flag.Int("clients", 100, "live SSE clients")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*results, *runs, *n, *clients); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench console:", err)
		os.Exit(1)
	}
}

func run(results string, nruns, n, nclients int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-console")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return err
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats not ready")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg, err := config.Parse("bench.yaml", []byte(cfgText))
	if err != nil {
		return err
	}
	opts := bus.Options{Stream: cfg.NATS.Stream, SubjectPrefix: cfg.NATS.SubjectPrefix}
	if err := bus.Provision(ctx, js, opts); err != nil {
		return err
	}
	seeded := time.Now()
	runs, err := consoletest.Seed(ctx, js, nc, opts, "orders", time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), nruns)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "seeded %d runs in %s\n", len(runs), time.Since(seeded).Round(time.Millisecond))
	c, err := console.New(ctx, console.Deps{Config: cfg, Log: slog.New(slog.DiscardHandler), NC: nc, JS: js, Tracer: noop.NewTracerProvider()})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(c)
	defer srv.Close()

	var out strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&out, format, a...) }
	w("## Console\n\n")
	w("`make bench-console` (`cd bench/console && GOWORK=off go run . -results ../RESULTS.md`), %s, %d CPUs, %s. ", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version())
	w("One embedded JetStream server holding %d runs of one pipeline (run records, their events and log lines, as `consoletest.Seed` writes them), the console in the same process behind a loopback HTTP server, %d sequential requests per page after 10 warm-ups. ", nruns, n)
	w("The baseline is the same bytes served as a static file (`http.ServeContent`) by the same kind of server in the same run, so the ratio is the console's own work: reading the run cache or the streams and rendering.\n\n")
	w("| page | bytes | median | p90 | static file median | ratio | goal |\n|---|---|---|---|---|---|---|\n")
	grid := srv.URL + "/pipelines/orders?limit=" + fmt.Sprint(nruns)
	failed := runs[5]
	runPage := srv.URL + "/runs/orders/" + failed.DS + "/" + failed.RunID
	for _, p := range []struct{ name, url, goal string }{
		{fmt.Sprintf("grid, %d runs (`/pipelines/orders?limit=%d`)", nruns, nruns), grid, "< 150 ms"},
		{"run page (failed run: timeline, events from the stream)", runPage, "< 50 ms"},
		{"run page logs (`/logs`)", runPage + "/logs", ""},
		{"pipelines (`/`)", srv.URL + "/", ""},
	} {
		med, p90, size, err := measure(p.url, n)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		smed, _, err := measureStatic(size, n)
		if err != nil {
			return err
		}
		verdict := ""
		if p.goal != "" {
			verdict = p.goal
		}
		w("| %s | %d | %s | %s | %s | %.1f× | %s |\n", p.name, size, ms(med), ms(p90), ms(smed), float64(med)/float64(smed), verdict)
		fmt.Fprintf(os.Stderr, "%s: median %s (static %s)\n", p.name, ms(med), ms(smed))
	}

	// Live clients: raw connections reading the SSE stream with a small buffer each, so what
	// grows is the console's side.
	heap0, gr0 := memory()
	var conns []net.Conn
	for i := 0; i < nclients; i++ {
		topic := "*"
		if i%2 == 1 {
			r := runs[i%len(runs)]
			topic = "r:orders." + r.DS + "." + r.RunID
		}
		conn, err := sse(srv.Listener.Addr().String(), topic)
		if err != nil {
			return err
		}
		conns = append(conns, conn)
	}
	heap1, gr1 := memory()
	// Change 2,000 run records while the clients listen (each change notifies the "*" clients and
	// the client of that run).
	kv, err := js.KeyValue(ctx, bus.RunBucket)
	if err != nil {
		return err
	}
	change := func(from int) (time.Duration, error) {
		started := time.Now()
		for i := from; i < from+2000; i++ {
			r := runs[i%len(runs)]
			key := "orders." + r.DS + "." + r.RunID
			e, err := kv.Get(ctx, key)
			if err != nil {
				return 0, err
			}
			if _, err := kv.Put(ctx, key, e.Value()); err != nil {
				return 0, err
			}
		}
		d := time.Since(started)
		time.Sleep(time.Second)
		return d, nil
	}
	updates, err := change(0)
	if err != nil {
		return err
	}
	heap2, gr2 := memory()
	updates2, err := change(2000)
	if err != nil {
		return err
	}
	heap3, gr3 := memory()
	for _, conn := range conns {
		conn.Close()
	}
	w("\n%d live SSE clients (half on every change, half on one run each), heap in use of the whole process (console, NATS server and the clients' raw connections): %.1f MiB before they connect, %.1f MiB with them connected (%.1f KiB per client), %.1f MiB after 2,000 run changes pushed to them (%s), %.1f MiB after 2,000 more (%s); goroutines %d → %d → %d → %d. ",
		nclients, mib(heap0), mib(heap1), float64(heap1-heap0)/1024/float64(nclients), mib(heap2), updates.Round(time.Millisecond), mib(heap3), updates2.Round(time.Millisecond), gr0, gr1, gr2, gr3)
	w("Memory is bounded by design: each client has a one-slot mailbox (a change arriving while one is pending is merged into it), so a slow or stalled browser costs one slot, never a queue; the console refuses live clients beyond 1,000.\n")

	fmt.Print(out.String())
	if results != "" {
		return replaceSection(results, "## Console", out.String())
	}
	return nil
}

func measure(url string, n int) (med, p90 time.Duration, size int, err error) {
	cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var ds []time.Duration
	for i := 0; i < n+10; i++ {
		start := time.Now()
		resp, err := cl.Get(url)
		if err != nil {
			return 0, 0, 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, 0, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, 0, 0, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
		}
		size = len(b)
		if i >= 10 {
			ds = append(ds, time.Since(start))
		}
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*9/10], size, nil
}

func measureStatic(size, n int) (time.Duration, time.Duration, error) {
	body := strings.Repeat("x", size)
	static := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		http.ServeContent(w, r, "page.html", time.Time{}, strings.NewReader(body))
	}))
	defer static.Close()
	med, p90, _, err := measure(static.URL, n)
	return med, p90, err
}

func sse(addr, topic string) (net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(conn, "GET /live?topic=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", topic, addr)
	br := bufio.NewReaderSize(conn, 512)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		conn.Close()
		return nil, fmt.Errorf("live stream: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, br) }()
	return conn, nil
}

func memory() (uint64, int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, runtime.NumGoroutine()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// replaceSection puts section in place of the one under heading in the file at path, or appends it.
func replaceSection(path, heading, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	start := strings.Index(text, heading+"\n")
	if start < 0 {
		if !strings.HasSuffix(text, "\n\n") {
			text = strings.TrimRight(text, "\n") + "\n\n"
		}
		return os.WriteFile(path, []byte(text+section), 0o644)
	}
	end := len(text)
	if i := strings.Index(text[start+len(heading):], "\n## "); i >= 0 {
		end = start + len(heading) + i + 1
	}
	return os.WriteFile(path, []byte(text[:start]+section+text[end:]), 0o644)
}
