#!/usr/bin/env bash
# Data-path benchmark (bench/RESULTS.md, section "Data path"). In one run, against one throwaway
# PostgreSQL and versitygw (scripts/with-infra.sh), on one generated orders file, it times:
#   - psql \copy of the file into the staging table (the baseline),
#   - the validator's COPY stage (validator.Handle on the object already in S3),
#   - fetch + land + validate + load (fetcher.Handle from a local HTTP source, then validator.Handle),
#   - the seed's load (pandas.read_csv + DataFrame.to_sql, in bench/.venv),
# and takes the fetcher's and the validator's peak RSS on that file and on a 10x larger one, each
# stage in a process of its own. Timed runs are interleaved, REPS times; each records the CPU
# time of the client and of both servers too. Not part of make test.
#   bench/datapath/run.sh        (or: make bench-datapath)
# Knobs: REPS (3: timed repetitions), RSS_REPS (5: fetcher runs per file), BIG_REPS (2: validator
#        runs of the big file), SEED_ROW_BY_ROW (1: also time the seed with one INSERT per row), ROWS (1000000), BIG_ROWS (10000000), BENCH_DIR (.sluice/bench/datapath),
#        RESULTS (bench/RESULTS.md; set it empty to only print the section), VARIANT (a
#        benchdatapath binary built from a patched tree: its validate joins every repetition).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/bench/datapath
work=${BENCH_DIR:-$root/.sluice/bench/datapath}
bin=$work/bin
reps=${REPS:-3}
rss_reps=${RSS_REPS:-5}
big_reps=${BIG_REPS:-2}
rows=${ROWS:-1000000}
big_rows=${BIG_ROWS:-10000000}
small_ds=2024-03-01
big_ds=2024-03-02
venv=$root/bench/.venv

label() { if (($1 % 1000000 == 0)); then echo "$(($1 / 1000000))M"; else echo "$1"; fi; }
small=$(label "$rows")
big=$(label "$big_rows")
say() { echo "bench-datapath: $*" >&2; }

if [ "${1:-}" != --measure ]; then
  # Setup, outside the servers' lifetime: the seed's virtualenv, the binaries, the files.
  want=$(cat "$here/requirements.txt")
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.txt" 2>/dev/null)" != "$want" ]; then
    say "installing the seed's pandas stack into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    echo '*' >"$venv/.gitignore" # as venv does itself from Python 3.13: never commit the venv
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" >"$venv/.requirements.txt"
  fi
  mkdir -p "$bin" "$work/data"
  say "building"
  (cd "$root/cmd/sluice" && go build -o "$bin/sluice" .) && (cd "$here" && GOWORK=off go build -o "$bin/benchdatapath" .)
  rm -f "$work"/data/*.csv
  say "generating $small rows ($small_ds.csv) and $big rows ($big_ds.csv)"
  "$bin/benchdatapath" gen -rows "$rows" -out "$work/data/$small_ds.csv"
  "$bin/benchdatapath" gen -rows "$big_rows" -out "$work/data/$big_ds.csv"
  rm -rf "$work/infra" "$work/results.jsonl"
  exec "$root/scripts/with-infra.sh" "$work/infra" "$0" --measure
fi

# From here on scripts/with-infra.sh has started PostgreSQL and versitygw and exported their
# addresses; it stops them when this script ends.
B=$bin/benchdatapath
results=$work/results.jsonl
# scripts/pg.sh may keep its cluster outside $work/infra, so the database can outlive a run.
psql -qX "$SLUICE_TEST_DATABASE_URL" -c 'DROP DATABASE IF EXISTS bench WITH (FORCE)' -c 'CREATE DATABASE bench'
db=${SLUICE_TEST_DATABASE_URL/\/postgres\?//bench?}
sql() { psql -q -X -v ON_ERROR_STOP=1 "$db" -c "$1" >/dev/null; }
# Every load starts from an empty staging table and a fresh checkpoint, so runs compare alike.
reset() { sql 'TRUNCATE public.staging_orders'; sql 'CHECKPOINT'; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/sluice" sample-source -addr "127.0.0.1:$port" -dir "$work/data" >"$work/source.log" 2>&1 &
source_pid=$!
trap 'kill "$source_pid" 2>/dev/null || true' EXIT
src=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -fs -o /dev/null "$src/healthz" && break; sleep 0.1; done
curl -fs -o /dev/null "$src/healthz" || { cat "$work/source.log" >&2; exit 1; }

"$B" prepare -db "$db"
# The baseline loads the same table; the validator sets load_date and run_id itself.
sql "ALTER TABLE public.staging_orders ALTER load_date SET DEFAULT DATE '$small_ds', ALTER run_id SET DEFAULT 'psql-baseline'"

file=$work/data/$small_ds.csv
# The harness samples the servers' CPU from their pid files (see bench/datapath/cpu.go).
BENCH_PG_PIDFILE=$(psql -X -tA "$db" -c 'SHOW data_directory')/postmaster.pid
export BENCH_PG_PIDFILE BENCH_S3_PIDFILE=$work/infra/s3/pid
copy_sql="\\copy public.staging_orders(order_id,customer_id,amount,updated_at) FROM '$file' CSV HEADER"
say "landing $small once"
"$B" fetch -url "$src/data/$small_ds.csv" -ds "$small_ds" -landed "$work/landed-small.json" -size "$small" >>"$results"

for rep in $(seq 1 "$reps"); do
  say "repetition $rep/$reps: psql \\copy"
  reset
  "$B" exec -name psql_copy -size "$small" -rep "$rep" -file "$file" -- psql -X -v ON_ERROR_STOP=1 "$db" -c "$copy_sql" >>"$results"

  say "repetition $rep/$reps: validator COPY stage"
  reset
  "$B" validate -db "$db" -landed "$work/landed-small.json" -size "$small" -rep "$rep" >>"$results"
  if [ -n "${VARIANT:-}" ]; then
    say "repetition $rep/$reps: validator COPY stage, variant $VARIANT"
    reset
    "$VARIANT" validate -db "$db" -landed "$work/landed-small.json" -size "$small" -rep "$rep" |
      sed 's/"name":"validate"/"name":"validate_variant"/' >>"$results"
  fi

  say "repetition $rep/$reps: fetch + land + validate + load"
  reset
  "$B" e2e -db "$db" -url "$src/data/$small_ds.csv" -ds "$small_ds" -size "$small" -rep "$rep" >>"$results"
done

# A fetcher's peak RSS swings by several MiB from run to run at either file size (GC timing
# against the upload parts' buffers), about as much as the flatness goal allows: the report
# compares the highest peak of several runs at each size.
for rep in $(seq 1 "$rss_reps"); do
  say "fetcher alone, $rep/$rss_reps (peak RSS at $small and $big)"
  "$B" fetch -url "$src/data/$small_ds.csv" -ds "$small_ds" -landed "$work/landed-rss.json" -size "$small" -rep "$rep" >>"$results"
  "$B" fetch -url "$src/data/$big_ds.csv" -ds "$big_ds" -landed "$work/landed-big.json" -size "$big" -rep "$rep" >>"$results"
done

say "seed: pandas.read_csv + DataFrame.to_sql (slow by design)"
reset
"$B" exec -name seed_pandas -size "$small" -rep 1 -file "$file" -- \
  "$venv/bin/python" "$here/seed_load.py" --db "$db" --csv "$file" --size "$small" --rep 1 >>"$results"
sql 'DROP TABLE seed_staging_orders'
if [ "${SEED_ROW_BY_ROW:-1}" = 1 ]; then
  say "seed with one INSERT per row, as on SQLAlchemy < 1.4 (context only; SEED_ROW_BY_ROW=0 skips it)"
  reset
  "$B" exec -name seed_pandas_rows -size "$small" -rep 1 -file "$file" -- \
    "$venv/bin/python" "$here/seed_load.py" --row-by-row --db "$db" --csv "$file" --size "$small" --rep 1 >>"$results"
  sql 'DROP TABLE seed_staging_orders'
fi

for rep in $(seq 1 "$big_reps"); do
  say "$big rows: validator, $rep/$big_reps (peak RSS)"
  reset
  "$B" validate -db "$db" -landed "$work/landed-big.json" -size "$big" -rep "$rep" >>"$results"
done

say "CPU profiles of the $small stages (not timed)"
reset
"$B" validate -db "$db" -landed "$work/landed-small.json" -cpuprofile "$work/validate.pprof" >/dev/null
"$B" fetch -db "$db" -url "$src/data/$small_ds.csv" -ds "$small_ds" -landed "$work/landed-profile.json" \
  -cpuprofile "$work/fetch.pprof" >/dev/null
for s in validate fetch; do
  go tool pprof -top -nodecount=40 "$B" "$work/$s.pprof" >"$work/$s.top.txt" 2>/dev/null
  go tool pprof -top -cum -nodecount=40 "$B" "$work/$s.pprof" >"$work/$s.cum.txt" 2>/dev/null
done

rev=${BENCH_REV:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -n "$(git -C "$root" status --porcelain -- pkg services cmd 2>/dev/null)" ]; then rev="$rev with uncommitted changes"; fi
versions=$("$venv/bin/python" -c 'import pandas, sqlalchemy, psycopg2; print(f"pandas {pandas.__version__}, SQLAlchemy {sqlalchemy.__version__}, psycopg2 {psycopg2.__version__.split()[0]}")')
"$B" report -results "$results" -out "${RESULTS-$root/bench/RESULTS.md}" -small "$small" -big "$big" \
  -pg-version "$(psql -X -tA "$db" -c 'SHOW server_version')" -seed-versions "$versions" -rev "$rev"
say "raw results: $results; profiles: $work/{validate,fetch}.{top,cum}.txt"
