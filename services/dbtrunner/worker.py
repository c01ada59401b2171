"""sluice's warm dbt worker: one long-lived Python process per dbt-runner replica that keeps dbt
imported and the project parsed, so a run pays neither the interpreter start, the import of dbt,
nor a parse. The dbt-runner (services/dbtrunner, worker.go) starts it, embeds this file in its
binary, and talks to it over stdin/stdout, one JSON object per line:

  request:  {"cmd": "build", "args": ["--select", ...], "vars": "<json>", "env": {...}}
            {"cmd": "parse", "vars": "<json>", "env": {...}}
  response: {"ok": bool, "results": [...], "error": "...", "output": "...",
             "checksum": "<manifest checksum>", "parsed": bool, "rss_mb": n}

Requests run one at a time: dbt-core is not safe to invoke concurrently in one process.
The parsed manifest is kept in memory per target schema (sources.yml reads target.schema while
parsing) and handed to dbtRunner, so a build does not parse at all. It is parsed again, with dbt's
partial parsing from a target directory kept per schema, when a file of the project changed or
the vars (the pipelines' contracts, which change only with the config) did. The run's own values
(ds, run_id, pipeline, fence) arrive as environment variables (SLUICE_DS, SLUICE_RUN_ID,
SLUICE_PIPELINE, SLUICE_FENCE) that the project's macros read only while executing
(dbt_project/macros/sluice_ds.sql), so they never invalidate the parse.

The connection settings, the password included, come from this process's environment, set once
when the runner starts it; requests carry only the schema and the run's values. dbt's own output
goes to stderr (the runner keeps its tail); stdout carries only the protocol.
"""

import hashlib
import json
import os
import sys
import time
import traceback

# The protocol owns the real stdout; everything else that writes to fd 1 (dbt's console logger,
# a stray print) goes to stderr.
_proto = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

from dbt.cli.main import dbtRunner  # noqa: E402  (after the redirect: importing may log)
import dbt_common.tests  # noqa: E402

# dbt-core's caches for many invocations in one process (made for its own test suite): Jinja
# parses keyed by the template's text, and the plugin modules found on the path, which otherwise
# every invocation looks up again (~10 % of a small build's CPU). Both depend only on their key;
# the worker is recycled after dbt.worker.max_runs builds, which bounds what they hold.
dbt_common.tests.enable_test_caching()

PROJECT = os.environ["SLUICE_DBT_PROJECT_DIR"]
HOME = os.environ["SLUICE_DBT_WORKER_DIR"]  # holds profiles.yml, one target dir per schema
OUTPUT_LINES = 400  # dbt messages kept per invocation for the runner's error and log

_manifests = {}  # schema -> (fingerprint, vars, manifest, checksum)


def project_fingerprint():
    """Names, sizes and modification times of the project's files: cheap, and it changes when
    anyone edits the project (dbt's partial parsing then decides what to re-read)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(PROJECT):
        dirs[:] = sorted(d for d in dirs if d not in ("target", "logs", "dbt_packages", ".git") and not d.startswith("."))
        for f in sorted(files):
            p = os.path.join(root, f)
            try:
                st = os.stat(p)
            except OSError:
                continue
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def manifest_checksum(manifest, vars_json):
    """What the docs of the project depend on: every node's and macro's checksum, and the vars."""
    h = hashlib.sha256(vars_json.encode())
    for uid in sorted(manifest.nodes):
        n = manifest.nodes[uid]
        h.update(f"{uid}\0{n.checksum.checksum}\n".encode())
    for uid in sorted(manifest.sources):
        h.update(f"{uid}\0{manifest.sources[uid].relation_name}\n".encode())
    for uid in sorted(manifest.macros):
        h.update(f"{uid}\0{hashlib.sha256(manifest.macros[uid].macro_sql.encode()).hexdigest()}\n".encode())
    return h.hexdigest()


class Output:
    """Collects dbt's messages of one invocation (info and above), as its console would show them."""

    def __init__(self):
        self.lines = []

    def __call__(self, msg):
        try:
            if msg.info.level in ("info", "warn", "error") and msg.info.msg:
                self.lines.append(msg.info.msg)
                if len(self.lines) > 2 * OUTPUT_LINES:
                    del self.lines[:OUTPUT_LINES]
        except Exception:  # a callback must never break the invocation
            pass

    def text(self):
        return "\n".join(self.lines[-OUTPUT_LINES:])


def common_args(schema, vars_json):
    target = os.path.join(HOME, "target", schema)
    return [
        "--vars", vars_json,
        "--project-dir", PROJECT,
        "--profiles-dir", HOME,
        "--profile", "sluice",
        "--target", "sluice",
        "--target-path", target,
        "--log-path", os.path.join(HOME, "logs"),
        "--log-level", "none",
        "--log-level-file", "none",
        "--no-use-colors",
        "--partial-parse",
    ]


def describe_exception(e):
    if e is None:
        return ""
    return f"{type(e).__name__}: {e}"


def ensure_manifest(schema, vars_json, out):
    """The parsed manifest for schema, parsing (partially) when the project or vars changed."""
    fp = project_fingerprint()
    cached = _manifests.get(schema)
    if cached and cached[0] == fp and cached[1] == vars_json:
        return cached[2], cached[3], False
    res = dbtRunner(callbacks=[out]).invoke(["parse", "--no-write-json"] + common_args(schema, vars_json))
    if not res.success or res.result is None:
        raise RuntimeError("dbt parse failed: " + (describe_exception(res.exception) or "see output"))
    manifest = res.result
    checksum = manifest_checksum(manifest, vars_json)
    _manifests[schema] = (fp, vars_json, manifest, checksum)
    return manifest, checksum, True


def node_results(run_result, manifest):
    out = []
    for r in run_result.results:
        node = r.node
        rows = None
        resp = r.adapter_response or {}
        if isinstance(resp, dict):
            rows = resp.get("rows_affected")
        timing = []
        for t in r.timing or []:
            timing.append({
                "name": t.name,
                "started_at": t.started_at.isoformat() + "Z" if t.started_at and t.started_at.tzinfo is None else (t.started_at.isoformat() if t.started_at else ""),
                "completed_at": t.completed_at.isoformat() + "Z" if t.completed_at and t.completed_at.tzinfo is None else (t.completed_at.isoformat() if t.completed_at else ""),
            })
        deps = []
        try:
            deps = list(manifest.nodes[node.unique_id].depends_on.nodes)
        except Exception:
            pass
        out.append({
            "unique_id": node.unique_id,
            "status": str(r.status),
            "execution_time": r.execution_time or 0,
            "message": r.message or "",
            "adapter_response": {"rows_affected": rows},
            "timing": timing,
            "depends_on": deps,
        })
    return out


def rss_mb():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def handle(req):
    env = req.get("env") or {}
    for k, v in env.items():
        os.environ[k] = str(v)
    schema = os.environ.get("SLUICE_PG_SCHEMA", "public")
    vars_json = req.get("vars") or "{}"
    out = Output()
    resp = {"ok": False, "results": [], "error": "", "output": "", "checksum": "", "parsed": False}
    try:
        manifest, checksum, parsed = ensure_manifest(schema, vars_json, out)
        resp["checksum"], resp["parsed"] = checksum, parsed
        if req["cmd"] == "parse":
            resp["ok"] = True
        elif req["cmd"] == "build":
            started = time.monotonic()
            res = dbtRunner(manifest=manifest, callbacks=[out]).invoke(
                ["build"] + list(req.get("args") or []) + common_args(schema, vars_json) + ["--no-write-json"])
            resp["seconds"] = time.monotonic() - started
            if res.result is not None and hasattr(res.result, "results"):
                resp["results"] = node_results(res.result, manifest)
            resp["ok"] = bool(res.success)
            if res.exception is not None:
                resp["error"] = describe_exception(res.exception)
        else:
            resp["error"] = f"unknown command {req['cmd']!r}"
    except Exception as e:  # reported to the runner, which classifies it; the worker goes on
        resp["error"] = describe_exception(e)
        traceback.print_exc(file=sys.stderr)
    finally:
        for k in env:
            if k.startswith("SLUICE_") and k != "SLUICE_PG_SCHEMA":
                os.environ.pop(k, None)
    resp["output"] = out.text()
    resp["rss_mb"] = rss_mb()
    return resp


def main():
    _proto.write(json.dumps({"ready": True, "pid": os.getpid(), "rss_mb": rss_mb()}) + "\n")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError as e:
            resp = {"ok": False, "error": f"bad request: {e}", "results": [], "output": ""}
        else:
            resp = handle(req)
        _proto.write(json.dumps(resp) + "\n")


if __name__ == "__main__":
    main()
