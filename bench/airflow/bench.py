#!/usr/bin/env python3
"""The measuring part of bench/airflow/run.sh: runs dates through sluice and Airflow, interleaved,
both systems up the whole time, and prints one JSON line per run (and one per idle window).

Per run it records:
- wall: the system's own record of the run, requested -> completed (sluice: the run record's
  TOOK that `sluice trigger` prints; Airflow: dag_run.queued_at -> end_date), and the harness's
  clock from the trigger command to it seeing the run end;
- visible: when the run's rows can be read in the target (polled every POLL s: a row with
  load_date = ds; the upsert is one transaction, so the first row means all of them, which is then
  checked against the file's distinct order_ids);
- for a gated run the file is put into the source's directory only once the system's sensor is
  waiting for it (sluice: the run shows … in `sluice trigger`'s progress; Airflow: the sensor task
  is deferred), and "available" is that moment;
- CPU seconds of every process of each system (its subreaper's tree: reaped and live), of the
  target PostgreSQL and of versitygw, over the run; the peak of the summed RSS of each system's
  processes (sampled every SAMPLE s); the 1-minute load average before and after.
"""
import argparse, json, os, re, subprocess, sys, threading, time, urllib.request

import psycopg2

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DAG = "deferrable_etl_partition_dbt"


def pss(pid):
    """Proportional set size in bytes: the process's resident pages, each shared page divided
    among the processes sharing it (so a sum over processes counts every page once)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def read_procs():
    """pid -> (ppid, cpu seconds incl. reaped children, rss bytes) of every live process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = sum(int(x) for x in fields[11:15]) / TICK
        out[int(d)] = (int(fields[1]), cpu, int(fields[21]) * PAGE)
    return out


def tree(procs, roots):
    """The pids of roots and all their live descendants."""
    kids = {}
    for pid, (ppid, _, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r in procs]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(kids.get(p, []))
    return seen


class Systems:
    """The process trees measured: name -> list of root pids (extra pids can join for a while)."""

    def __init__(self, roots):
        self.roots = roots
        self.extra = {k: set() for k in roots}
        self.lock = threading.Lock()
        self.peak = {k: (0, 0) for k in roots}
        self.peak_all = {k: (0, 0) for k in roots}
        self.stop = False

    def pids(self, procs, name):
        with self.lock:
            return tree(procs, list(self.roots[name]) + list(self.extra[name]))

    def cpu(self):
        procs = read_procs()
        return {k: sum(procs[p][1] for p in self.pids(procs, k)) for k in self.roots}

    def rss(self, procs):
        """name -> (summed PSS, summed RSS) of the system's live processes."""
        out = {}
        for k in self.roots:
            ps = self.pids(procs, k)
            out[k] = (sum(pss(p) for p in ps), sum(procs[p][2] for p in ps))
        return out

    def reset_peak(self):
        with self.lock:
            self.peak = {k: (0, 0) for k in self.roots}

    def sample_once(self):
        r = self.rss(read_procs())
        with self.lock:
            for k, (p, r_) in r.items():
                self.peak[k] = (max(self.peak[k][0], p), max(self.peak[k][1], r_))
                self.peak_all[k] = (max(self.peak_all[k][0], p), max(self.peak_all[k][1], r_))

    def sample(self, every):
        while not self.stop:
            self.sample_once()
            time.sleep(every)


def load1():
    return os.getloadavg()[0]


def distinct_ids(path):
    with open(path) as f:
        next(f)
        return len({line.split(",", 1)[0] for line in f if line.strip()})


class Target:
    """A connection to a system's target database, polling for a date's rows."""

    def __init__(self, dsn):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def has_rows(self, ds):
        try:
            with self.conn.cursor() as c:
                c.execute("SELECT EXISTS (SELECT 1 FROM public.orders WHERE load_date = %s)", (ds,))
                return c.fetchone()[0]
        except psycopg2.Error:  # the target does not exist yet (sluice's partitioner makes it)
            return False

    def count(self, ds):
        with self.conn.cursor() as c:
            c.execute("SELECT count(*) FROM public.orders WHERE load_date = %s", (ds,))
            return c.fetchone()[0]


class Bench:
    def __init__(self, a):
        self.a = a
        self.systems = Systems({
            "sluice": [a.sluice_root],
            "airflow": [a.airflow_root, a.meta_pg],
            "postgres": [a.pg_pid],
            "s3": [a.s3_pid],
        })
        self.target = {"sluice": Target(a.sluice_db), "airflow": Target(a.airflow_db)}
        self.meta = psycopg2.connect(a.meta_db)
        self.meta.autocommit = True
        self.out = open(a.results, "a")

    def emit(self, rec):
        self.out.write(json.dumps(rec) + "\n")
        self.out.flush()
        print(json.dumps({k: v for k, v in rec.items() if k not in ("tasks", "trigger_output")}), file=sys.stderr)

    def file(self, ds):
        return os.path.join(self.a.files, f"{ds}.csv")

    def make_available(self, system, ds):
        dst = os.path.join(self.a.served_sluice if system == "sluice" else self.a.served_airflow, f"{ds}.csv")
        if not os.path.exists(dst):
            os.link(self.file(ds), dst)

    def meta_q(self, q, *args):
        with self.meta.cursor() as c:
            c.execute(q, args)
            return c.fetchall()

    # --- the two systems' ways to start, watch and read a run ---

    def start_sluice(self, ds, waiting):
        cmd = [self.a.sluice, "trigger", "--config", self.a.sluice_config, "--pipeline", "orders", "--date", ds]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with self.systems.lock:
            self.systems.extra["sluice"].add(p.pid)
        lines = []

        def read():
            for line in p.stdout:
                lines.append(line)
                marks = line.split("]")[0]
                if "[" in marks and any(m in marks for m in "…▶✓✗"):
                    waiting.set()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        return {"proc": p, "lines": lines, "reader": t, "cmd": cmd}

    def sluice_docs(self, ds, deadline):
        """Waits for the dbt-runner's background docs of ds (published or not) in sluice up's log:
        that work is the run's cost too, though the run completed without waiting for it."""
        pat = f'"ds":"{ds}"'
        while time.time() < deadline:
            with open(self.a.sluice_log, errors="replace") as f:
                f.seek(self.log_pos)
                for line in f:
                    if pat in line and ('"msg":"dbt docs published"' in line or '"msg":"dbt docs not published' in line
                                        or '"msg":"dbt docs queue full' in line):
                        return time.time()
            time.sleep(0.1)
        raise RuntimeError(f"sluice {ds}: no docs line in {self.a.sluice_log}")

    def finished_sluice(self, h):
        return h["proc"].poll() is not None

    def result_sluice(self, h, ds):
        h["reader"].join(10)
        p = h["proc"]
        with self.systems.lock:
            self.systems.extra["sluice"].discard(p.pid)
        text = "".join(h["lines"])
        if p.returncode != 0:
            raise RuntimeError(f"sluice trigger {ds} exited {p.returncode}:\n{text}")
        m = re.search(rf"^{ds}\s+\S+\s+completed\s+(\S+)", text, re.M)
        if not m:
            raise RuntimeError(f"sluice trigger {ds}: no completed row in its report:\n{text}")
        return {"wall_s": go_dur(m.group(1)), "trigger_output": text[-2000:]}

    def start_airflow(self, ds, waiting):
        run_id = f"bench__{ds}"
        body = json.dumps({"dag_run_id": run_id, "logical_date": f"{ds}T00:00:00Z"}).encode()
        req = urllib.request.Request(f"{self.a.airflow_api}/api/v2/dags/{DAG}/dagRuns", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
        h = {"run_id": run_id, "waiting": waiting, "state": None}
        return h

    def poll_airflow(self, h):
        rows = self.meta_q("SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = 'sensor_check_api'", DAG, h["run_id"])
        if rows and rows[0][0] in ("deferred", "success"):
            h["waiting"].set()
        st = self.meta_q("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG, h["run_id"])
        h["state"] = st[0][0] if st else None
        # A task up for retry waits retry_delay (the seed's 10 minutes): the run is recorded failed.
        retry = self.meta_q("SELECT task_id FROM task_instance WHERE dag_id = %s AND run_id = %s AND state = 'up_for_retry'",
                            DAG, h["run_id"])
        if retry:
            h["state"] = f"failed ({retry[0][0]} up for retry)"

    def finished_airflow(self, h):
        # The metadata database is Airflow's (its CPU counts as Airflow's): read it 4 times a
        # second, not at the target's polling rate; the run's end time is Airflow's own record.
        now = time.time()
        if now - h.get("polled", 0) >= 0.25:
            h["polled"] = now
            self.poll_airflow(h)
        return h["state"] is not None and (h["state"] == "success" or h["state"].startswith("failed"))

    def result_airflow(self, h, ds):
        if h["state"] != "success":
            raise RuntimeError(f"Airflow run {h['run_id']} ended {h['state']}; see the task logs under AIRFLOW_HOME/logs")
        (queued, start, end), = self.meta_q(
            "SELECT queued_at, start_date, end_date FROM dag_run WHERE dag_id = %s AND run_id = %s", DAG, h["run_id"])
        tasks = self.meta_q(
            "SELECT task_id, state, try_number, queued_dttm, start_date, end_date FROM task_instance WHERE dag_id = %s AND run_id = %s ORDER BY start_date",
            DAG, h["run_id"])
        return {
            "wall_s": (end - queued).total_seconds(),
            "queued_to_start_s": (start - queued).total_seconds(),
            "tasks": [{"task": t, "state": s, "try": n, "queued_s": (q - queued).total_seconds() if q else None,
                       "start_s": (b - queued).total_seconds() if b else None,
                       "end_s": (e - queued).total_seconds() if e else None} for t, s, n, q, b, e in tasks],
        }

    # --- one run ---

    def run(self, system, ds, kind, gated):
        want = distinct_ids(self.file(ds))
        if not gated:
            self.make_available(system, ds)
        waiting = threading.Event()
        load0 = load1()
        cpu0 = self.systems.cpu()
        self.systems.reset_peak()
        t0 = time.time()
        if system == "sluice":
            self.log_pos = os.path.getsize(self.a.sluice_log)
        h = (self.start_sluice if system == "sluice" else self.start_airflow)(ds, waiting)
        try:
            self.follow(system, ds, kind, gated, h, want, waiting, load0, cpu0, t0)
        except Exception:
            self.abort(system, h)
            raise

    def abort(self, system, h):
        """Ends a run that failed to complete, so it cannot hold up the next ones."""
        if system == "sluice":
            if h["proc"].poll() is None:
                h["proc"].kill()
            return
        body = json.dumps({"state": "failed"}).encode()
        req = urllib.request.Request(f"{self.a.airflow_api}/api/v2/dags/{DAG}/dagRuns/{h['run_id']}", data=body,
                                     headers={"Content-Type": "application/json"}, method="PATCH")
        try:
            urllib.request.urlopen(req, timeout=60).read()
        except OSError as e:
            print(f"bench: could not mark {h['run_id']} failed: {e}", file=sys.stderr)

    def follow(self, system, ds, kind, gated, h, want, waiting, load0, cpu0, t0):
        finished = self.finished_sluice if system == "sluice" else self.finished_airflow
        t_avail = t0
        deadline = t0 + self.a.timeout
        if gated:
            while not waiting.is_set():
                if finished(h) or time.time() > deadline:
                    raise RuntimeError(f"{system} {ds}: the sensor never waited (run ended or timed out)")
                time.sleep(self.a.poll)
            if system == "airflow":
                # Airflow's sensor task process is still exiting after it deferred; a trigger that
                # fires before it has (a file there at once) makes the scheduler fail the sensor
                # ("state changed externally", seen here under load) and retry it 10 min later.
                time.sleep(self.a.airflow_settle)
            t_avail = time.time()
            self.make_available(system, ds)
        t_visible = None
        tgt = self.target[system]
        while True:
            now = time.time()
            if t_visible is None and tgt.has_rows(ds):
                t_visible = now
            if finished(h):
                if t_visible is not None:
                    break
                if not tgt.has_rows(ds):
                    raise RuntimeError(f"{system} {ds}: the run ended and no row of the date is in the target")
            if now > deadline:
                raise RuntimeError(f"{system} {ds}: not done after {self.a.timeout} s")
            time.sleep(self.a.poll)
        t_end = time.time()
        self.systems.sample_once()  # a run shorter than the sampling interval still gets one
        res = (self.result_sluice if system == "sluice" else self.result_airflow)(h, ds)
        if system == "sluice":
            res["docs_after_s"] = round(self.sluice_docs(ds, deadline) - t_end, 3)
        cpu1 = self.systems.cpu()
        got = tgt.count(ds)
        if got != want:
            raise RuntimeError(f"{system} {ds}: {got} orders with load_date {ds}, want {want} (the file's distinct order_ids)")
        rec = {
            "kind": "run", "system": system, "ds": ds, "set": kind, "gated": gated, "rows": want,
            "harness_wall_s": round(t_end - t0, 3),
            "visible_s": round(t_visible - t_avail, 3),
            "available_after_s": round(t_avail - t0, 3),
            "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
            "peak_pss_mb": {k: round(v[0] / 1e6, 1) for k, v in self.systems.peak.items()},
            "peak_rss_mb": {k: round(v[1] / 1e6, 1) for k, v in self.systems.peak.items()},
            "load1_before": round(load0, 2), "load1_after": round(load1(), 2),
            "started": t0,
        }
        rec.update(res)
        rec["wall_s"] = round(rec["wall_s"], 3)
        self.emit(rec)

    def idle(self, seconds):
        load0 = load1()
        cpu0 = self.systems.cpu()
        self.systems.reset_peak()
        time.sleep(seconds)
        cpu1 = self.systems.cpu()
        self.emit({"kind": "idle", "seconds": seconds, "cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0},
                   "peak_pss_mb": {k: round(v[0] / 1e6, 1) for k, v in self.systems.peak.items()},
            "peak_rss_mb": {k: round(v[1] / 1e6, 1) for k, v in self.systems.peak.items()},
                   "load1_before": round(load0, 2), "load1_after": round(load1(), 2)})


def go_dur(s):
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
    for num, unit in re.findall(r"([\d.]+)(ms|µs|us|ns|h|m|s)", s):
        total += float(num) * units[unit]
    return total


def main():
    ap = argparse.ArgumentParser()
    for name in ("sluice", "sluice-config", "sluice-log", "sluice-db", "airflow-api", "airflow-db", "meta-db", "files", "served-sluice", "served-airflow", "results"):
        ap.add_argument("--" + name, required=True)
    for name in ("sluice-root", "airflow-root", "meta-pg", "pg-pid", "s3-pid"):
        ap.add_argument("--" + name, type=int, required=True)
    ap.add_argument("--warmup", default="", help="dates each system runs first, not measured")
    ap.add_argument("--small", default="", help="dates whose files are there before the run")
    ap.add_argument("--gated", default="", help="dates whose file appears once the sensor waits")
    ap.add_argument("--big", default="", help="the 1M-row date(s), gated")
    ap.add_argument("--idle", type=float, default=20, help="seconds of the idle window before the runs")
    ap.add_argument("--airflow-settle", type=float, default=5, help="seconds from Airflow's sensor deferring to the file appearing")
    ap.add_argument("--poll", type=float, default=0.025)
    ap.add_argument("--sample", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    a = ap.parse_args()
    b = Bench(a)
    threading.Thread(target=b.systems.sample, args=(a.sample,), daemon=True).start()
    b.idle(a.idle)
    # The gated dates come first: if the benchmark is cut short (results.jsonl is written as it
    # goes, and report.py reads what is there), both goals still have figures.
    plan = [("warmup", d, True) for d in a.warmup.split()] + [("gated", d, True) for d in a.gated.split()] + \
        [("small", d, False) for d in a.small.split()] + [("big", d, True) for d in a.big.split()]
    for i, (kind, ds, gated) in enumerate(plan):
        # interleaved: the systems take turns going first
        order = ("sluice", "airflow") if i % 2 == 0 else ("airflow", "sluice")
        for system in order:
            try:
                b.run(system, ds, kind, gated)
            except Exception as e:  # recorded, and the report names it; the other runs go on
                b.emit({"kind": "error", "system": system, "ds": ds, "set": kind, "error": str(e)[-3000:]})
    b.emit({"kind": "total", "peak_pss_mb": {k: round(v[0] / 1e6, 1) for k, v in b.systems.peak_all.items()},
            "peak_rss_mb": {k: round(v[1] / 1e6, 1) for k, v in b.systems.peak_all.items()}})


if __name__ == "__main__":
    main()
