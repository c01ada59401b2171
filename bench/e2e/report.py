#!/usr/bin/env python3
"""Writes the "End to end" section of bench/RESULTS.md from bench/e2e/run.sh's results.jsonl and
each `sluice run -v`'s output (its summary and the dbt-runner's log lines)."""
import argparse, json, os, re, statistics, sys
from datetime import datetime, timezone

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
    out = {}
    events = {}
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                msg = e.get("msg")
                if msg == "step done" and e.get("step") == "dbtrunner":
                    events["step_done"] = e
                elif msg in ("upsert planned", "dbt build done", "dbt docs published"):
                    events[msg] = e
                continue
            m = re.search(r"completed in (\S+)", line)
            if m and line.startswith("Summary"):
                out["completed_s"] = go_dur(m.group(1))
            m = re.match(r"\s+dbtrunner\s+(\S+)\s+\d+", line)
            if m:
                out["dbt_step_s"] = go_dur(m.group(1))
            m = re.search(r"validated\s+(\d+) rows", line)
            if m:
                out["file_rows"] = int(m.group(1))
    try:
        done = events["step_done"]
        start = ts(done["time"]).timestamp() - done["duration_ms"] / 1000
        planned = ts(events["upsert planned"]["time"]).timestamp()
        built = events["dbt build done"]
        published = ts(events["dbt docs published"]["time"]).timestamp()
        out["count_s"] = planned - start
        out["build_s"] = built["duration_ms"] / 1000
        out["docs_s"] = published - ts(built["time"]).timestamp()
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
        if r["name"] == "sluice_run":
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
             f"HIST_ROWS={env.get('HIST_ROWS', '')} HIST_DAYS={env.get('HIST_DAYS', '')} REPS={reps}); "
             f"1-minute load average {min(loads):.2f}–{max(loads):.2f} over the run (before/after of every figure: "
             f"`.sluice/bench/e2e/results.jsonl`).")
    L.append("Reproduce: `make bench-e2e` (the harness is `bench/e2e/run.sh`; knobs at its top). "
             "Each `sluice run` is a whole run (`sluice run --config DIR/sluice.yaml --pipeline orders --date 2026-11-25 -v`: "
             "embedded JetStream and all six services started and stopped by the command, dbt included) "
             "against a database of its own; the baseline, interleaved with it, is "
             "`psql -c \"\\copy public.bl_staging(order_id,customer_id,amount,updated_at) FROM 'FILE' CSV HEADER\" -c \"ANALYZE public.bl_staging\" -c \"MERGE INTO public.orders t USING (SELECT DISTINCT ON (order_id) ... ORDER BY order_id, updated_at DESC, ...) s ON t.order_id = s.order_id WHEN MATCHED AND (newer, or same version from an earlier date) THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...\"` "
             "(full text in `bench/e2e/run.sh`) on the same file into the same partitioned target (the partitioner's DDL, with the key index), in the same PostgreSQL.")
    L.append("History rows are generated in the HIST_DAYS daily partitions before the date, with order_ids "
             "that never meet the file's (every key of the run is new and looked up through the key index). "
             "Rows per date: the sample source's new orders; its file also carries 10 % updates of the previous "
             "date's orders (all new keys here), so the file has 1.1× that many rows.")
    L.append("")
    L.append("| rows per date (file rows) | history rows | `sluice run` wall, median (min–max) | run summary: requested → completed | `\\copy` + MERGE | of which MERGE | ratio (run / baseline) | dbt-runner step | dbt-runner / MERGE | of which: count query / `dbt build` / `dbt docs generate` + upload | dbt-runner share of the run | CPU s: `sluice run` + children / PostgreSQL (baseline: psql / PostgreSQL) |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
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
        share = dbt / sw if dbt and sw else None
        summary[(size, hist)] = (sw, bw, dbt, mw)
        file_rows = med([r.get("file_rows") for r in s])
        cells = [f"{label(size)} ({label(int(file_rows)) if file_rows else '?'})", label(hist),
                 fmt(sw) + rng([r["wall_s"] for r in s]), fmt(med([r.get("completed_s") for r in s])),
                 fmt(bw) + rng([r["wall_s"] for r in b]), fmt(mw), f"{ratio:.1f}×" if ratio else "–", fmt(dbt),
                 f"{dbt / mw:.1f}×" if dbt and mw else "–",
                 f"{fmt(med([r.get('count_s') for r in s]))} / {fmt(med([r.get('build_s') for r in s]))} / "
                 f"{fmt(med([r.get('docs_s') for r in s]))}",
                 f"{share * 100:.0f} %" if share else "–",
                 f"{med([r['cpu_s'] for r in s]):.2f} / {med([r['pg_cpu_s'] for r in s]):.2f} "
                 f"({med([r['cpu_s'] for r in b]):.2f} / {med([r['pg_cpu_s'] for r in b]):.2f})" if b else "–"]
        L.append("| " + " | ".join(cells) + " |")
    imp = [r["wall_s"] for r in rows if r["name"] == "dbt_import"]
    if imp:
        L.append("")
        L.append(f"Floor of one dbt process, same run: `.venv/bin/python -c 'import dbt.cli.main'` takes {fmt(med(imp))}"
                 f"{rng(imp)} wall, {med([r['cpu_s'] for r in rows if r['name'] == 'dbt_import']):.2f} CPU s; "
                 "the dbt-runner starts two dbt processes per run (`dbt build`, `dbt docs generate`).")
    # the goals that these figures speak to
    L.append("")
    L.append("Against issue 16's goals (measured here, same run):")
    for (size, hist), (sw, bw, dbt, mw) in summary.items():
        if hist == 0 and size <= 1000 and sw:
            L.append(f"- {label(size)}-row date, whole `sluice run`: {fmt(sw)} (goal ≤ 0.5 s; missed by {sw / 0.5:.0f}×).")
        if hist == 0 and size >= 999999 and sw and bw:
            L.append(f"- {label(size)}-row date, whole run / (`\\copy` + MERGE): {sw / bw:.1f}× (goal ≤ 1.3×).")
            if dbt and mw:
                L.append(f"- {label(size)}-row date, dbt-runner step / hand-written MERGE: {dbt / mw:.1f}× (goal ≤ 1.2×).")
    for (size, hist), (sw, bw, dbt, mw) in summary.items():
        if hist > 0 and (size, 0) in summary and summary[(size, 0)][0]:
            e = summary[(size, 0)][0]
            L.append(f"- {label(size)}-row date with {label(hist)} rows of history / same on an empty table: "
                     f"{sw / e:.2f}× (goal ≤ 1.2×, stated for 10,000,000 rows of history; baseline: "
                     f"{bw / summary[(size, 0)][1]:.1f}× for `\\copy` + MERGE).")
            mi = med([r["wall_s"] for r in rows if r["name"] == "merge_idx" and r["size"] == size and r["hist"] == hist])
            if mi:
                L.append(f"  The hand-written MERGE reads the whole history there (PostgreSQL picks a hash join over every "
                         f"partition: `.sluice/bench/e2e/runs/b_*.plan.txt`); the same MERGE with hash and merge joins off "
                         f"(key index lookups) takes {fmt(mi)} instead of {fmt(mw)}: dbt-runner step / that MERGE = {dbt / mi:.0f}×.")
    L.append("")
    L.append(END)
    text = "\n".join(L) + "\n"
    if not a.out:
        sys.stdout.write(text)
        return
    old = open(a.out, encoding="utf-8").read() if os.path.exists(a.out) else "# Benchmark results\n"
    if START in old:
        head, rest = old.split(START, 1)
        if END in rest:
            tail = rest.split(END, 1)[1].lstrip("\n")
        else:
            nxt = rest.find("\n## ")
            tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"bench-e2e: wrote the \"End to end\" section of {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
