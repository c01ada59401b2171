# Shared start-up of the benchmarks that run whole pipelines (bench/e2e, bench/airflow); source it
# after setting root (the checkout), work (the benchmark's directory), bin (where sluice is built)
# and bench_name (the prefix of its messages):
#   . "$root/bench/lib.sh"
# bench_setup re-executes the calling script under scripts/with-infra.sh (a throwaway
# PostgreSQL and versitygw under $work/infra, stopped when the script ends) after building sluice
# into $bin; bench_infra then sets, inside that, what the helpers below use.

say() { echo "$bench_name: $*" >&2; }

# bench_setup [ARGS...]: outside the servers (first call of the script): prepare versitygw and
# the dbt virtualenv, build sluice, then run "$0 --measure ARGS" under scripts/with-infra.sh.
# With BENCH_NETNS=1 (the default when root and unshare are there) the whole measured part runs in
# a network namespace of its own with only loopback, so nothing in it can reach another host.
bench_setup() {
  # A .venv that is a link belongs to another checkout: prepare.sh could recreate it under its
  # users, so it is only used then.
  if [ -L "$root/.venv" ]; then "$root/scripts/prepare.sh" versitygw >&2; else "$root/scripts/prepare.sh" versitygw dbt >&2; fi
  mkdir -p "$bin"
  say "building sluice"
  (cd "$root/cmd/sluice" && go build -o "$bin/sluice" .)
  rm -rf "$work/infra"
  local netns=${BENCH_NETNS:-auto}
  if [ "$netns" = auto ]; then
    netns=0
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then netns=1; fi
  fi
  if [ "$netns" = 1 ]; then
    say "running in a network namespace of its own (loopback only)"
    exec unshare --net -- bash -c 'ip link set lo up && exec "$@"' bench \
      "$root/scripts/with-infra.sh" "$work/infra" "$0" --measure "$@"
  fi
  exec "$root/scripts/with-infra.sh" "$work/infra" "$0" --measure "$@"
}

# bench_infra: inside scripts/with-infra.sh. Defines admin (the server's admin URL), pg_pid
# (the postmaster's pid) and pids (processes to stop at exit, see bench_source).
bench_infra() {
  admin=$SLUICE_TEST_DATABASE_URL
  pg_pid=$(head -1 "$(psql -X -tA "$admin" -c 'SHOW data_directory')/postmaster.pid")
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
}

# dburl NAME: the URL of database NAME on the throwaway server.
dburl() { echo "${admin/\/postgres\?//$1?}"; }
# asql SQL: as admin in database postgres; sql DB SQL: in database DB.
asql() { PGOPTIONS='-c client_min_messages=warning' psql -qX -v ON_ERROR_STOP=1 "$admin" -c "$1" >/dev/null; }
sql() { psql -qX -v ON_ERROR_STOP=1 "$(dburl "$1")" -c "$2" >/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# bench_source NAME ARGS...: starts `sluice sample-source ARGS` on a free port (log in
# $work/source-NAME.log), waits until it answers and sets source_url to its base URL.
bench_source() {
  local name=$1 port; shift
  port=$(free_port)
  "$bin/sluice" sample-source --addr "127.0.0.1:$port" "$@" >"$work/source-$name.log" 2>&1 &
  pids+=($!)
  source_url=http://127.0.0.1:$port
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$source_url/healthz" && return 0; sleep 0.1; done
  say "the sample source $name did not start:"; cat "$work/source-$name.log" >&2
  return 1
}

# The target as the partitioner creates it (services/partitioner TargetDDL, KeyIndexDDL).
target_ddl="CREATE TABLE public.orders (order_id bigint NOT NULL, customer_id integer NOT NULL,
  amount numeric NOT NULL, updated_at timestamptz NOT NULL, load_date date NOT NULL) PARTITION BY RANGE (load_date);
  CREATE INDEX orders_order_id_idx ON public.orders (order_id)"
