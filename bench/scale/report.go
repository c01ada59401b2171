package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

type report struct {
	started            time.Time
	args               []string
	nodes, rows        int
	loadStart, loadEnd float64
	rev                string
	window             time.Duration
	leaseTTL           time.Duration
	runs               []*runsResult
	scheds             []schedResult
}

func (r *runsResult) perMinute() float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(len(r.ended)) / r.wall.Minutes()
}

func (r *runsResult) latencies() []time.Duration {
	var d []time.Duration
	for _, e := range r.ended {
		d = append(d, e.stored.Sub(e.requested))
	}
	slices.Sort(d)
	return d
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// segment is one part of a run's time from its request to its end event being stored.
type segment struct {
	name string
	work bool // a step's own work (the handler), not a wait between steps
}

// segments lists the parts of a completed run in order: before each step (queued, the lease, a
// free worker, the hop) and the step itself, then the last hop.
func segments() []segment {
	var s []segment
	for i, st := range steps {
		if i == 0 {
			s = append(s, segment{"request → sensor (queued behind the pipeline's lease)", false})
		} else {
			s = append(s, segment{"→ " + st + " (hop and wait for a worker)", false})
		}
		s = append(s, segment{st, true})
	}
	return append(s, segment{"→ completed stored", false})
}

// breakdown is the mean time per completed run of each segment, and the total work seconds of
// each step over the whole measurement.
func (r *runsResult) breakdown() (mean []time.Duration, busy map[string]time.Duration, n int) {
	segs := segments()
	sum := make([]time.Duration, len(segs))
	busy = map[string]time.Duration{}
	for _, e := range r.ended {
		if e.failed || len(e.steps) != len(steps) {
			continue
		}
		n++
		prevEnd := e.requested
		k := 0
		for _, st := range e.steps {
			end := st.StartedAt.Add(time.Duration(st.DurationMS) * time.Millisecond)
			sum[k] += st.StartedAt.Sub(prevEnd)
			sum[k+1] += end.Sub(st.StartedAt)
			busy[st.Step] += end.Sub(st.StartedAt)
			prevEnd = end
			k += 2
		}
		sum[k] += e.stored.Sub(prevEnd)
	}
	mean = make([]time.Duration, len(segs))
	for i := range sum {
		if n > 0 {
			mean[i] = sum[i] / time.Duration(n)
		}
	}
	return mean, busy, n
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func (rep *report) String() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("%s", rep.header())
	w("%s", rep.runsPart())
	w("%s", rep.schedPart())
	return b.String()
}

// header opens the section; each part under it says when and how it was measured, so a part
// can be measured again alone (-only) and replace only itself.
func (rep *report) header() string {
	return "## Scale\n\nReproduce: `make build && make bench-scale` (the harness is `bench/scale`; smaller: `make bench-scale SCALE_FLAGS='-pipelines 10 -dates 2'`; one part: `SCALE_FLAGS='-only runs'` or `-only schedules`; flags: `cd bench/scale && GOWORK=off go run . -h`).\n\n"
}

func (rep *report) measured() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on this machine (%d cores shared with other work, %s), commit %s, in one run of `make bench-scale`",
		rep.started.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(), rep.rev)
	if len(rep.args) > 0 {
		fmt.Fprintf(&b, " (harness flags: `%s`)", strings.Join(rep.args, " "))
	}
	fmt.Fprintf(&b, "; 1-minute load average %.2f at the start and %.2f at the end of the whole run.\n\n", rep.loadStart, rep.loadEnd)
	return b.String()
}

const (
	runsHeading  = "### Runs through the cluster, one and two replicas per service"
	schedHeading = "### Pipeline schedules held in the broker"
)

func (rep *report) runsPart() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	if len(rep.runs) > 0 {
		base := rep.runs[0]
		broker := "one nats-server"
		if rep.nodes > 1 {
			broker = fmt.Sprintf("a cluster of %d nats-server processes over loopback routes, the events stream and every KV bucket at R3", rep.nodes)
		}
		w("%s\n\n%s", runsHeading, rep.measured())
		w("%d generated pipelines (`p001`…, the built-in orders contract, each its own staging and target table and its own dbt models as `sluice new-pipeline` writes them, in one dbt project) × %d dates of the sample source's orders (%d new rows a file, plus revisions of the day before's), ",
			base.pipelines, base.dates, rep.rows)
		w("on %s (file store, `sync_interval: always`), the six service binaries as separate processes, each replica connected to its own node. ", broker)
		w("Each measurement starts fresh (broker store, database, bucket) and queues every pipeline's dates with `sluice backfill --detach` (four at a time); one run per pipeline is active at once (the lease; `lease.ttl` %s, so a run waiting in a step's backlog keeps it). ", rep.leaseTTL)
		w("Latency: the run's `requested_at` to the broker storing its `completed` (or `failed`) event; runs/min: runs ended over the first request to the last end. ")
		w("CPU: the processes and their children (dbt) between the first request and the last end. Baseline: the first row, measured in the same run.\n\n")
		w("| replicas per service | runs (failed) | wall | runs/min | vs baseline | p50 latency | p99 latency | broker CPU | services CPU | PostgreSQL CPU | load avg (max) |\n")
		w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range rep.runs {
			lat := r.latencies()
			var svc time.Duration
			for _, s := range services {
				svc += r.cpu[s]
			}
			w("| %d | %d (%d) | %s | %.1f | ×%.2f | %s | %s | %s | %s | %s | %.2f→%.2f (%.2f) |\n", r.replicas, len(r.ended), r.failed, secs(r.wall),
				r.perMinute(), r.perMinute()/base.perMinute(), secs(percentile(lat, 50)), secs(percentile(lat, 99)),
				secs(r.cpu["broker"]), secs(svc), secs(r.cpu["postgres"]), r.loadStart, r.loadEnd, r.loadMax)
		}
		w("\nCPU seconds per run, by process (all replicas together; children included):\n\n")
		w("| process |")
		for _, r := range rep.runs {
			w(" %d replica(s) |", r.replicas)
		}
		w("\n|---|%s\n", strings.Repeat("---:|", len(rep.runs)))
		for _, name := range append(append([]string{"broker"}, services...), "postgres") {
			w("| %s |", name)
			for _, r := range rep.runs {
				w(" %.3f s |", r.cpu[name].Seconds()/float64(max(1, len(r.ended))))
			}
			w("\n")
		}
		w("\nBroker writes per run: the messages each stream took over the measurement (its last sequence; a KV bucket is the stream `KV_<bucket>`), divided by the runs. At R3 each is written and synced on three nodes.\n\n")
		w("| stream |")
		for _, r := range rep.runs {
			w(" %d replica(s) |", r.replicas)
		}
		w("\n|---|%s\n", strings.Repeat("---:|", len(rep.runs)))
		var names []string
		for name := range base.writes {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			w("| `%s` |", name)
			for _, r := range rep.runs {
				w(" %.1f |", float64(r.writes[name])/float64(max(1, len(r.ended))))
			}
			w("\n")
		}
		w("\nWhere the time goes: the mean per completed run of each part, from the step durations its `completed` event carries (`steps[].started_at`, `duration_ms`). ")
		w("Busy: a step's handler time over the whole measurement divided by its wall time — how many of that step's handlers were working at once on average (each replica runs 4 handlers, the sensor 8; a dbt-runner's handlers share its one warm dbt worker, which builds one run at a time, so the dbt-runner's handler time includes waiting for it).\n\n")
		w("| part |")
		for _, r := range rep.runs {
			w(" %d replica(s): mean | share |", r.replicas)
		}
		w("\n|---|%s\n", strings.Repeat("---:|---:|", len(rep.runs)))
		means := make([][]time.Duration, len(rep.runs))
		busy := make([]map[string]time.Duration, len(rep.runs))
		totals := make([]time.Duration, len(rep.runs))
		for i, r := range rep.runs {
			means[i], busy[i], _ = r.breakdown()
			for _, m := range means[i] {
				totals[i] += m
			}
		}
		for k, s := range segments() {
			name := s.name
			if s.work {
				name = "**" + s.name + "** (its work)"
			}
			w("| %s |", name)
			for i := range rep.runs {
				w(" %s | %.0f %% |", secs(means[i][k]), 100*means[i][k].Seconds()/max(totals[i].Seconds(), 1e-9))
			}
			w("\n")
		}
		w("| whole run |")
		for i := range rep.runs {
			w(" %s | |", secs(totals[i]))
		}
		w("\n\n| step busy (handlers at once) |")
		for _, r := range rep.runs {
			w(" %d replica(s) |", r.replicas)
		}
		w("\n|---|%s\n", strings.Repeat("---:|", len(rep.runs)))
		for _, st := range steps {
			w("| %s |", st)
			for i, r := range rep.runs {
				w(" %.2f |", busy[i][st].Seconds()/r.wall.Seconds())
			}
			w("\n")
		}
		w("\n")
	}

	return b.String()
}

func (rep *report) schedPart() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	if len(rep.scheds) > 0 {
		// Pair each count's measurement with its control (the same pipelines, no schedule).
		type pair struct{ with, without schedResult }
		var pairs []pair
		for _, r := range rep.scheds {
			if !r.unscheduled {
				pairs = append(pairs, pair{with: r})
			} else if len(pairs) > 0 {
				pairs[len(pairs)-1].without = r
			}
		}
		mb := func(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }
		w("%s\n\n%s", schedHeading, rep.measured())
		w("For each count, a fresh broker (%d node(s)) and one `sluice-sensor` process — the scheduling process: at start it installs every configured pipeline's schedule as a JetStream message schedule (`@hourly`) and ticks each pipeline once — with that many scheduled pipelines (`start_date` 2099, so no tick requests a run). ",
			rep.nodes)
		w("Started: process start to every schedule stored and every first tick handled. Then the processes' RSS once a second for %s (medians), and their `/metrics` once at the end (heap in use, goroutines; a scrape renders a series per pipeline, so it is not sampled every second). ", rep.window)
		w("Control, measured right after each: the same process and config with the same pipelines but no schedule, so the difference is what the schedules cost (the rest is the pipelines' config). Broker: the nodes' RSS together.\n\n")
		w("| scheduled pipelines | schedules stored | started in | process RSS | control (no schedules) | schedules' part | heap in use (control) | goroutines | broker RSS (control) | stream bytes | load |\n")
		w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range pairs {
			s, c := p.with, p.without
			w("| %d | %d | %s | %s | %s | %s | %.1f MB (%.1f MB) | %d | %s (%s) | %.1f MB | %.2f |\n", s.schedules, s.stored, secs(s.installed),
				mb(s.rssKB), mb(c.rssKB), mb(s.rssKB-c.rssKB), float64(s.heapInuse)/(1<<20), float64(c.heapInuse)/(1<<20), s.goroutines,
				mb(s.brokerKB), mb(c.brokerKB), float64(s.streamBytes)/(1<<20), s.load)
		}
		if len(pairs) > 1 {
			f, l := pairs[0], pairs[len(pairs)-1]
			dn := float64(l.with.schedules - f.with.schedules)
			per := func(a, b int64) float64 { return float64(a-b) / dn }
			w("\n- Per pipeline added from %d to %d, with a schedule: process RSS %+.1f KB, heap %+.1f KB, broker RSS %+.1f KB; without (control): process RSS %+.1f KB, heap %+.1f KB, broker RSS %+.1f KB.\n",
				f.with.schedules, l.with.schedules, per(l.with.rssKB, f.with.rssKB), per(l.with.heapInuse, f.with.heapInuse)/1024, per(l.with.brokerKB, f.with.brokerKB),
				per(l.without.rssKB, f.without.rssKB), per(l.without.heapInuse, f.without.heapInuse)/1024, per(l.without.brokerKB, f.without.brokerKB))
			w("- The schedules' own part (process RSS with schedules minus the control) per schedule: %+.1f KB in the process, %+.1f KB in the broker.\n",
				per(l.with.rssKB-l.without.rssKB, f.with.rssKB-f.without.rssKB), per(l.with.brokerKB-l.without.brokerKB, f.with.brokerKB-f.without.brokerKB))
		}
		w("\n")
	}
	return b.String()
}
