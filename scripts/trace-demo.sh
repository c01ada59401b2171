#!/usr/bin/env bash
# make trace-demo: one run of the orders pipeline traced into a local Jaeger. Jaeger (built by
# `make trace-demo` into .sluice/bin) listens on 127.0.0.1 only; the six services run as separate
# processes on the embedded NATS server `sluice nats` runs (service binaries embed none), and `sluice run`
# requests the run. Every process exports with OTEL_EXPORTER_OTLP_ENDPOINT. At the end the run's
# trace is read back from Jaeger's query API and printed as a tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=.sluice/trace-demo
bin=.sluice/bin
ds=${1:-2026-11-26}
mkdir -p "$dir"
export SLUICE_S3_ACCESS_KEY=${SLUICE_S3_ACCESS_KEY:-sluice-local}
export SLUICE_S3_SECRET_KEY=${SLUICE_S3_SECRET_KEY:-sluice-local-secret}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${started_s3:-}" ] && scripts/s3.sh stop "$dir/s3" || true
  [ -n "${started_pg:-}" ] && scripts/pg.sh stop "$dir/pg" || true
}
trap cleanup EXIT
wait_http() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.2; done; echo "no answer from $1" >&2; return 1; }

"$bin/jaeger" --config deploy/jaeger/local.yaml > "$dir/jaeger.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.1:16686/api/services

if [ -z "${DATABASE_URL:-}" ]; then DATABASE_URL=$(scripts/pg.sh start "$dir/pg"); started_pg=1; fi
if [ -z "${SLUICE_S3_ENDPOINT:-}" ]; then SLUICE_S3_ENDPOINT=$(scripts/s3.sh start "$dir/s3"); started_s3=1; fi
export DATABASE_URL SLUICE_S3_ENDPOINT
"$bin/sluice" sample-source --addr 127.0.0.1:18081 --rows 1000 --delay 2s > "$dir/source.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.1:18081/healthz

export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
nats=nats://127.0.0.1:14222 # sluice.yaml's nats.listen: `sluice nats` serves (and provisions) it there
"$bin/sluice" nats --config sluice.yaml > "$dir/nats.log" 2>&1 & pids+=($!)
for _ in $(seq 1 150); do grep -q "provisioned and serving" "$dir/nats.log" && break; sleep 0.2; done
grep -q "provisioned and serving" "$dir/nats.log" || { cat "$dir/nats.log" >&2; exit 1; }
port=18090
for s in sensor fetcher validator partitioner dbtrunner alerter; do
  args=(--config sluice.yaml --http "127.0.0.1:$port" --nats "$nats")
  "$bin/sluice-$s" "${args[@]}" > "$dir/$s.log" 2>&1 & pids+=($!)
  wait_http "http://127.0.0.1:$port/readyz" || { cat "$dir/$s.log" >&2; exit 1; }
  echo "sluice-$s: http://127.0.0.1:$port/metrics"
  port=$((port + 1))
done

echo
"$bin/sluice" run --config sluice.yaml --pipeline orders --date "$ds" | tee "$dir/run.txt"
run_id=$(awk '/run id/ {print $3}' "$dir/run.txt" | tail -1)
trace_id=$(awk '/trace id/ {print $3}' "$dir/run.txt" | tail -1)

echo
echo "trace $trace_id in Jaeger (http://127.0.0.1:16686/api/traces/$trace_id):"
for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:16686/api/traces/$trace_id" -o "$dir/trace.json" &&
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"][0]; sys.exit(0 if any(s["operationName"]=="alerter" for s in d["spans"]) else 1)' "$dir/trace.json" && break
  sleep 0.2
done
python3 - "$dir/trace.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["data"][0]
procs = {k: v["serviceName"] for k, v in t["processes"].items()}
spans = {s["spanID"]: s for s in t["spans"]}
kids = {}
for s in t["spans"]:
    parent = next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None)
    kids.setdefault(parent if parent in spans else None, []).append(s)
start = min(s["startTime"] for s in t["spans"])
def show(s, depth):
    print(f'{(s["startTime"]-start)/1e6:8.3f}s {s["duration"]/1e6:8.3f}s  {"  "*depth}{s["operationName"]}  [{procs[s["processID"]]}]')
    for k in sorted(kids.get(s["spanID"], []), key=lambda k: k["startTime"]):
        show(k, depth + 1)
for r in sorted(kids.get(None, []), key=lambda k: k["startTime"]):
    show(r, 0)
print(f'{len(t["spans"])} spans from {len(procs)} services')
PY
echo
echo "dbt docs of the run: http://127.0.0.1:18094/docs/orders/$ds/$run_id/index.html (any service's port serves /docs/)"
echo "traces stay in this Jaeger's memory until it stops; with the docker compose stack open http://localhost:16686/trace/$trace_id"
if [ -n "${KEEP:-}" ]; then echo "KEEP is set: services and Jaeger keep running; press Ctrl-C to stop"; wait; fi
