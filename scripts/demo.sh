#!/usr/bin/env bash
# make demo: runs the orders pipeline for two consecutive dates on a local PostgreSQL (a
# throwaway cluster unless DATABASE_URL is set), a local S3 server (versitygw unless
# SLUICE_S3_ENDPOINT is set) and dbt, with the sample source as the API. Data stays in
# .sluice/demo, so running it again shows the reruns changing nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo=.sluice/demo
bin=.sluice/bin
mkdir -p "$demo"
export SLUICE_S3_ACCESS_KEY=${SLUICE_S3_ACCESS_KEY:-sluice-local}
export SLUICE_S3_SECRET_KEY=${SLUICE_S3_SECRET_KEY:-sluice-local-secret}
cleanup() {
  [ -n "${source_pid:-}" ] && kill "$source_pid" 2>/dev/null || true
  [ -n "${started_s3:-}" ] && scripts/s3.sh stop "$demo/s3" || true
  [ -n "${started_pg:-}" ] && scripts/pg.sh stop "$demo/pg" || true
}
trap cleanup EXIT
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh start "$demo/pg"); started_pg=1
fi
if [ -z "${SLUICE_S3_ENDPOINT:-}" ]; then
  SLUICE_S3_ENDPOINT=$(scripts/s3.sh start "$demo/s3"); started_s3=1
fi
export DATABASE_URL SLUICE_S3_ENDPOINT

# The source API: each date's file appears 3 s after it is first asked for, so the sensor waits.
"$bin/sluice" sample-source --addr 127.0.0.1:18081 --rows 1000 --delay 3s > "$demo/source.log" 2>&1 &
source_pid=$!
for _ in $(seq 1 50); do curl -fs -o /dev/null http://127.0.0.1:18081/healthz && break; sleep 0.1; done

for ds in 2026-11-24 2026-11-25; do
  echo
  "$bin/sluice" run --config sluice.yaml --pipeline orders --date "$ds"
done

echo
echo "orders by partition:"
psql "$DATABASE_URL" -X -q -c "SELECT tableoid::regclass AS partition, count(*) AS rows, count(DISTINCT order_id) AS distinct_ids, min(updated_at), max(updated_at) FROM orders GROUP BY 1 ORDER BY 1"
psql "$DATABASE_URL" -X -q -t -A -c "SELECT 'total: ' || count(*) || ' rows, ' || count(DISTINCT order_id) || ' distinct order_id' FROM orders"

echo
echo "Console: .sluice/bin/sluice console --config sluice.yaml   then open http://127.0.0.1:8090/pipelines/orders"
