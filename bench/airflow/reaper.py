#!/usr/bin/env python3
"""Runs the processes of one system under test as its children and reaps every process that ends
below it (it is their child subreaper), so the CPU time of all of them, orphans included, adds up
in this process's children's CPU time, which the harness reads from /proc. Ends when the first
child ends, or on SIGTERM/SIGINT, which it passes on to all children.
  reaper.py CMD1 [ARGS] [::: CMD2 [ARGS] ...]
"""
import ctypes, os, signal, subprocess, sys

PR_SET_CHILD_SUBREAPER = 36


def main():
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    cmds, cur = [], []
    for a in sys.argv[1:]:
        if a == ":::":
            cmds.append(cur)
            cur = []
        else:
            cur.append(a)
    if cur:
        cmds.append(cur)
    children = [subprocess.Popen(c, start_new_session=False) for c in cmds]
    mine = {c.pid for c in children}
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True
        for pid in mine:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid in mine:
            mine.discard(pid)
            if not stopping:
                print(f"reaper: {' '.join(next(c.args for c in children if c.pid == pid))} exited ({status >> 8})", file=sys.stderr)
                code = 1
                stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
