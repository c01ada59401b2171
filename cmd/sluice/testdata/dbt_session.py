"""Runs dbt commands for a Go test in one long-lived process, so each costs dbt's work, not
Python's start-up, imports and a full parse of the project (seconds per call on a busy machine).

Reads one JSON array of dbt arguments per line on stdin; after each command prints one line
`SLUICE-RESULT {"success": ..., "error": ..., "nodes": [{"node", "status", "message"}]}` on
stdout (dbt's own log lines go to stdout too and are to be skipped). The manifest of a `parse`
command is reused by the commands after it: vars are applied when a node is compiled for
execution, so each command still runs the SQL its own --vars give.
"""
import json
import sys

from dbt.cli.main import dbtRunner


def main():
    manifest = None
    for line in sys.stdin:
        args = json.loads(line)
        out = {"success": False, "error": "", "nodes": []}
        try:
            res = dbtRunner(manifest=manifest).invoke(args)
            out["success"] = bool(res.success)
            if args[0] == "parse" and res.success:
                manifest = res.result
            if res.exception is not None:
                out["error"] = str(res.exception)
            for r in getattr(res.result, "results", None) or []:
                out["nodes"].append({"node": r.node.unique_id, "status": str(r.status), "message": r.message or ""})
        except Exception as e:  # report, keep serving
            out["error"] = repr(e)
        print("SLUICE-RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
