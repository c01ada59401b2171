#!/usr/bin/env bash
# End-to-end benchmark (bench/RESULTS.md, section "End to end"). Whole `sluice run`s of the orders
# pipeline, each on a database of its own, against the physical limit of the same work done by
# hand in the same PostgreSQL in the same session: psql \copy of the same file into a staging
# table plus one hand-written MERGE into the partitioned target. Sizes SIZES rows per date (new
# orders from the sample source) on an empty target, and HIST_SIZES on a target that already
# holds HIST_ROWS rows of history in HIST_DAYS daily partitions. Runs are interleaved
# (sluice, baseline, sluice, ...), REPS times each. Every figure carries the CPU seconds of the
# command with its children (dbt included), PostgreSQL's CPU seconds and the 1-minute load average.
#   bench/e2e/run.sh          (or: make bench-e2e)
# Each measured `sluice run` attaches to a `sluice up` started for its database and given time to
# warm its dbt worker, after one untimed run of another date (WARMUP) through the same `sluice up`:
# a run as it goes in a service that is up. COLD_SIZES are also run the old way, `sluice run`
# alone (JetStream, the six services and the dbt worker started and stopped by the command).
# BACKFILL_DAYS dates of BACKFILL_SIZE rows go through one `sluice backfill`, on a warm
# `sluice up` and alone. Every run uses one bucket; a docs version names its database, so each
# database's is generated once (after the warm-up, waited for) and copied for the measured run. A
# command run alone waits, as it stops, for the docs of its runs: its wall time includes them.
# Knobs: SIZES ("1000 100000"; add 999999 for the 1M row: the sample source's most), HIST_SIZES (1000), HIST_ROWS (1000000;
#        the issue's goal is stated for 10000000), HIST_DAYS (100), REPS (3), WARMUP (1; 0: none),
#        COLD_SIZES (1000), BACKFILL_DAYS (30; 0: none), BACKFILL_SIZE (1000), BACKFILL_REPS (REPS), BENCH_DIR
#        (.sluice/bench/e2e), RESULTS (bench/RESULTS.md; empty: only print the section).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/e2e
work=${BENCH_DIR:-$root/.sluice/bench/e2e}
bin=$work/bin
bench_name=bench-e2e
export SIZES=${SIZES:-1000 100000} HIST_SIZES=${HIST_SIZES-1000} HIST_ROWS=${HIST_ROWS:-1000000}
export HIST_DAYS=${HIST_DAYS:-100} REPS=${REPS:-3} WARMUP=${WARMUP:-1} COLD_SIZES=${COLD_SIZES-1000}
export BACKFILL_DAYS=${BACKFILL_DAYS:-30} BACKFILL_SIZE=${BACKFILL_SIZE:-1000} BACKFILL_REPS=${BACKFILL_REPS:-$REPS}
ds=2026-11-25

. "$root/bench/lib.sh"
if [ "${1:-}" != --measure ]; then
  rm -rf "$work/runs" "$work/results.jsonl"
  bench_setup
fi

# From here on scripts/with-infra.sh has started PostgreSQL and versitygw and exported their
# addresses; it stops them when this script ends.
bench_infra
results=$work/results.jsonl
runs=$work/runs
mkdir -p "$runs"

# One sample source per size, on free ports; each serves the same file to sluice and to psql.
declare -A src
for n in $(printf '%s\n' $SIZES $HIST_SIZES $COLD_SIZES $BACKFILL_SIZE | sort -un); do
  bench_source "$n" -rows "$n"
  src[$n]=$source_url
  curl -fsS -o "$work/orders-$n.csv" "${src[$n]}/data/$ds.csv"
  say "source of $n rows: ${src[$n]} ($(($(wc -l <"$work/orders-$n.csv") - 1)) lines in $ds.csv)"
done

# target_ddl (bench/lib.sh): the target as the partitioner creates it.
part_ddl() { # part_ddl DAY: the partition the partitioner would name for DAY
  echo "CREATE TABLE IF NOT EXISTS public.orders_p${1//-/} PARTITION OF public.orders FOR VALUES FROM ('$1') TO (DATE '$1' + 1)"
}

# The history template: HIST_ROWS orders over the HIST_DAYS days before $ds, one partition each.
# Their order_ids (from 10^12 up) never meet the sample source's, so a measured run's keys are all
# new and its lookups go through the key index over the whole history.
if [ -n "$HIST_SIZES" ]; then
  say "building the history template: $HIST_ROWS rows in $HIST_DAYS daily partitions"
  asql 'DROP DATABASE IF EXISTS e2e_hist WITH (FORCE)'
  asql 'CREATE DATABASE e2e_hist'
  hdb=$(dburl e2e_hist)
  {
    echo "$target_ddl;"
    for d in $(seq 1 "$HIST_DAYS"); do part_ddl "$(date -u -d "$ds - $d day" +%F)"; echo ';'; done
    echo "INSERT INTO public.orders SELECT 1000000000000 + g, 1 + g % 50000, (g % 100000) / 100.0,
      TIMESTAMPTZ '$ds 00:00:00+00' - (1 + g % $HIST_DAYS) * INTERVAL '1 day' + (g % 86400) * INTERVAL '1 second',
      DATE '$ds' - (1 + g % $HIST_DAYS) FROM generate_series(1, $HIST_ROWS) g;"
    echo "ANALYZE public.orders;"
  } | psql -qX -v ON_ERROR_STOP=1 "$hdb" >/dev/null
  psql -qX "$hdb" -c 'CHECKPOINT' >/dev/null
fi

merge_sql="MERGE INTO public.orders t
USING (SELECT DISTINCT ON (order_id) order_id, customer_id, amount, updated_at, load_date
       FROM public.bl_staging ORDER BY order_id, updated_at DESC, customer_id DESC, amount DESC) s
ON t.order_id = s.order_id
WHEN MATCHED AND (s.updated_at > t.updated_at OR (s.updated_at = t.updated_at AND s.load_date < t.load_date)) THEN
  UPDATE SET customer_id = s.customer_id, amount = s.amount, updated_at = s.updated_at, load_date = s.load_date
WHEN NOT MATCHED THEN
  INSERT (order_id, customer_id, amount, updated_at, load_date)
  VALUES (s.order_id, s.customer_id, s.amount, s.updated_at, s.load_date)"

# newdb NAME HIST: a fresh database, a copy of the history template when HIST > 0.
newdb() {
  asql "DROP DATABASE IF EXISTS $1 WITH (FORCE)"
  if [ "$2" -gt 0 ]; then asql "CREATE DATABASE $1 TEMPLATE e2e_hist"; else asql "CREATE DATABASE $1"; fi
  psql -qX "$(dburl "$1")" -c 'CHECKPOINT' >/dev/null
}

# sluice_config DIR SIZE BUCKET: the run's config, on the sample source of SIZE rows
sluice_config() {
  cat >"$1/sluice.yaml" <<YAML
nats:
  listen: 127.0.0.1:$(free_port)
  data_dir: $1/nats
  subject_prefix: etl
postgres:
  url: env:DATABASE_URL
s3:
  endpoint: env:SLUICE_S3_ENDPOINT
  bucket: $3
  access_key: env:SLUICE_S3_ACCESS_KEY
  secret_key: env:SLUICE_S3_SECRET_KEY
  path_style: true
dbt:
  executable: $root/.venv/bin/dbt
  project_dir: $root/dbt_project
console:
  addr: 127.0.0.1:$(free_port)
pipelines:
  - name: orders
    source:
      url: ${src[$2]}/data/{ds}.csv
      method: HEAD
    sensor:
      poke_interval: 1s
      timeout: 10m
    lease:
      ttl: 30s
    contract: orders
    staging_table: staging_orders
    target:
      schema: public
      table: orders
    dbt:
      select: stg_orders orders
    retries:
      max: 0
YAML
}

# up_start DIR: `sluice up` on DIR/sluice.yaml (log DIR/up.log), once its dbt worker is warm
up_pid=
up_start() {
  "$bin/sluice" up --config "$1/sluice.yaml" --http "127.0.0.1:$(free_port)" --console off -v >"$1/up.log" 2>&1 &
  up_pid=$!
  pids+=("$up_pid")
  for _ in $(seq 1 1200); do
    grep -qs '"msg":"dbt worker warm"' "$1/up.log" && return 0
    kill -0 "$up_pid" 2>/dev/null || break
    sleep 0.1
  done
  say "sluice up did not warm its dbt worker; see $1/up.log"; exit 1
}
up_stop() { kill -TERM "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; up_pid=; }

# wait_docs DIR RUN_ID: until the dbt-runner has published the run's docs (in the background,
# after completed), so their work never overlaps the next measurement
wait_docs() {
  for _ in $(seq 1 3000); do
    grep '"msg":"dbt docs published"' "$1/up.log" | grep -q "\"run_id\":\"$2\"" && return 0
    grep '"msg":"dbt docs not published"' "$1/up.log" | grep -q "\"run_id\":\"$2\"" && { say "docs of $2 not published; see $1/up.log"; return 0; }
    sleep 0.1
  done
  say "no docs for run $2 after 5 minutes; see $1/up.log"
}

run_id_of() { awk '/^  run id /{print $3; exit}' "$1"; }

# warmup DIR SIZE: one untimed run of a date far from the measured ones through the `sluice up`
# (WARMUP=1), and its docs: a service that is up has done runs before (the first build of a fresh
# dbt worker is slower), and a docs version that is already published is only copied.
warmup() {
  [ "$WARMUP" = 1 ] || return 0
  local wds
  wds=$(date -u -d "$ds + 60 day" +%F)
  say "warm-up run of $wds ($2 rows) on that sluice up"
  "$bin/sluice" run --config "$1/sluice.yaml" --pipeline orders --date "$wds" -v >"$1/warmup.log" 2>&1 ||
    { say "the warm-up run failed; see $1/warmup.log $1/up.log"; exit 1; }
  wait_docs "$1" "$(run_id_of "$1/warmup.log")"
  # Its rows go, so the measured run finds the target as the baseline does (empty, or the history).
  psql -qX -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "DROP TABLE IF EXISTS public.orders_p${wds//-/};
    DELETE FROM public.staging_orders WHERE load_date = '$wds'; ANALYZE public.orders" >/dev/null
}

sluice_run() { # sluice_run SIZE HIST REP [cold]
  local n=$1 hist=$2 rep=$3 mode=${4:-warm} name="s_${1}_${2}_${3}${4:+_$4}"
  local dir=$runs/$name
  mkdir -p "$dir"
  newdb "$name" "$hist"
  sluice_config "$dir" "$n" e2e
  export DATABASE_URL=$(dburl "$name") SLUICE_S3_ENDPOINT=$SLUICE_TEST_S3_ENDPOINT
  local also=()
  if [ "$mode" = warm ]; then
    up_start "$dir"
    also=(--also-pid "$up_pid")
    warmup "$dir" "$n"
  fi
  say "sluice run ($mode): $n rows, history $hist, repetition $rep"
  "$here/timed.py" --name "sluice_${mode/warm/run}" --size "$n" --hist "$hist" --rep "$rep" --pg-pid "$pg_pid" "${also[@]}" \
    --log "$dir/run.log" -- "$bin/sluice" run --config "$dir/sluice.yaml" --pipeline orders --date "$ds" -v >>"$results"
  if [ "$mode" = warm ]; then
    wait_docs "$dir" "$(run_id_of "$dir/run.log")"
    up_stop
  fi
  # The run must have loaded the very file the baseline loads, all of it, or its time is not
  # comparable: the summary's sha256 against the file's, the rows in the target against the
  # file's distinct order_ids.
  local got want sha
  sha=$(sha256sum "$work/orders-$n.csv" | cut -d' ' -f1)
  grep -q "sha256 $sha" "$dir/run.log" || { say "the run did not land $work/orders-$n.csv (sha256 $sha); see $dir/run.log"; exit 1; }
  got=$(psql -X -tA "$(dburl "$name")" -c "SELECT count(*) FROM public.orders WHERE load_date = '$ds'")
  want=$(tail -n +2 "$work/orders-$n.csv" | cut -d, -f1 | sort -u | wc -l)
  [ "$got" = "$want" ] || { say "orders in $ds: $got, want $want; see $dir/run.log"; exit 1; }
  asql "DROP DATABASE $name WITH (FORCE)"
}

backfill() { # backfill REP warm|cold: BACKFILL_DAYS dates of BACKFILL_SIZE rows through one `sluice backfill`
  local n=$BACKFILL_SIZE rep=$1 mode=$2 name="bf_${2}_${1}"
  local dir=$runs/$name from to
  mkdir -p "$dir"
  newdb "$name" 0
  sluice_config "$dir" "$n" e2e
  export DATABASE_URL=$(dburl "$name") SLUICE_S3_ENDPOINT=$SLUICE_TEST_S3_ENDPOINT
  from=$(date -u -d "$ds - $((BACKFILL_DAYS - 1)) day" +%F) to=$ds
  local also=()
  if [ "$mode" = warm ]; then
    up_start "$dir"
    also=(--also-pid "$up_pid")
    warmup "$dir" "$n"
  fi
  say "sluice backfill ($mode): $BACKFILL_DAYS dates of $n rows, $from to $to, repetition $rep"
  "$here/timed.py" --name "backfill_$mode" --size "$n" --hist 0 --rep "$rep" --pg-pid "$pg_pid" "${also[@]}" \
    --log "$dir/run.log" -- "$bin/sluice" backfill --config "$dir/sluice.yaml" --pipeline orders --from "$from" --to "$to" -v >>"$results"
  [ "$mode" = warm ] && up_stop
  local got
  got=$(psql -X -tA "$(dburl "$name")" -c "SELECT count(DISTINCT load_date) FROM public.orders WHERE load_date BETWEEN '$from' AND '$to'")
  [ "$got" = "$BACKFILL_DAYS" ] || { say "backfill loaded $got dates, want $BACKFILL_DAYS; see $dir/run.log"; exit 1; }
  asql "DROP DATABASE $name WITH (FORCE)"
}

baseline() { # baseline SIZE HIST REP [idx]
  # idx: the same MERGE with hash and merge joins off, so it looks the keys up through the key
  # index instead of reading the whole history (the plan PostgreSQL picks by itself on a big history)
  local n=$1 hist=$2 rep=$3 variant=${4:-} name="b_${1}_${2}_${3}${4:+_$4}"
  local pre=""
  [ "$variant" = idx ] && pre="SET enable_hashjoin = off; SET enable_mergejoin = off; "
  newdb "$name" "$hist"
  local db
  db=$(dburl "$name")
  if [ "$hist" -eq 0 ]; then sql "$name" "$target_ddl"; fi
  sql "$name" "$(part_ddl "$ds")"
  sql "$name" "CREATE TABLE public.bl_staging (order_id bigint, customer_id integer, amount numeric,
    updated_at timestamptz, load_date date NOT NULL DEFAULT '$ds')"
  say "psql \\copy, then MERGE: $n rows, history $hist, repetition $rep"
  "$here/timed.py" --name "copy${variant:+_$variant}" --size "$n" --hist "$hist" --rep "$rep" --pg-pid "$pg_pid" \
    --log "$runs/$name.copy.log" -- psql -X -v ON_ERROR_STOP=1 "$db" \
    -c "\\copy public.bl_staging(order_id,customer_id,amount,updated_at) FROM '$work/orders-$n.csv' CSV HEADER" \
    -c 'ANALYZE public.bl_staging' >>"$results"
  # the plan the MERGE gets (not timed; kept beside the results)
  psql -X -v ON_ERROR_STOP=1 "$db" -c "${pre}EXPLAIN $merge_sql" >"$runs/$name.plan.txt"
  "$here/timed.py" --name "merge${variant:+_$variant}" --size "$n" --hist "$hist" --rep "$rep" --pg-pid "$pg_pid" \
    --log "$runs/$name.log" -- psql -X -v ON_ERROR_STOP=1 "$db" -c "${pre}$merge_sql" >>"$results"
  say "  $(tail -1 "$runs/$name.log")"
  asql "DROP DATABASE $name WITH (FORCE)"
}

for rep in $(seq 1 "$REPS"); do
  # the floor of every dbt process the dbt-runner starts (two per run): the interpreter and dbt's import
  "$here/timed.py" --name dbt_import --size 0 --rep "$rep" --log "$runs/dbt-import-$rep.log" -- \
    "$root/.venv/bin/python" -c 'import dbt.cli.main' >>"$results"
  for n in $SIZES; do
    sluice_run "$n" 0 "$rep"
    baseline "$n" 0 "$rep"
  done
  for n in $COLD_SIZES; do
    sluice_run "$n" 0 "$rep" cold
  done
  if [ "$BACKFILL_DAYS" -gt 0 ] && [ "$rep" -le "$BACKFILL_REPS" ]; then
    backfill "$rep" warm
    backfill "$rep" cold
  fi
  for n in $HIST_SIZES; do
    sluice_run "$n" "$HIST_ROWS" "$rep"
    baseline "$n" "$HIST_ROWS" "$rep"
    baseline "$n" "$HIST_ROWS" "$rep" idx
  done
done

rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- pkg services cmd dbt_project 2>/dev/null)" ]; then rev="$rev with uncommitted changes"; fi
python3 "$here/report.py" --results "$results" --out "${RESULTS-$root/bench/RESULTS.md}" --rev "$rev" \
  --pg-version "$(psql -X -tA "$admin" -c 'SHOW server_version')" \
  --dbt-version "$("$root/.venv/bin/dbt" --version 2>/dev/null | awk '/installed:/{print $NF; exit}')"
say "raw results: $results; each run's output: $runs/*/run.log"
