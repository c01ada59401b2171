#!/usr/bin/env bash
# Starts or stops a throwaway PostgreSQL 15 cluster from the machine's initdb/pg_ctl.
#   scripts/pg.sh start DIR           -> prints the database URL (also written to DIR/url)
#   scripts/pg.sh stop DIR [--clean]  -> --clean also removes the cluster
#   scripts/pg.sh remove DIR          -> stops it and deletes DIR (make clean, with-infra.sh)
# The cluster listens on 127.0.0.1 on a free port; trust auth, so no password exists to leak.
# Everything it keeps is inside DIR (data in DIR/data, socket and log in DIR/run), so deleting
# DIR deletes the database: nothing is left elsewhere to come back on the next start.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data dir}; clean=${3:-}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
bindir=$(dirname "$(readlink -f "$(command -v pg_ctl || echo /usr/lib/postgresql/15/bin/pg_ctl)")")
root=0; [ "$(id -u)" = 0 ] && root=1
as_pg() {
  # initdb refuses to run as root: run the cluster as the postgres user then.
  if [ $root = 1 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
# Earlier versions kept a root's cluster under /tmp; stop and (with --clean) remove it too.
legacy=/tmp/sluice-pg-$(printf '%s' "$dir" | md5sum | cut -c1-12)
stop_legacy() {
  if [ $root = 1 ] && [ -f "$legacy/data/PG_VERSION" ]; then
    as_pg "$bindir/pg_ctl" -D "$legacy/data" -m fast -w stop >/dev/null 2>&1 || true
    [ "$clean" = --clean ] && rm -rf "$legacy"
  fi
  return 0
}
# As root the server runs as postgres, which must be able to reach DIR: a checkout under a
# private 0700 directory (/root) lets nobody else through. Grant search (x, not read) on each
# directory above DIR that lacks it, and give postgres DIR/data and DIR/run.
prepare() {
  mkdir -p "$dir/data" "$dir/run"
  if [ $root = 1 ]; then
    local d=$dir
    while [ "$d" != / ]; do
      d=$(dirname "$d")
      [ "$(stat -c %A "$d" | cut -c10)" = x ] || [ "$(stat -c %A "$d" | cut -c10)" = t ] || chmod o+x "$d"
    done
    chmod o+x "$dir"
    chown postgres "$dir/data" "$dir/run"
  fi
  chmod 700 "$dir/data"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
case "$cmd" in
start)
  if [ -f "$dir/url" ] && as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then cat "$dir/url"; exit 0; fi
  stop_legacy
  prepare
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  port=$(free_port)
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/run/server.log" -w -t 60 \
    -o "-p $port -k $dir/run -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
    || { cat "$dir/run/server.log" >&2; exit 1; }
  url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  echo "$url" > "$dir/url"; echo "$url"
  ;;
stop)
  [ -f "$dir/data/PG_VERSION" ] && as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  stop_legacy
  rm -f "$dir/url"
  [ "$clean" = --clean ] && rm -rf "$dir/data" "$dir/run" "$dir/initdb.log"
  exit 0
  ;;
remove)
  [ -f "$dir/data/PG_VERSION" ] && as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  clean=--clean stop_legacy
  rm -rf "$dir"
  ;;
*) echo "usage: $0 start DIR | stop DIR [--clean] | remove DIR" >&2; exit 2;;
esac
