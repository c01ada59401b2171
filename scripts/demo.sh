#!/usr/bin/env bash
# make demo: runs the orders and events pipelines for two consecutive dates on a local PostgreSQL (a
# throwaway cluster unless DATABASE_URL is set), a local S3 server (versitygw unless
# SLUICE_S3_ENDPOINT is set) and dbt, with the sample source as the API. Data stays in
# .sluice/demo, so running it again shows the reruns changing nothing.
# It first prepares only what it runs, all at once (scripts/prepare.sh: the sluice and versitygw
# binaries, the dbt virtualenv, the PostgreSQL cluster), and ends with how long each part took.
set -euo pipefail
t0=$EPOCHREALTIME
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo=.sluice/demo
bin=.sluice/bin
mkdir -p "$demo"
timings=$demo/timings
: > "$timings"
# timed NAME CMD...: runs CMD and records how long it took for the closing breakdown.
timed() {
  local name=$1; shift
  local start=$EPOCHREALTIME
  "$@"
  printf '%s\t%s\n' "$name" "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')" >> "$timings"
}
export SLUICE_S3_ACCESS_KEY=${SLUICE_S3_ACCESS_KEY:-sluice-local}
export SLUICE_S3_SECRET_KEY=${SLUICE_S3_SECRET_KEY:-sluice-local-secret}
cleanup() {
  if [ -n "${up_pid:-}" ]; then kill "$up_pid" 2>/dev/null; wait "$up_pid" 2>/dev/null; fi
  [ -n "${source_pid:-}" ] && kill "$source_pid" 2>/dev/null || true
  [ -n "${started_s3:-}" ] && scripts/s3.sh stop "$demo/s3" || true
  [ -n "${started_pg:-}" ] && scripts/pg.sh stop "$demo/pg" || true
}
trap cleanup EXIT

parts=(sluice dbt) prep=()
[ -n "${SLUICE_S3_ENDPOINT:-}" ] || parts+=(versitygw)
[ -n "${DATABASE_URL:-}" ] || prep+=(--pg "$demo/pg")
echo "Preparing ${parts[*]}${prep:+ and PostgreSQL}, all at once:"
scripts/prepare.sh --timings "$timings" "${prep[@]}" "${parts[@]}"
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh start "$demo/pg"); started_pg=1
fi
if [ -z "${SLUICE_S3_ENDPOINT:-}" ]; then
  SLUICE_S3_ENDPOINT=$(timed "S3 server start" scripts/s3.sh start "$demo/s3"); started_s3=1
fi
export DATABASE_URL SLUICE_S3_ENDPOINT

# The source API: each date's file appears 1 s after it is first asked for, so the sensor waits
# (it pokes every second: sluice.yaml).
"$bin/sluice" sample-source --addr 127.0.0.1:18081 --rows 1000 --delay 1s > "$demo/source.log" 2>&1 &
source_pid=$!
for _ in $(seq 1 50); do curl -fs -o /dev/null http://127.0.0.1:18081/healthz && break; sleep 0.1; done
# The answer may come from another process on that port: the demo's own source must be alive.
sleep 0.3
kill -0 "$source_pid" 2>/dev/null || { echo "the sample source cannot listen on 127.0.0.1:18081:" >&2; cat "$demo/source.log" >&2; exit 1; }

# The services, the console and their HTTP endpoint (health, metrics, the runs' dbt docs) in one
# process while the demo runs; each `sluice run` below uses it and prints its docs URL.
http=127.0.0.1:18080
"$bin/sluice" up --config sluice.yaml --http "$http" > "$demo/up.log" 2>&1 &
up_pid=$!
# Ready when its own log says so (an answer on the port could come from another sluice up).
ready() {
  for _ in $(seq 1 300); do
    grep -q "all services running" "$demo/up.log" && return
    kill -0 "$up_pid" 2>/dev/null || return
    sleep 0.2
  done
}
timed "sluice up ready" ready
grep -q "all services running" "$demo/up.log" || { echo "the demo's sluice up did not start:" >&2; cat "$demo/up.log" >&2; exit 1; }

for ds in 2026-11-24 2026-11-25; do
  for pipeline in orders events; do
    echo
    timed "run $pipeline $ds" "$bin/sluice" run --config sluice.yaml --pipeline "$pipeline" --date "$ds"
  done
done

echo
echo "orders by partition:"
psql "$DATABASE_URL" -X -q -c "SELECT tableoid::regclass AS partition, count(*) AS rows, count(DISTINCT order_id) AS distinct_ids, min(updated_at), max(updated_at) FROM orders GROUP BY 1 ORDER BY 1"
psql "$DATABASE_URL" -X -q -t -A -c "SELECT 'total: ' || count(*) || ' rows, ' || count(DISTINCT order_id) || ' distinct order_id' FROM orders"
echo
echo "events by (monthly) partition:"
psql "$DATABASE_URL" -X -q -c "SELECT tableoid::regclass AS partition, count(*) AS rows, count(DISTINCT (account_id, event_id)) AS distinct_keys, max(revision) AS max_revision, count(*) FILTER (WHERE note IS NULL) AS null_notes, count(*) FILTER (WHERE billable) AS billable FROM events GROUP BY 1 ORDER BY 1"

echo
echo "How long each part took:"
awk -F'\t' -v total="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')" '
  { printf "  %-44s %6ss\n", $1, $2 }
  END { printf "make demo took %ss (the parts above \"all at once\" ran side by side)\n", total }' "$timings"

echo
curl -fsL -o /dev/null "http://$http/docs/orders/latest/" \
  || echo "warning: http://$http/docs/orders/latest/ does not answer; see $demo/up.log" >&2
echo "dbt docs of the latest run: http://$http/docs/orders/latest/"
echo "console:                    http://127.0.0.1:8090/pipelines/orders"
if [ -t 0 ] && [ -t 1 ]; then
  read -r -p "Both are served by the demo's sluice up until you press Enter. " _ || true
else
  echo "(served by the demo's sluice up, which stops now)"
fi
echo "Afterwards the console alone: .sluice/bin/sluice console --config sluice.yaml"
