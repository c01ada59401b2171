#!/usr/bin/env python3
"""Runs one command and prints one JSON line: wall seconds, the CPU seconds of the command and
every child it waited for (dbt included), the CPU seconds PostgreSQL's processes spent meanwhile
(the postmaster's own, its reaped backends' and its live children's, from /proc), the same for
--also-pid (a `sluice up` the command attaches to, with its dbt worker), and the 1-minute load
average before and after. The command's output goes to --log.
  timed.py --name NAME --size N --hist H --rep R --pg-pid PID [--also-pid PID] --log FILE -- CMD...
"""
import argparse, json, os, resource, subprocess, sys, time

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, with_reaped=True):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the ')': state is fields[0]; utime, stime, cutime, cstime are fields 11..14
    t = int(fields[11]) + int(fields[12])
    if with_reaped:
        t += int(fields[13]) + int(fields[14])
    return t / TICK


def tree_cpu(root):
    """CPU seconds of root (with its reaped children) plus its live children's."""
    if not root:
        return 0.0
    total = proc_cpu(root)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == root:
            total += proc_cpu(int(d))
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--hist", type=int, default=0)
    ap.add_argument("--rep", type=int, default=1)
    ap.add_argument("--pg-pid", type=int, default=0)
    ap.add_argument("--also-pid", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    load0 = os.getloadavg()[0]
    pg0 = tree_cpu(a.pg_pid)
    up0 = tree_cpu(a.also_pid)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(a.log, "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg1 = tree_cpu(a.pg_pid)
    up1 = tree_cpu(a.also_pid)
    out = {
        "name": a.name, "size": a.size, "hist": a.hist, "rep": a.rep, "rc": rc,
        "wall_s": round(wall, 3),
        "cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 2),
        "pg_cpu_s": round(pg1 - pg0, 2),
        "up_cpu_s": round(up1 - up0, 2),
        "load1_before": round(load0, 2), "load1_after": round(os.getloadavg()[0], 2),
        "log": a.log,
    }
    print(json.dumps(out))
    sys.stdout.flush()
    if rc != 0:
        print(f"timed.py: {a.name} exited {rc}; see {a.log}", file=sys.stderr)
        sys.exit(rc)


if __name__ == "__main__":
    main()
