// Command sensor-bench measures the sensor and the hops between services, as
// docs/sensor.md describes: the memory and goroutines of one sensor process as waiting runs go
// from 100 to 10,000, the latency of one hop from publish to the next handler, and the time from
// a file becoming available to its `available` event, polled and pushed. Each number is
// reported with the baseline measured in the same run. Run it with `make bench-sensor`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"time"
)

func main() {
	bin := flag.String("sensor", ".sluice/bin/sluice-sensor", "sluice-sensor binary (make build)")
	results := flag.String("results", "", "replace the \"Sensor and hops\" section of this markdown file")
	pipelines := flag.Int("pipelines", 100, "pipelines of the waiting-runs part")
	dates := flag.Int("dates", 100, "dates per pipeline of the waiting-runs part")
	poke := flag.Duration("waits-poke", 30*time.Second, "poke interval of the waiting-runs part (also its sampling window per stage)")
	hops := flag.Int("hops", 1000, "runs of the hop-latency part")
	detectRuns := flag.Int("detect", 200, "runs per mode of the time-to-detect part")
	detectPoke := flag.Duration("detect-poke", 2*time.Second, "poke interval of the time-to-detect part")
	only := flag.String("only", "", "run one part alone (waits, hops or detect) and print its raw numbers; for profiling, not for RESULTS.md")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "sluice-bench-sensor-")
	if err != nil {
		log.Fatal(err)
	}
	if os.Getenv("BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		log.Printf("keeping %s", dir)
	}
	if _, err := os.Stat(*bin); err != nil {
		log.Fatalf("sensor binary: %v (run make build)", err)
	}
	started, loadStart := time.Now(), loadavg()
	if *only != "" {
		if err := runOne(ctx, *only, *bin, dir, *pipelines, *dates, *poke, *hops, *detectRuns, *detectPoke); err != nil {
			log.Fatal(err)
		}
		return
	}

	log.Printf("waiting runs: %d pipelines x %d dates, poke %s", *pipelines, *dates, *poke)
	waits, err := measureWaits(ctx, *bin, dir, *pipelines, *dates, *poke)
	if err != nil {
		log.Fatalf("waiting runs: %v", err)
	}
	log.Printf("hop latency: %d runs", *hops)
	hop, err := measureHops(ctx, dir, *hops)
	if err != nil {
		log.Fatalf("hops: %v", err)
	}
	log.Printf("time to detect: %d runs per mode, poke %s", *detectRuns, *detectPoke)
	det, err := measureDetect(ctx, *bin, dir, *detectRuns, *detectPoke, 10*time.Second)
	if err != nil {
		log.Fatalf("detect: %v", err)
	}
	section := report(waits, hop, det, started, os.Args[1:], loadStart, loadavg())
	fmt.Print(section)
	if *results != "" {
		if err := replaceSection(*results, "## Sensor and hops", section); err != nil {
			log.Fatal(err)
		}
		log.Printf("updated %s", *results)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// loadavg is the machine's 1-minute load average: this machine is shared, so the numbers say
// how busy it was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Fields(string(b))[0]
}

func report(waits []waitsResult, hop *hopsResult, det *detectResult, started time.Time, args []string, loadStart, loadEnd string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("## Sensor and hops\n\n")
	w("Measured %s on this machine (%d cores, %s), in one run of `make bench-sensor`", started.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version())
	if len(args) > 0 {
		w(" (harness flags: `%s`)", strings.Join(args, " "))
	}
	w("; 1-minute load average %s at the start and %s at the end (the machine is shared)", loadStart, loadEnd)
	w(".\nReproduce: `make build && make bench-sensor` (the harness is `bench/sensor`; flags: `cd bench/sensor && GOWORK=off go run . -h`).\n\n")

	base := waits[0]
	last := waits[len(waits)-1]
	w("### One sensor process with waiting runs\n\n")
	w("A separate `sluice-sensor` process, one JetStream server (in the harness process), a local source that answers 404. ")
	w("The first date of each pipeline holds its lease and pokes the source; later dates wait behind the lease; both are parked messages. ")
	w("Each row: every run delivered once and parked (consumer: nothing undelivered, all ack-pending), then one sample a second over one poke interval. ")
	w("Baseline: the 100-run row.\n\n")
	w("| waiting runs | VmRSS median (max) | vs baseline | goroutines median (max) | vs baseline | open fds | heap in use | redeliveries/s | source pokes/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range waits {
		w("| %d | %.1f MB (%.1f) | %.2f | %d (%d) | %.2f | %d | %.1f MB | %.0f | %.0f |\n", r.waiting, float64(r.rssKB)/1024, float64(r.rssMaxKB)/1024,
			float64(r.rssKB)/float64(base.rssKB), r.goroutines, r.goroutineMax, float64(r.goroutines)/float64(base.goroutines),
			r.openFDs, float64(r.heapInuse)/(1<<20), r.deliveries, r.pokes)
	}
	rssRatio := float64(last.rssKB) / float64(base.rssKB)
	gRatio := float64(last.goroutines) / float64(base.goroutines)
	w("\n- Goal: RSS and goroutines flat from 100 to %d waits within 10 %%: RSS ×%.2f, goroutines ×%.2f — %s.\n", last.waiting, rssRatio, gRatio,
		verdict(rssRatio <= 1.1 && rssRatio >= 0.9 && gRatio <= 1.1 && gRatio >= 0.9))
	w("- Goal: RSS under 64 MB: peak (VmHWM over the whole run) %.1f MB — %s.\n\n", float64(last.hwmKB)/1024, verdict(last.hwmKB < 64*1024))

	w("### Hop latency\n\n")
	w("%d runs one after another with a source that answers 200 at once. Publish = the time the broker stored the event (JetStream timestamp); ", len(hop.toSensor))
	w("start = the first line of the consuming service's handler, in two stacks with their own connections like separate services. ")
	w("The router's work before the handler (decode, schema check, run-state write, and for steps after the sensor a lease renewal) is inside the hop. ")
	w("Baseline: the same broker, a bare pull consumer, publish to `Next` returning.\n\n")
	w("| hop | p50 | p99 | max | p50 vs baseline |\n|---|---:|---:|---:|---:|\n")
	raw := sortedCopy(hop.raw)
	rows := []struct {
		name string
		d    []time.Duration
	}{{"requested → sensor handler", hop.toSensor}, {"available → next service's handler", hop.toFetcher}, {"baseline: publish → bare `Next`", hop.raw}}
	for _, r := range rows {
		s := sortedCopy(r.d)
		w("| %s | %s | %s | %s | ×%.1f |\n", r.name, ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s[len(s)-1]),
			float64(percentile(s, 50))/float64(percentile(raw, 50)))
	}
	all := sortedCopy(append(append([]time.Duration(nil), hop.toSensor...), hop.toFetcher...))
	w("\n- Goal: p50 ≤ 5 ms and p99 ≤ 50 ms (Airflow's gap between tasks is seconds): both hops together p50 %s, p99 %s — %s.\n\n",
		ms(percentile(all, 50)), ms(percentile(all, 99)), verdict(percentile(all, 50) <= 5*time.Millisecond && percentile(all, 99) <= 50*time.Millisecond))

	w("### Time to detect\n\n")
	w("%d runs per mode on their own pipelines, all parked; each file becomes available at a random moment of a 10 s window. ", len(det.polled))
	w("Detect = the broker storing the run's `available` minus that moment. Polled: the source starts answering 200 (poke interval %s, jitter 0.1). ", det.poke)
	w("Pushed: a signed `POST /hooks/<pipeline>` is sent (those pipelines poll only every minute). Baselines: the poke interval for polling; the polled p99 of this run for the webhook.\n\n")
	pol, push, ans := sortedCopy(det.polled), sortedCopy(det.pushed), sortedCopy(det.answers)
	w("| mode | p50 | p99 | max | goal | |\n|---|---:|---:|---:|---:|---|\n")
	w("| polled | %s | %s | %s | ≤ poke + 0.5 s = %s | %s |\n", ms(percentile(pol, 50)), ms(percentile(pol, 99)), ms(pol[len(pol)-1]),
		ms(det.poke+500*time.Millisecond), verdict(percentile(pol, 99) <= det.poke+500*time.Millisecond))
	w("| webhook | %s | %s | %s | ≤ 100 ms | %s |\n", ms(percentile(push, 50)), ms(percentile(push, 99)), ms(push[len(push)-1]),
		verdict(percentile(push, 99) <= 100*time.Millisecond))
	w("\n- Polled p99 is ×%.2f of the poke interval; the webhook's p99 is ×%.3f of the polled p99. The webhook answered (202) in p50 %s, p99 %s.\n\n",
		float64(percentile(pol, 99))/float64(det.poke), float64(percentile(push, 99))/float64(percentile(pol, 99)), ms(percentile(ans, 50)), ms(percentile(ans, 99)))
	return b.String()
}

// replaceSection replaces the section that starts with heading (up to the next heading of the
// same level) in the markdown file at path, or appends it; other sections are left as they are.
func replaceSection(path, heading, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# Benchmark results\n\nEach section is written by its benchmark; the commands to reproduce it are in the section.\n\n"
	}
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

func runOne(ctx context.Context, part, bin, dir string, pipelines, dates int, poke time.Duration, hops, detect int, detectPoke time.Duration) error {
	switch part {
	case "waits":
		_, err := measureWaits(ctx, bin, dir, pipelines, dates, poke)
		return err
	case "hops":
		h, err := measureHops(ctx, dir, hops)
		if err != nil {
			return err
		}
		for _, d := range [][]time.Duration{h.toSensor, h.toFetcher, h.raw} {
			s := sortedCopy(d)
			fmt.Println(percentile(s, 50), percentile(s, 90), percentile(s, 99), s[len(s)-1])
		}
	case "detect":
		d, err := measureDetect(ctx, bin, dir, detect, detectPoke, 10*time.Second)
		if err != nil {
			return err
		}
		for _, d := range [][]time.Duration{d.polled, d.pushed, d.answers} {
			s := sortedCopy(d)
			fmt.Println(percentile(s, 50), percentile(s, 90), percentile(s, 99), s[len(s)-1])
		}
	default:
		return fmt.Errorf("unknown part %q", part)
	}
	return nil
}
