#!/usr/bin/env python3
"""Writes the "End to end" section of bench/RESULTS.md from bench/e2e/run.sh's results.jsonl and
each `sluice run -v`'s output (its summary and the dbt-runner's log lines)."""
import argparse, json, os, re, statistics, sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import section  # noqa: E402  (bench/section.py)

START = "## End to end"
END = "<!-- bench-e2e: end of the generated block; notes below it are kept on a rerun -->"


def go_dur(s):
    """Seconds of a Go duration string such as 6.8s, 812ms, 1m2.5s."""
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    for num, unit in re.findall(r"([\d.]+)(ms|µs|us|ns|h|m|s)", s):
        total += float(num) * units[unit]
    return total


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")[:26] + "+00:00" if "." in s else s.replace("Z", "+00:00"))


def parse_run(log):
    """A run's summary (from `sluice run -v`'s output) and the dbt-runner's log lines for it: from
    the same output when the command ran the services, else from the `sluice up` it attached to
    (up.log beside it), picked by the run's id."""
    out = {}
    run_id = None
    lines = open(log, encoding="utf-8", errors="replace").read().splitlines()
    for line in lines:
        m = re.search(r"completed in (\S+)", line)
        if m and line.startswith("Summary"):
            out["completed_s"] = go_dur(m.group(1))
        m = re.match(r"\s+dbtrunner\s+(\S+)\s+\d+", line)
        if m:
            out["dbt_step_s"] = go_dur(m.group(1))
        m = re.search(r"validated\s+(\d+) rows", line) or re.match(r"\s+rows\s+(\d+) staged", line)
        if m:
            out["file_rows"] = int(m.group(1))
        m = re.match(r"\s+run id\s+(\S+)", line)
        if m:
            run_id = m.group(1)
    up = os.path.join(os.path.dirname(log), "up.log")
    if os.path.exists(up):
        lines = open(up, encoding="utf-8", errors="replace").read().splitlines()
    events = {}
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if run_id and e.get("run_id") not in (None, run_id):
            continue
        msg = e.get("msg")
        if msg == "step done" and e.get("step") == "dbtrunner" and e.get("run_id") == run_id:
            events["step_done"] = e
        elif msg in ("upsert planned", "dbt build done", "dbt docs published") and e.get("run_id") == run_id:
            events[msg] = e
    try:
        done = events["step_done"]
        start = ts(done["time"]).timestamp() - done["duration_ms"] / 1000
        built = events["dbt build done"]
        out["build_s"] = built["duration_ms"] / 1000
        if "upsert planned" in events:
            out["count_s"] = ts(events["upsert planned"]["time"]).timestamp() - start
        docs = events.get("dbt docs published")
        if docs:
            # published in the background: how long after the build, and whether it generated
            out["docs_after_s"] = ts(docs["time"]).timestamp() - ts(built["time"]).timestamp()
            out["docs_generated"] = bool(docs.get("generated"))
    except (KeyError, ValueError):
        pass
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="s", nd=2):
    if x is None:
        return "–"
    if x < 0.1 and unit == "s":
        return f"{x * 1000:.0f} ms"
    return f"{x:.{nd}f} {unit}".strip()


def rng(xs):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return ""
    return f" ({fmt(min(xs))}–{fmt(max(xs))})"


def label(n):
    return f"{n:,}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--rev", default="unknown")
    ap.add_argument("--pg-version", default="")
    ap.add_argument("--dbt-version", default="")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    for r in rows:
        if r["name"] in ("sluice_run", "sluice_cold"):
            r.update(parse_run(r["log"]))
    loads = [r[k] for r in rows for k in ("load1_before", "load1_after")]
    reps = max(r["rep"] for r in rows)
    env = os.environ
    groups = sorted({(r["size"], r["hist"]) for r in rows if r["name"] == "sluice_run"}, key=lambda g: (g[1], g[0]))
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = [START, ""]
    L.append(f"Measured {now} on this machine (2 cores, shared), commit {a.rev}, PostgreSQL {a.pg_version}, "
             f"dbt {a.dbt_version}, in one run of `make bench-e2e` "
             f"(SIZES=\"{env.get('SIZES', '')}\" HIST_SIZES=\"{env.get('HIST_SIZES', '')}\" "
             f"HIST_ROWS={env.get('HIST_ROWS', '')} HIST_DAYS={env.get('HIST_DAYS', '')} REPS={reps} "
             f"WARMUP={env.get('WARMUP', '')} COLD_SIZES=\"{env.get('COLD_SIZES', '')}\" "
             f"BACKFILL_DAYS={env.get('BACKFILL_DAYS', '')} BACKFILL_SIZE={env.get('BACKFILL_SIZE', '')}); "
             f"1-minute load average {min(loads):.2f}–{max(loads):.2f} over the run (before/after of every figure: "
             f"`.sluice/bench/e2e/results.jsonl`).")
    L.append("Reproduce: `make bench-e2e` (the harness is `bench/e2e/run.sh`; knobs at its top). "
             "Each measured `sluice run` (`sluice run --config DIR/sluice.yaml --pipeline orders --date 2026-11-25 -v`) "
             "is a whole run against a database of its own, attached to a `sluice up` started on that config "
             "(all six services, the dbt-runner's warm dbt worker) after its worker is warm and one untimed run of "
             "another date went through it (WARMUP=1): a run as it goes in a deployed service. Its CPU seconds are "
             "the command's and the `sluice up`'s, dbt worker included. The baseline, interleaved with it, is "
             "`psql -c \"\\copy public.bl_staging(order_id,customer_id,amount,updated_at) FROM 'FILE' CSV HEADER\" -c \"ANALYZE public.bl_staging\" -c \"MERGE INTO public.orders t USING (SELECT DISTINCT ON (order_id) ... ORDER BY order_id, updated_at DESC, ...) s ON t.order_id = s.order_id WHEN MATCHED AND (newer, or same version from an earlier date) THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...\"` "
             "(full text in `bench/e2e/run.sh`) on the same file into the same partitioned target (the partitioner's DDL, with the key index), in the same PostgreSQL.")
    L.append("History rows are generated in the HIST_DAYS daily partitions before the date, with order_ids "
             "that never meet the file's (every key of the run is new and looked up through the key index). "
             "Rows per date: the sample source's new orders; its file also carries 10 % updates of the previous "
             "date's orders (all new keys here), so the file has 1.1× that many rows.")
    L.append("")
    L.append("| rows per date (file rows) | history rows | `sluice run`, warm, wall median (min–max) | run summary: requested → completed | `\\copy` + MERGE | of which MERGE | ratio (run / baseline) | dbt-runner step | dbt-runner / MERGE | of which `dbt build` | dbt docs, in the background: published after the build | CPU s: `sluice run` + `sluice up` / PostgreSQL (baseline: psql / PostgreSQL) | CPU ratio: all CPU s of the run / of the baseline |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary, cpus = {}, {}
    for size, hist in groups:
        s = [r for r in rows if r["name"] == "sluice_run" and r["size"] == size and r["hist"] == hist]
        c = {r["rep"]: r for r in rows if r["name"] == "copy" and r["size"] == size and r["hist"] == hist
             and not r["log"].endswith("_idx.copy.log")}
        mg = [r for r in rows if r["name"] == "merge" and r["size"] == size and r["hist"] == hist]
        # the baseline: \copy (with ANALYZE) and the MERGE, each timed, summed per repetition
        b = [{k: r[k] + c[r["rep"]][k] for k in ("wall_s", "cpu_s", "pg_cpu_s")} for r in mg if r["rep"] in c]
        mw = med([r["wall_s"] for r in mg])
        sw, bw = med([r["wall_s"] for r in s]), med([r["wall_s"] for r in b])
        ratio = sw / bw if sw and bw else None
        dbt = med([r.get("dbt_step_s") for r in s])
        # all CPU seconds (the commands, the `sluice up` with its dbt worker, PostgreSQL): on a
        # shared machine under load this ratio moves far less than the wall-time one
        scpu = med([r["cpu_s"] + r.get("up_cpu_s", 0) + r["pg_cpu_s"] for r in s])
        bcpu = med([r["cpu_s"] + r["pg_cpu_s"] for r in b])
        cpu_ratio = scpu / bcpu if scpu and bcpu else None
        cpus[(size, hist)] = (scpu, bcpu)
        summary[(size, hist)] = (sw, bw, dbt, mw)
        file_rows = med([r.get("file_rows") for r in s])
        gen = sum(1 for r in s if r.get("docs_generated"))
        cells = [f"{label(size)} ({label(int(file_rows)) if file_rows else '?'})", label(hist),
                 fmt(sw) + rng([r["wall_s"] for r in s]), fmt(med([r.get("completed_s") for r in s])),
                 fmt(bw) + rng([r["wall_s"] for r in b]), fmt(mw), f"{ratio:.2f}×" if ratio else "–", fmt(dbt),
                 f"{dbt / mw:.2f}×" if dbt and mw else "–",
                 fmt(med([r.get("build_s") for r in s])),
                 fmt(med([r.get("docs_after_s") for r in s])) + (f" ({gen} generated)" if gen else " (copied: version unchanged)"),
                 f"{med([r['cpu_s'] + r.get('up_cpu_s', 0) for r in s]):.2f} / {med([r['pg_cpu_s'] for r in s]):.2f} "
                 f"({med([r['cpu_s'] for r in b]):.2f} / {med([r['pg_cpu_s'] for r in b]):.2f})" if b else "–",
                 f"{cpu_ratio:.2f}×" if cpu_ratio else "–"]
        L.append("| " + " | ".join(cells) + " |")
    cold = [r for r in rows if r["name"] == "sluice_cold"]
    for size in sorted({r["size"] for r in cold}):
        cs = [r for r in cold if r["size"] == size]
        L.append("")
        L.append(f"`sluice run` alone (cold: the command starts JetStream, the six services and the dbt worker, and stops them), "
                 f"{label(size)} rows, empty table: {fmt(med([r['wall_s'] for r in cs]))}{rng([r['wall_s'] for r in cs])} wall, "
                 f"requested → completed {fmt(med([r.get('completed_s') for r in cs]))}, dbt-runner step {fmt(med([r.get('dbt_step_s') for r in cs]))}, "
                 f"{med([r['cpu_s'] for r in cs]):.2f} CPU s (PostgreSQL {med([r['pg_cpu_s'] for r in cs]):.2f}); "
                 "the step includes starting the dbt worker (import and parse), and the wall, after completed, "
                 "the command's wait as it stops for the run's docs (a new database: a docs version to generate).")
    bf = {}
    for mode in ("warm", "cold"):
        bs = [r for r in rows if r["name"] == "backfill_" + mode]
        if bs:
            bf[mode] = med([r["wall_s"] for r in bs])
            L.append("")
            L.append(f"`sluice backfill` of {env.get('BACKFILL_DAYS', '?')} dates of {label(bs[0]['size'])} rows "
                     f"({'attached to a warm `sluice up`' if mode == 'warm' else 'alone: the command starts and stops everything'}): "
                     f"{fmt(bf[mode])}{rng([r['wall_s'] for r in bs])} wall, "
                     f"{med([r['cpu_s'] + r.get('up_cpu_s', 0) for r in bs]):.2f} CPU s (PostgreSQL {med([r['pg_cpu_s'] for r in bs]):.2f}).")
    gens = []
    runs_dir = os.path.join(os.path.dirname(os.path.abspath(a.results)), "runs")
    for d in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        up = os.path.join(runs_dir, d, "up.log")
        if os.path.exists(up):
            for line in open(up, encoding="utf-8", errors="replace"):
                if '"dbt docs published"' in line and '"generated":true' in line:
                    try:
                        gens.append(json.loads(line)["duration_ms"] / 1000)
                    except (ValueError, KeyError):
                        pass
    if gens:
        L.append("")
        L.append(f"dbt docs were generated {len(gens)} time(s) in the whole bench: once per database (the docs name "
                 f"it, so each `sluice up` on a database of its own has a docs version of its own; the project and the "
                 f"schema did not change), each time after its warm-up run, in the background at nice 19: "
                 f"{fmt(med(gens))}{rng(gens)} from that run's end to its docs published. The measured runs' docs were copies "
                 f"of that version, published {fmt(med([r.get('docs_after_s') for r in rows if r.get('docs_after_s') is not None]))} after their build.")
    imp = [r["wall_s"] for r in rows if r["name"] == "dbt_import"]
    if imp:
        L.append("")
        L.append(f"Floor of one dbt process, same run: `.venv/bin/python -c 'import dbt.cli.main'` takes {fmt(med(imp))}"
                 f"{rng(imp)} wall, {med([r['cpu_s'] for r in rows if r['name'] == 'dbt_import']):.2f} CPU s; "
                 "a warm run pays none (the dbt worker keeps dbt imported and the project parsed).")
    # the goals that these figures speak to
    def verdict(x, goal, unit=""):
        return f"met ({x:.2f}{unit} ≤ {goal}{unit})" if x <= goal else f"missed by {x - goal:.2f}{unit} ({x / goal:.1f}× the goal)"
    L.append("")
    L.append("Against issue 16's goals (measured here, same run):")
    for (size, hist), (sw, bw, dbt, mw) in summary.items():
        if hist == 0 and size <= 1000 and sw:
            L.append(f"- {label(size)}-row date, whole `sluice run` (warm): {fmt(sw)}, goal ≤ 0.5 s: {verdict(sw, 0.5, ' s')}.")
    if bf:
        for mode, w in bf.items():
            L.append(f"- {env.get('BACKFILL_DAYS', '?')}-date backfill of {label(int(env.get('BACKFILL_SIZE', '1000')))}-row dates ({mode}): "
                     f"{fmt(w)}, goal ≤ 15 s: {verdict(w, 15, ' s')}.")
    for (size, hist), (sw, bw, dbt, mw) in summary.items():
        if hist == 0 and size >= 999999 and sw and bw:
            sc, bc = cpus[(size, hist)]
            L.append(f"- {label(size)}-row date, whole run / (`\\copy` + MERGE): {sw / bw:.2f}×, goal ≤ 1.3×: {verdict(sw / bw, 1.3, '×')}"
                     + (f"; in CPU seconds (all processes): {sc / bc:.2f}×." if sc and bc else "."))
            if dbt and mw:
                L.append(f"- {label(size)}-row date, dbt-runner step / hand-written MERGE: {dbt / mw:.2f}×, goal ≤ 1.2×: {verdict(dbt / mw, 1.2, '×')}.")
    for (size, hist), (sw, bw, dbt, mw) in summary.items():
        if hist > 0 and (size, 0) in summary and summary[(size, 0)][0]:
            e = summary[(size, 0)][0]
            sc, ec = cpus[(size, hist)][0], cpus[(size, 0)][0]
            L.append(f"- {label(size)}-row date with {label(hist)} rows of history / same on an empty table: "
                     f"{sw / e:.2f}×, goal ≤ 1.2× (stated for 10,000,000 rows of history): {verdict(sw / e, 1.2, '×')} "
                     f"(in CPU seconds: {sc / ec:.2f}×; baseline: {bw / summary[(size, 0)][1]:.1f}× for `\\copy` + MERGE).")
            mi = med([r["wall_s"] for r in rows if r["name"] == "merge_idx" and r["size"] == size and r["hist"] == hist])
            if mi and dbt:
                L.append(f"  The hand-written MERGE reads the whole history there (PostgreSQL picks a hash join over every "
                         f"partition: `.sluice/bench/e2e/runs/b_*.plan.txt`); the same MERGE with hash and merge joins off "
                         f"(key index lookups) takes {fmt(mi)} instead of {fmt(mw)}: dbt-runner step / that MERGE = {dbt / mi:.1f}×.")
    L.append("")
    L.append(END)
    section.write(a.out, START, END, "\n".join(L) + "\n", "bench-e2e")


if __name__ == "__main__":
    main()
