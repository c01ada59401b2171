#!/usr/bin/env bash
# sluice against Airflow on the same job (bench/RESULTS.md, section "sluice vs Airflow"). Both
# systems are up side by side for the whole run, on one throwaway PostgreSQL (a target database
# each) and one versitygw (a bucket each), each reading the same files from a sample source of its
# own: `sluice up`, and Apache Airflow 3 (api-server, scheduler with the LocalExecutor,
# dag-processor, triggerer; metadata in a PostgreSQL server of its own) running the seed's DAG
# (bench/airflow/dags) on the same dbt project. Dates run interleaved, one system after the other:
#   a warm-up date (not measured), GATED dates whose file appears only once the system's sensor
#   waits for it (file available -> rows visible), SMALL dates whose files are there when the run
#   is requested (a backfill's case), and BIG_ROWS rows on one gated date.
#   bench/airflow/run.sh          (or: make bench-airflow)
# Knobs: SMALL (30 dates), GATED (10 dates), ROWS (1000 per small date), BIG_ROWS (999999; 0: no
#        big date), POKE (1: the sensors' poke interval in seconds, the same for both), IDLE (20:
#        seconds of the idle window), BENCH_DIR (.sluice/bench/airflow), AIRFLOW_VENV
#        (.sluice/airflow/venv), RESULTS (bench/RESULTS.md; empty: only print the section),
#        BENCH_NETNS (auto: a network namespace with only loopback when possible).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/airflow
work=${BENCH_DIR:-$root/.sluice/bench/airflow}
bin=$work/bin
bench_name=bench-airflow
venv=${AIRFLOW_VENV:-$root/.sluice/airflow/venv}
export SMALL=${SMALL:-30} GATED=${GATED:-10} ROWS=${ROWS:-1000} BIG_ROWS=${BIG_ROWS-999999} POKE=${POKE:-1} IDLE=${IDLE:-20}
first=2026-10-01 # the first date; warm-up, gated, small and big dates follow each other from here

. "$root/bench/lib.sh"
if [ "${1:-}" != --measure ]; then
  # Airflow and its providers into a virtualenv of their own (pinned in requirements.txt).
  want=$(cat "$here/requirements.txt")
  if [ ! -x "$venv/bin/airflow" ] || [ "$(cat "$venv/.requirements.txt" 2>/dev/null)" != "$want" ]; then
    say "installing Apache Airflow into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    echo '*' >"$venv/.gitignore"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" >"$venv/.requirements.txt"
  fi
  rm -rf "$work/runs" "$work/results.jsonl" "$work/airflow-home" "$work/served-"* "$work/files"
  bench_setup
fi

# From here on scripts/with-infra.sh has started PostgreSQL and versitygw and exported their
# addresses; it stops them when this script ends.
bench_infra
results=$work/results.jsonl
mkdir -p "$work/files" "$work/served-sluice" "$work/served-airflow" "$work/runs"
day() { date -u -d "$first + $1 day" +%F; }
warmup=$(day 0)
# in the order they run (a date's file updates the previous date's orders): gated, small, big
gated=""; for i in $(seq 1 "$GATED"); do gated+=" $(day "$i")"; done
small=""; for i in $(seq $((GATED + 1)) $((GATED + SMALL))); do small+=" $(day "$i")"; done
big=""; [ "$BIG_ROWS" -gt 0 ] && big=$(day $((SMALL + GATED + 1)))

# The files: the sample source's orders, generated once; each system's source serves a directory
# into which the harness links a date's file when that date is to be available.
bench_source gen --rows "$ROWS"
for d in $warmup $small $gated; do curl -fsS -o "$work/files/$d.csv" "$source_url/data/$d.csv"; done
if [ -n "$big" ]; then
  bench_source gen-big --rows "$BIG_ROWS"
  curl -fsS -o "$work/files/$big.csv" "$source_url/data/$big.csv"
fi
bench_source sluice --dir "$work/served-sluice"; src_sluice=$source_url
bench_source airflow --dir "$work/served-airflow"; src_airflow=$source_url
say "files: $(ls "$work/files" | wc -l) dates in $work/files; sources: sluice $src_sluice, Airflow $src_airflow"

asql 'CREATE DATABASE sluice_target'
asql 'CREATE DATABASE airflow_target'
pg_port=$(sed -E 's|.*@127\.0\.0\.1:([0-9]+)/.*|\1|' <<<"$admin")

# --- sluice: `sluice up` with the orders pipeline, as bench/e2e configures it ---
sdir=$work/sluice
rm -rf "$sdir"; mkdir -p "$sdir"
cat >"$sdir/sluice.yaml" <<YAML
nats:
  listen: 127.0.0.1:$(free_port)
  data_dir: $sdir/nats
  subject_prefix: etl
postgres:
  url: env:DATABASE_URL
s3:
  endpoint: env:SLUICE_S3_ENDPOINT
  bucket: bench-sluice
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
      url: $src_sluice/data/{ds}.csv
      method: HEAD
    sensor:
      poke_interval: ${POKE}s
      timeout: 1h
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
export DATABASE_URL=$(dburl sluice_target) SLUICE_S3_ENDPOINT=$SLUICE_TEST_S3_ENDPOINT
sluice_http=127.0.0.1:$(free_port)
setsid "$here/reaper.py" "$bin/sluice" up --config "$sdir/sluice.yaml" --http "$sluice_http" --console off -v \
  >"$sdir/up.log" 2>&1 &
sluice_root=$!
pids+=("$sluice_root")

# --- Airflow: its own metadata server, the config in bench/airflow/airflow.cfg, the rest here ---
meta_dir=$work/infra/meta-pg
meta_url=$("$root/scripts/pg.sh" start "$meta_dir")
# At the end: each system's subreaper stops its processes (SIGTERM), then what is left of its
# process group is killed; then the metadata server is removed.
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 60); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.5
  done
  for p in "$sluice_root" "${airflow_root:-}"; do [ -n "$p" ] && kill -KILL -- "-$p" 2>/dev/null || true; done
  "$root/scripts/pg.sh" remove "$meta_dir" >/dev/null 2>&1 || true
}
trap stop_all EXIT
meta_pid=$(head -1 "$meta_dir/data/postmaster.pid")
PGOPTIONS='-c client_min_messages=warning' psql -qX -v ON_ERROR_STOP=1 "$meta_url" -c 'CREATE DATABASE airflow' >/dev/null
meta_db=${meta_url/\/postgres\?//airflow?}
api_port=$(free_port)
export AIRFLOW_HOME=$work/airflow-home AIRFLOW_CONFIG=$here/airflow.cfg
export AIRFLOW__CORE__DAGS_FOLDER=$here/dags
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://${meta_db#postgres://}
export AIRFLOW__API__PORT=$api_port AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$api_port/execution/
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$(free_port) AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$(free_port)
AIRFLOW__API_AUTH__JWT_SECRET=$(head -c 32 /dev/urandom | base64) AIRFLOW__API__SECRET_KEY=$(head -c 32 /dev/urandom | base64)
export AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY
export AIRFLOW_CONN_SOURCE_API="{\"conn_type\": \"http\", \"host\": \"$src_airflow\"}"
export AIRFLOW_CONN_AWS_DEFAULT="{\"conn_type\": \"aws\", \"login\": \"$SLUICE_S3_ACCESS_KEY\", \"password\": \"$SLUICE_S3_SECRET_KEY\",
  \"extra\": {\"endpoint_url\": \"$SLUICE_TEST_S3_ENDPOINT\", \"region_name\": \"us-east-1\", \"config_kwargs\": {\"s3\": {\"addressing_style\": \"path\"}}}}"
export AIRFLOW_CONN_POSTGRES_DEFAULT="{\"conn_type\": \"postgres\", \"host\": \"127.0.0.1\", \"port\": $pg_port, \"login\": \"postgres\", \"schema\": \"airflow_target\"}"
export BENCH_AIRFLOW_BUCKET=bench-airflow BENCH_DBT_PROJECT=$root/dbt_project BENCH_DBT=$root/.venv/bin/dbt
export BENCH_DBT_PROFILES=$here/dbt BENCH_DBT_TARGET=$work/airflow-dbt BENCH_SENSOR_POKE=$POKE
export DB_HOST=127.0.0.1 DB_PORT=$pg_port DB_USER=postgres DB_PASS= DB_NAME=airflow_target
export DBT_SEND_ANONYMOUS_USAGE_STATS=false
# The seed's setup SQL, its bug fixed (no PRIMARY KEY on order_id alone: illegal on a table
# partitioned by load_date; the key index instead, as sluice's partitioner makes it), the staging
# table its load appends to, and the fence table the shared dbt project checks.
sql airflow_target "$target_ddl;
  CREATE TABLE public.staging_orders (order_id bigint, customer_id integer, amount numeric, updated_at timestamptz, load_date date NOT NULL);
  CREATE INDEX staging_orders_load_date_idx ON public.staging_orders (load_date);
  CREATE TABLE public.sluice_fences (pipeline text PRIMARY KEY, token bigint NOT NULL, run_id text NOT NULL, updated timestamptz NOT NULL DEFAULT now())"
"$venv/bin/python" -c "
import boto3, os
boto3.client('s3', endpoint_url=os.environ['SLUICE_TEST_S3_ENDPOINT'], region_name='us-east-1',
  aws_access_key_id=os.environ['SLUICE_S3_ACCESS_KEY'], aws_secret_access_key=os.environ['SLUICE_S3_SECRET_KEY']).create_bucket(Bucket='bench-airflow')"
mkdir -p "$AIRFLOW_HOME" "$work/airflow-dbt"
say "airflow db migrate"
"$venv/bin/airflow" db migrate >"$work/airflow-migrate.log" 2>&1 || { tail -30 "$work/airflow-migrate.log" >&2; exit 1; }
af=$venv/bin/airflow
setsid "$here/reaper.py" "$af" api-server ::: "$af" scheduler ::: "$af" dag-processor ::: "$af" triggerer \
  >"$work/airflow.log" 2>&1 &
airflow_root=$!
pids+=("$airflow_root")

say "waiting for sluice and Airflow to be ready"
for _ in $(seq 1 600); do
  dag=$(psql -X -tA "$meta_db" -c "SELECT count(*) FROM serialized_dag WHERE dag_id = 'deferrable_etl_partition_dbt'" 2>/dev/null || true)
  if [ "${dag:-0}" -ge 1 ] && curl -fs -o /dev/null "http://127.0.0.1:$api_port/api/v2/monitor/health" && curl -fs -o /dev/null "http://$sluice_http/readyz" \
    && grep -qs '"msg":"dbt worker warm"' "$sdir/up.log"; then break; fi
  kill -0 "$sluice_root" 2>/dev/null || { say "sluice up ended:"; tail -20 "$sdir/up.log" >&2; exit 1; }
  kill -0 "$airflow_root" 2>/dev/null || { say "Airflow ended:"; tail -40 "$work/airflow.log" >&2; exit 1; }
  sleep 0.5
done

s3_pid=$(cat "$work/infra/s3/pid")
"$venv/bin/python" "$here/bench.py" \
  --sluice "$bin/sluice" --sluice-config "$sdir/sluice.yaml" --sluice-log "$sdir/up.log" --sluice-db "$(dburl sluice_target)" --sluice-root "$sluice_root" \
  --airflow-api "http://127.0.0.1:$api_port" --airflow-db "$(dburl airflow_target)" --meta-db "$meta_db" \
  --airflow-root "$airflow_root" --meta-pg "$meta_pid" --pg-pid "$pg_pid" --s3-pid "$s3_pid" \
  --files "$work/files" --served-sluice "$work/served-sluice" --served-airflow "$work/served-airflow" --results "$results" \
  --warmup "$warmup" --small "$small" --gated "$gated" --big "$big" --idle "$IDLE"

rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- pkg services cmd dbt_project bench/airflow 2>/dev/null)" ]; then rev="$rev with uncommitted changes"; fi
"$venv/bin/python" "$here/report.py" --results "$results" --out "${RESULTS-$root/bench/RESULTS.md}" --rev "$rev" \
  --rows "$ROWS" --big-rows "$BIG_ROWS" --poke "$POKE" \
  --pg-version "$(psql -X -tA "$admin" -c 'SHOW server_version')" \
  --airflow-version "$("$venv/bin/python" -c 'import airflow; print(airflow.__version__)')" \
  --dbt-version "$("$root/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("dbt-core"))' 2>/dev/null || echo unknown)"
say "raw results: $results; logs: $sdir/up.log, $work/airflow.log, $AIRFLOW_HOME/logs"
