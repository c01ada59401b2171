#!/usr/bin/env python3
"""Writes the "sluice vs Airflow" section of bench/RESULTS.md from bench/airflow/run.sh's
results.jsonl (bench/airflow/bench.py's records). Notes written below the section's end marker
are kept on a rerun."""
import argparse, json, os, statistics, sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import section  # noqa: E402  (bench/section.py)

START = "## sluice vs Airflow"
END = "<!-- bench-airflow: end of the generated block; notes below it are kept on a rerun -->"
SYSTEMS = ("sluice", "airflow")
NAMES = {"sluice": "sluice", "airflow": "Airflow"}
GOAL = 20.0


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2):
    if x is None:
        return "–"
    if x < 0.1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.{nd}f} s"


def mb(x):
    # 0: no sample (every second) fell inside a run shorter than that
    return "–" if not x else f"{x:,.0f} MB"


def span(xs):
    xs = [x for x in xs if x is not None]
    return f"{fmt(min(xs))}–{fmt(max(xs))}" if len(xs) > 1 else ""


def ratio(a, b):
    return a / b if a and b else None


def verdict(r, goal=GOAL):
    if r is None:
        return "not measured"
    if r >= goal:
        return f"met ({r:.1f}×)"
    return f"missed: {r:.1f}× is {goal / r:.1f}× short of {goal:.0f}×"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--rev", default="unknown")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--big-rows", type=int, default=0)
    ap.add_argument("--poke", default="1")
    ap.add_argument("--pg-version", default="")
    ap.add_argument("--airflow-version", default="")
    ap.add_argument("--dbt-version", default="")
    a = ap.parse_args()
    recs = [json.loads(l) for l in open(a.results) if l.strip()]
    runs = [r for r in recs if r["kind"] == "run"]
    idle = next((r for r in recs if r["kind"] == "idle"), None)
    total = next((r for r in recs if r["kind"] == "total"), None)

    def sel(system, kind):
        return [r for r in runs if r["system"] == system and r["set"] == kind]

    loads = [r[k] for r in runs for k in ("load1_before", "load1_after")]
    n_small = len(sel("sluice", "small"))
    n_gated = len(sel("sluice", "gated"))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = [START, ""]
    L.append(f"Measured {now} on this machine (2 cores, shared with other work), sluice at commit {a.rev}, "
             f"Apache Airflow {a.airflow_version}, dbt {a.dbt_version}, PostgreSQL {a.pg_version}, in one run of "
             f"`make bench-airflow` ({n_small} small and {n_gated} gated dates measured, ROWS={a.rows}, BIG_ROWS={a.big_rows}, POKE={a.poke}); "
             f"1-minute load average {min(loads):.2f}–{max(loads):.2f} over the runs (before and after each: "
             f"`.sluice/bench/airflow/results.jsonl`).")
    if total is None:
        L.append("")
        L.append("**Cut short**: the benchmark was stopped before its end (no final record in results.jsonl); "
                 "the figures below are those of the runs that completed, the dates not reached are not in them.")
    L.append("")
    L.append("Reproduce: `make bench-airflow` (the harness is `bench/airflow/run.sh`, knobs at its top; "
             "how it works: `bench/airflow/README.md`). Both systems run side by side for the whole benchmark, in a network "
             "namespace with only loopback, against one PostgreSQL (a target database each) and one versitygw (a bucket each), "
             "each reading the same generated files (`sluice sample-source`, 1.1× ROWS lines a date: new orders plus 10 % "
             "updates of the previous date's) from a source of its own, with the same dbt project (`dbt_project/`) and the "
             f"same poke interval ({a.poke} s). Commands:")
    L.append("- sluice: `sluice up --config sluice.yaml --http ADDR --console off` (the orders pipeline as in bench/e2e), "
             "then per date `sluice trigger --config sluice.yaml --pipeline orders --date DS` (requests the run and follows it).")
    L.append("- Airflow: `airflow api-server`, `airflow scheduler` (LocalExecutor), `airflow dag-processor`, `airflow triggerer` "
             "with `bench/airflow/airflow.cfg` and a PostgreSQL metadata server of its own, running the seed's DAG "
             "(`bench/airflow/dags/deferrable_etl_dag.py`: deferrable HttpSensor → fetch to S3 → pandas validate + load → "
             "partition → `dbt run` → `dbt docs generate`); per date `POST /api/v2/dags/deferrable_etl_partition_dbt/dagRuns` "
             "with `logical_date` DS.")
    L.append("")
    L.append("Dates run one at a time, interleaved (the systems take turns going first). *Small*: the file is there when "
             "the run is requested (a backfill's case). *Gated*: the file appears (is linked into the source's directory) "
             "only once the system's sensor waits for it (sluice: the run shows the sensor's turn; Airflow: 5 s after its "
             "sensor task deferred, because a trigger that fires while the deferring task's process is still exiting makes "
             "Airflow's scheduler fail the sensor, seen here under load, and retry it 10 minutes later); "
             "*available → visible* is from that moment until a row of the "
             "date can be read in the target (polled every 25 ms; the upsert is one transaction). *Wall* is each system's "
             "own record of the run, requested → completed (sluice: the run record, as `sluice trigger` prints it; "
             "Airflow: `dag_run.queued_at` → `end_date`). CPU is user + system seconds of all of a system's processes "
             "(each system runs under a subreaper, so ended children count too; the `sluice trigger` command counts for "
             "sluice, and so do sluice's dbt docs, which it generates in the background after a run completed: the "
             "harness waits for them before the next run; Airflow includes its metadata PostgreSQL); the target "
             "PostgreSQL and versitygw are shared and "
             "listed apart. Memory is the peak over the run of the summed PSS of all of a system's processes, sampled every second (RSS with "
             "each shared page divided among its sharers; summed RSS, which counts Airflow's forked workers' shared "
             "pages once per process, is in results.jsonl).")
    L.append("")

    # summary per set
    L.append("| dates | system | runs | wall per run, median (min–max) | wall, all runs | available → visible, p50 (min–max) | "
             "CPU s per run, median: system / target PostgreSQL | peak memory (PSS) | Airflow ÷ sluice: wall / visible p50 / CPU |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for kind, label in (("small", f"{a.rows:,} rows, file there"), ("gated", f"{a.rows:,} rows, file appears"),
                        ("big", f"{a.big_rows:,} rows, file appears")):
        per = {}
        for s in SYSTEMS:
            rs = sel(s, kind)
            if not rs:
                continue
            per[s] = {
                "n": len(rs),
                "wall": med([r["wall_s"] for r in rs]),
                "walls": [r["wall_s"] for r in rs],
                "total": sum(r["wall_s"] for r in rs),
                "vis": med([r["visible_s"] for r in rs]),
                "viss": [r["visible_s"] for r in rs],
                "cpu": med([r["cpu_s"][s] for r in rs]),
                "pgcpu": med([r["cpu_s"]["postgres"] for r in rs]),
                "pss": max(r["peak_pss_mb"][s] for r in rs),
            }
        if len(per) < 2:
            continue
        summary[kind] = per
        sl, af = per["sluice"], per["airflow"]
        rw, rv, rc = ratio(af["wall"], sl["wall"]), ratio(af["vis"], sl["vis"]), ratio(af["cpu"], sl["cpu"])
        for s in SYSTEMS:
            p = per[s]
            vis_label = fmt(p["vis"]) + (f" ({span(p['viss'])})" if span(p["viss"]) else "")
            if kind == "small":
                vis_label += " (from the request)"
            L.append(f"| {label} | {NAMES[s]} | {p['n']} | {fmt(p['wall'])}{' (' + span(p['walls']) + ')' if span(p['walls']) else ''} | {fmt(p['total'], 1)} | "
                     f"{vis_label} | {p['cpu']:.2f} / {p['pgcpu']:.2f} | {mb(p['pss'])} | "
                     + (f"{rw:.1f}× / {rv:.1f}× / {rc:.1f}×" if s == "airflow" and rw and rv and rc else "") + " |")
    if idle:
        L.append("")
        L.append(f"At rest ({idle['seconds']:.0f} s before the first run, both up): sluice {idle['cpu_s']['sluice'] / idle['seconds']:.3f} "
                 f"CPU s/s, {mb(idle['peak_pss_mb']['sluice'])}; Airflow {idle['cpu_s']['airflow'] / idle['seconds']:.3f} CPU s/s, "
                 f"{mb(idle['peak_pss_mb']['airflow'])}. Peak over the whole benchmark: sluice "
                 f"{mb(total['peak_pss_mb']['sluice']) if total else '–'}, Airflow {mb(total['peak_pss_mb']['airflow']) if total else '–'} "
                 f"(summed RSS: {mb(total['peak_rss_mb']['sluice']) if total else '–'} and {mb(total['peak_rss_mb']['airflow']) if total else '–'}).")

    # Airflow's time per task
    tasks = {}
    for r in runs:
        if r["system"] != "airflow" or r["set"] == "warmup":
            continue
        prev_end = 0.0
        for t in r.get("tasks", []):
            if t["start_s"] is None or t["end_s"] is None:
                continue
            d = tasks.setdefault(t["task"], {"run": [], "gap": [], "order": t["start_s"]})
            d["run"].append(t["end_s"] - t["start_s"])
            d["gap"].append(t["start_s"] - prev_end)
            prev_end = t["end_s"]
    if tasks:
        L.append("")
        L.append("Where an Airflow run's time goes (medians over the measured runs, seconds): each task's own run time, and the "
                 "gap before it (the previous task's end, or the run's queueing, to its start: scheduling, queueing in "
                 "the LocalExecutor, starting the task's process).")
        L.append("")
        L.append("| task | " + " | ".join(tasks) + " |")
        L.append("|---|" + "---:|" * len(tasks))
        L.append("| gap before | " + " | ".join(f"{med(v['gap']):.2f}" for v in tasks.values()) + " |")
        L.append("| task | " + " | ".join(f"{med(v['run']):.2f}" for v in tasks.values()) + " |")

    # per run
    L.append("")
    L.append("Every run (wall: the system's record; visible: from the file's appearance for gated dates, from the request "
             "for small ones; CPU: the system's processes; load: 1-minute load average before the pair of runs):")
    L.append("")
    L.append("| date | set | sluice wall | Airflow wall | ratio | sluice visible | Airflow visible | sluice CPU s | Airflow CPU s | "
             "sluice PSS | Airflow PSS | load |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ds in sorted({r["ds"] for r in runs}):
        p = {r["system"]: r for r in runs if r["ds"] == ds}
        if len(p) < 2:
            continue
        sl, af = p["sluice"], p["airflow"]
        L.append(f"| {ds} | {sl['set']} | {fmt(sl['wall_s'])} | {fmt(af['wall_s'])} | {af['wall_s'] / sl['wall_s']:.1f}× | "
                 f"{fmt(sl['visible_s'])} | {fmt(af['visible_s'])} | {sl['cpu_s']['sluice']:.2f} | {af['cpu_s']['airflow']:.2f} | "
                 f"{mb(sl['peak_pss_mb']['sluice'])} | {mb(af['peak_pss_mb']['airflow'])} | "
                 f"{min(sl['load1_before'], af['load1_before']):.1f}–{max(sl['load1_after'], af['load1_after']):.1f} |")

    # the goals
    L.append("")
    L.append("Against issue 16's goals (same run):")
    if "small" in summary:
        s = summary["small"]
        r = ratio(s["airflow"]["total"], s["sluice"]["total"])
        L.append(f"- sluice vs Airflow on the same {s['sluice']['n']} small dates, total wall time: sluice "
                 f"{fmt(s['sluice']['total'], 1)}, Airflow {fmt(s['airflow']['total'], 1)}: {verdict(r)} (goal ≥ 20× faster).")
    if "gated" in summary:
        s = summary["gated"]
        r = ratio(s["airflow"]["vis"], s["sluice"]["vis"])
        L.append(f"- file available → rows visible, p50 over {s['sluice']['n']} gated small dates: sluice "
                 f"{fmt(s['sluice']['vis'])}, Airflow {fmt(s['airflow']['vis'])}: {verdict(r)} (goal ≥ 20× faster).")
    if "big" in summary:
        s = summary["big"]
        L.append(f"- For context, {a.big_rows:,} rows (no goal): wall sluice {fmt(s['sluice']['wall'])}, Airflow "
                 f"{fmt(s['airflow']['wall'])} ({ratio(s['airflow']['wall'], s['sluice']['wall']):.1f}×); available → visible "
                 f"sluice {fmt(s['sluice']['vis'])}, Airflow {fmt(s['airflow']['vis'])} "
                 f"({ratio(s['airflow']['vis'], s['sluice']['vis']):.1f}×).")
    errors = [r for r in recs if r["kind"] == "error"]
    if errors:
        L.append("")
        L.append(f"{len(errors)} run(s) did not complete and are left out of the figures above:")
        for e in errors:
            L.append(f"- {NAMES[e['system']]} {e['ds']} ({e['set']}): {e['error'].strip().splitlines()[0][:300]}")
    L.append("")
    L.append(END)
    section.write(a.out, START, END, "\n".join(L) + "\n", "bench-airflow")


if __name__ == "__main__":
    main()
